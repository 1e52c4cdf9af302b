"""The console's memory under oversized requests: `mailer console` as a real process, its peak
resident size read from /proc (VmHWM) before and after parallel 60 MB POSTs from anonymous
clients, which must be refused with 413 without the console holding their bodies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.console.world import console_process

BODY_BYTES = 60 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)
PARALLEL = 4
# Python, aiohttp and Jinja2 are some 60 MB; before the body limit four bodies took the
# console past 900 MB. Anything near the size of one body means a body was held.
MAX_GROWTH_KB = 48 * 1024


def peak_kb(pid: int) -> int:
    """VmHWM: the most resident memory the process has had, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


async def oversized_post(port: int, path: str) -> int:
    """POST a 60 MB form in 1 MB writes, reading the answer while writing (the server may
    answer and close before the body is through); the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {BODY_BYTES + 9}\r\n\r\npassword=").encode()
    answer = asyncio.create_task(reader.readline())
    try:
        writer.write(head)
        for _ in range(BODY_BYTES // len(CHUNK)):
            if answer.done():
                break
            writer.write(CHUNK)
            await writer.drain()
    except ConnectionError:
        pass  # answered and closed: the status line is already in the reader
    status_line = await asyncio.wait_for(answer, 60)
    writer.close()
    return int(status_line.split()[1])


@pytest.mark.timeout(180)
async def test_parallel_oversized_posts_get_413_and_the_console_stays_small(
    tmp_path: Path,
) -> None:
    process, port = await asyncio.to_thread(console_process, tmp_path)
    try:
        before_kb = peak_kb(process.pid)
        statuses = await asyncio.gather(*(oversized_post(port, "/login")
                                          for _ in range(PARALLEL)))
        after_kb = peak_kb(process.pid)
    finally:
        process.terminate()
        process.communicate(timeout=30)

    assert statuses == [413] * PARALLEL
    assert after_kb - before_kb < MAX_GROWTH_KB, (before_kb, after_kb)
