"""A TCP proxy on loopback that can stop forwarding without closing: a stuck connection.

`freeze()` stops every connection open at that moment in both directions (the sockets stay
open, nothing more arrives: a server or a middlebox that hangs); connections made afterwards
forward normally. It runs its own event loop in a thread, so a test's blocking calls never
stall it.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from tests.servers import HOST, free_port


class FreezingProxy:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
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
            asyncio.start_server(self._accept, HOST, self.port), self._loop).result(10)
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
