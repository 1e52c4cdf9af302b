"""DKIM signing in child processes, so a campaign's signatures use the machine's other cores.

A signature costs a campaign message more CPU than everything else the sender does for it when
the key is RSA-2048 (the private-key operation about 0.25 ms, canonicalising and hashing about
0.1 ms; the rest of a message, SMTP included, about 0.3 ms), and a third as much with ed25519.
In the event loop's process that work is serial with the sending; a thread does not help (the
Python half of signing holds the GIL, and the hand-offs cost more than they save: measured, a
worker thread was slower than signing inline). So `SigningPool` runs `processes` children
(`python -m mailer.mail.dkim_pool`), each with the key, and sends each one messages to sign over its
stdin: a request is a frame (4-byte length, 8-byte signing time, the message), the reply a
frame (4-byte length, a status byte, the DKIM-Signature header field or an error line). A child
takes requests in order, so several can wait in its pipe; replies come back in the same order
and resolve the oldest waiting request as their bytes arrive (`_Child`, a subprocess protocol).

Lifecycle and failure: children start with the pool (the key travels in the first frame,
never on a command line or in the environment) and say ready once they have signed a test
message; until then, and if a child dies or answers nonsense, messages are signed in this
process instead (`Signer.sign`, the same bytes), with one warning. Children ignore SIGINT
and SIGTERM (a Ctrl-C or a service stop reaches the whole process group) and end when their
stdin closes: at `close`, or when this process dies, even by kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import BinaryIO

from mailer.errors import SettingsError
from mailer.mail.dkim import Signer, make_signer
from mailer.mail.outgoing import crlf_lines

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
_NOW = struct.Struct(">Q")
_OK, _FAILED = 0, 1
# How long a child may take to start and sign its first message, and to end at `close`.
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 5.0


def default_processes() -> int:
    """One child per core beyond the event loop's own, at most four (four SMTP connections
    keep at most four messages waiting for a signature); none on a single core."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class _Child(asyncio.SubprocessProtocol):
    """One signing process: the futures of its requests, oldest first, resolved straight from
    the bytes of its stdout as they arrive (no reader task, no stream buffers in between)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._buffer = bytearray()
        self.waiting: deque[asyncio.Future[bytes]] = deque()
        self.alive = False  # ready and not failed
        self.ended: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        self._stdin = stdin

    def request(self, frame: bytes) -> asyncio.Future[bytes]:
        """Send one frame; the future of its reply (_ChildFailed if none comes)."""
        reply: asyncio.Future[bytes] = self._loop.create_future()
        if self._stdin is None or self._stdin.is_closing():
            reply.set_exception(_ChildFailed("a signing process ended"))
            return reply
        self.waiting.append(reply)
        self._stdin.write(frame)
        return reply

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if length < 1 or not self.waiting:
                self.fail("a signing process answered what was not asked")
                return
            if len(buffer) < _LENGTH.size + length:
                return
            status, payload = buffer[_LENGTH.size], bytes(buffer[_LENGTH.size + 1:
                                                                  _LENGTH.size + length])
            del buffer[:_LENGTH.size + length]
            waiter = self.waiting.popleft()
            if waiter.done():
                continue
            if status == _OK:
                waiter.set_result(payload)
            else:
                waiter.set_exception(_ChildFailed(payload.decode("utf-8", "replace")))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.fail("a signing process ended")

    def process_exited(self) -> None:
        self.fail("a signing process ended")
        if not self.ended.done():
            self.ended.set_result(None)

    def fail(self, why: str) -> None:
        """No more requests for this child; those waiting fail (they are signed here)."""
        self.alive = False
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(_ChildFailed(why))
        if self._stdin is not None:
            self._stdin.close()  # a child that reads EOF ends

    async def end(self) -> None:
        """Close its stdin and wait for it to end; kill it if it takes too long."""
        self.fail("the signing processes were closed")
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await asyncio.shield(self.ended)
        except TimeoutError:
            if self.transport is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.transport.kill()
                await self.ended
        if self.transport is not None:
            self.transport.close()


class SigningPool:
    """Signs with `signer` in `processes` child processes (see the module's docstring)."""

    def __init__(self, signer: Signer, processes: int) -> None:
        self.signer = signer
        self._processes = processes
        self._children: list[_Child] = []
        self._starting: asyncio.Task[None] | None = None
        self._warned = False
        self.signed_by_children = 0

    @property
    def pids(self) -> list[int]:
        """The process ids of the children that are signing."""
        return [c.transport.get_pid() for c in self._children
                if c.alive and c.transport is not None]

    async def ready(self) -> int:
        """Wait for the children to have started (or failed to); how many are signing."""
        if self._starting is not None:
            await asyncio.shield(self._starting)
        return len(self.pids)

    async def start(self) -> None:
        """Start the children in the background; signing goes on in this process until they
        are ready."""
        if self._processes > 0 and self._starting is None:
            self._starting = asyncio.create_task(self._start_all())

    async def _start_all(self) -> None:
        results = await asyncio.gather(*(self._start_one() for _ in range(self._processes)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self._fallback(f"a signing process did not start: {result}")
        log.info("dkim: %s signing process(es) ready", len(self.pids))

    async def _start_one(self) -> None:
        loop = asyncio.get_running_loop()
        _, child = await loop.subprocess_exec(
            lambda: _Child(loop), sys.executable, "-m", "mailer.mail.dkim_pool",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        self._children.append(child)
        signer = self.signer
        config = json.dumps({"domain": signer.domain, "selector": signer.selector,
                             "algorithm": signer.algorithm,
                             "key": signer.key_data.decode("ascii")}).encode("ascii")
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                await child.request(_LENGTH.pack(len(config)) + config)
        except BaseException:
            await child.end()
            raise
        child.alive = True

    async def sign(self, message: bytes) -> bytes:
        """`message` signed (`Signer.sign`'s bytes), by a child when one is ready."""
        now = time.time()
        child = min((c for c in self._children if c.alive), key=lambda c: len(c.waiting),
                    default=None)
        if child is None:
            return self.signer.sign(message, now=now)
        message = crlf_lines(message)
        try:
            header = await child.request(
                _LENGTH.pack(_NOW.size + len(message)) + _NOW.pack(int(now)) + message)
        except _ChildFailed as exc:
            # The child is gone, or this one message cannot be signed: here, it is signed
            # or fails as it would have without children.
            if not child.alive:
                self._fallback(str(exc))
            return self.signer.sign(message, now=now)
        self.signed_by_children += 1
        return header + message

    def _fallback(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("dkim: %s; signing in the sending process instead", why)

    async def close(self) -> None:
        """End the children (their stdin closed, then killed if slow); never raises."""
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        for child in self._children:
            with contextlib.suppress(Exception):
                await child.end()
        self._children = []


class _ChildFailed(Exception):
    """A child could not sign one message, or ended with requests outstanding."""


@contextlib.asynccontextmanager
async def signing(signer: Signer | None, processes: int | None = None
                  ) -> AsyncIterator[SigningPool | None]:
    """A started pool for the length of a block (`default_processes()` children unless
    told), closed after it; None when there is no signer (DKIM is off)."""
    if signer is None:
        yield None
        return
    pool = SigningPool(signer, default_processes() if processes is None else processes)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


# --- the child ---------------------------------------------------------------------------


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    return body if len(body) == length else None


def _write_reply(stream: BinaryIO, status: int, payload: bytes) -> None:
    stream.write(_LENGTH.pack(1 + len(payload)) + bytes((status,)) + payload)
    stream.flush()


def child_main() -> int:
    """Sign what comes in on stdin until it closes (see the module's docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    frame = _read_frame(stdin)
    if frame is None:
        return 1
    try:
        config = json.loads(frame)
        signer = make_signer(config["domain"], config["selector"], config["algorithm"],
                             config["key"].encode("ascii"), "dkim signing process")
    except (SettingsError, ValueError, KeyError) as exc:
        _write_reply(stdout, _FAILED, str(exc).encode("utf-8"))
        return 1
    _write_reply(stdout, _OK, b"ready")
    while (frame := _read_frame(stdin)) is not None:
        (now,) = _NOW.unpack(frame[:_NOW.size])
        try:
            header = signer.header(frame[_NOW.size:], now=now)
        except Exception as exc:  # noqa: BLE001 - one message's failure, told to the parent
            _write_reply(stdout, _FAILED, f"{type(exc).__name__}: {exc}".encode())
            continue
        _write_reply(stdout, _OK, header)
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
