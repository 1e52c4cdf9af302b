"""DKIM signing in child processes, so a campaign's signatures use the machine's other cores.

A signature costs a campaign message more CPU than everything else the sender does for it
when the key is RSA-2048 (one private-key operation is about 0.25 ms; the rest of a message,
SMTP included, about 0.3 ms), and more than half as much again with ed25519. In the event
loop's process that work is serial with the sending; a thread does not help (the Python half
of signing holds the GIL, and the hand-offs cost more than they save: measured, a worker
thread was slower than signing inline). So `SigningPool` runs `processes` children
(`python -m mailer.dkim_pool`), each with the key, and sends each one messages to sign over
its stdin: a request is a frame (4-byte length, 8-byte signing time, the message), the reply a
frame (4-byte length, a status byte, the DKIM-Signature header field or an error line). A
child takes requests in order, so several can wait in its pipe; replies come back in the same
order, and a reader task resolves them.

Lifecycle and failure: children start with the pool (the key travels in the first frame,
never on a command line or in the environment) and say ready once they have signed a test
message; until then, and if a child dies or answers nonsense, messages are signed in this
process instead (`Signer.header`, the same bytes), with one warning. Children ignore SIGINT
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
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import BinaryIO

from mailer.dkim import Signer, crlf_lines, make_signer
from mailer.errors import SettingsError

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


class _Child:
    """One signing process and the futures of its requests, oldest first."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.waiting: deque[asyncio.Future[bytes]] = deque()
        self.reader: asyncio.Task[None] | None = None
        self.alive = True


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
        return [c.process.pid for c in self._children if c.alive]

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
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailer.dkim_pool", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        child = _Child(process)
        signer = self.signer
        config = json.dumps({"domain": signer.domain, "selector": signer.selector,
                             "algorithm": signer.algorithm,
                             "key": signer.key_data.decode("ascii")}).encode("ascii")
        try:
            child.stdin.write(_LENGTH.pack(len(config)) + config)
            async with asyncio.timeout(_START_TIMEOUT_S):
                await child.stdin.drain()
                status, payload = await _read_reply(child.stdout)
            if status != _OK:
                raise SettingsError(payload.decode("utf-8", "replace"))
        except BaseException:
            await _end(child)
            raise
        child.reader = asyncio.create_task(self._read(child))
        self._children.append(child)

    async def sign(self, message: bytes) -> bytes:
        """`message` signed (`Signer.sign`'s bytes), by a child when one is ready."""
        message = crlf_lines(message)
        now = time.time()
        child = min((c for c in self._children if c.alive), key=lambda c: len(c.waiting),
                    default=None)
        if child is None:
            return self.signer.header(message, now=now) + message
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        child.waiting.append(reply)
        child.stdin.write(_LENGTH.pack(8 + len(message)) + _NOW.pack(int(now)) + message)
        try:
            await child.stdin.drain()
            header = await reply
        except (ConnectionError, _ChildFailed) as exc:
            # The child is gone, or this one message cannot be signed: here, it is signed
            # or fails as it would have without children.
            if not child.alive or isinstance(exc, ConnectionError):
                self._fallback(str(exc) or type(exc).__name__)
            return self.signer.header(message, now=now) + message
        self.signed_by_children += 1
        return header + message

    async def _read(self, child: _Child) -> None:
        """Resolve `child`'s requests in order as its replies come; on its end, fail the rest
        (they are signed here instead)."""
        why = "a signing process ended"
        try:
            while True:
                status, payload = await _read_reply(child.stdout)
                if not child.waiting:
                    why = "a signing process answered what was not asked"
                    break
                waiter = child.waiting.popleft()
                if waiter.done():
                    continue
                if status == _OK:
                    waiter.set_result(payload)
                else:
                    waiter.set_exception(_ChildFailed(payload.decode("utf-8", "replace")))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        child.alive = False
        while child.waiting:
            waiter = child.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(_ChildFailed(why))
        await _end(child)

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
            child.alive = False
            if child.reader is not None:
                child.reader.cancel()
                with contextlib.suppress(BaseException):
                    await child.reader
            await _end(child)
        self._children = []


class _ChildFailed(Exception):
    """A child could not sign one message, or ended with requests outstanding."""


async def _read_reply(stream: asyncio.StreamReader) -> tuple[int, bytes]:
    (length,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
    if length < 1:
        raise ValueError("empty reply")
    reply = await stream.readexactly(length)
    return reply[0], reply[1:]


async def _end(child: _Child) -> None:
    process = child.process
    with contextlib.suppress(Exception):
        child.stdin.close()
    try:
        async with asyncio.timeout(_STOP_TIMEOUT_S):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def signing(signer: Signer, processes: int | None = None
                  ) -> AsyncIterator[SigningPool]:
    """A started pool for the length of a block (`default_processes()` children unless
    told), closed after it."""
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
