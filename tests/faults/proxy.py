"""TCP proxies on loopback that put a fault between mailer and a real server.

`FreezingProxy.freeze()` stops every connection open at that moment in both directions (the
sockets stay open, nothing more arrives: a server or a middlebox that hangs); connections made
afterwards forward normally.

`OutageProxy` in front of an SMTP server: `down()` takes the server away (every new connection
is reset before any greeting, each counted as an attempt with its time; an open connection is
cut when its client starts the next transaction, so no message is left half-acknowledged) and
`up()` brings it back on the same port.

Each runs its own event loop in a thread, so a test's blocking calls never stall it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from types import TracebackType

from tests.servers import HOST


class FreezingProxy:
    def __init__(self, target_port: int) -> None:
        self.port = 0  # the kernel's choice, known once entered
        self.target_port = target_port
        self.connections = 0
        self._frozen_below = 0  # connections numbered below this are stuck
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def __enter__(self) -> FreezingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, HOST, 0), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in self._writers:
                writer.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def freeze(self) -> None:
        """Every connection open now stops forwarding, and stays open."""
        self._frozen_below = self.connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(number, reader, up_writer),
                             self._pump(number, up_reader, writer), return_exceptions=True)

    async def _pump(self, number: int, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if number < self._frozen_below:
                await asyncio.Event().wait()  # stuck for good; closed with the proxy
            writer.write(data)
            await writer.drain()
        writer.close()


# Client commands that begin a new SMTP exchange (RFC 5321 §4.1.1) rather than continue the
# transaction in hand: where an outage may cut a connection without losing a reply.
_NEW_EXCHANGE = (b"MAIL", b"RSET", b"NOOP", b"QUIT", b"EHLO", b"HELO", b"HELP", b"VRFY")


class OutageProxy:
    """In front of an SMTP server: `down()`, `up()`, and every connection attempt counted."""

    def __init__(self, target_port: int) -> None:
        self.port = 0  # the kernel's choice, known once entered
        self.target_port = target_port
        self.attempts: list[tuple[float, bool]] = []  # (time.monotonic(), server was up)
        self.is_down = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> OutageProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, HOST, 0), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._open):
                writer.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def down(self) -> None:
        self.is_down = True

    def up(self) -> None:
        self.is_down = False

    def attempts_while_down(self) -> int:
        return sum(1 for _, was_up in self.attempts if not was_up)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append((time.monotonic(), not self.is_down))
        if self.is_down:
            _reset(writer)
            return
        up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        self._open.update((writer, up_writer))
        await asyncio.gather(self._client_to_server(reader, up_writer, writer),
                             _pump(up_reader, writer), return_exceptions=True)
        self._open.difference_update((writer, up_writer))

    async def _client_to_server(self, reader: asyncio.StreamReader,
                                up_writer: asyncio.StreamWriter,
                                writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.is_down and data[:4].upper() in _NEW_EXCHANGE:
                _reset(writer)
                up_writer.close()
                return
            up_writer.write(data)
            await up_writer.drain()
        up_writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): the client's connection fails at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
