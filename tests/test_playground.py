"""`make playground` (scripts/playground.py) through its real process: it prints a console
address and passwords that sign in, preference-page links that open on this machine, lists
the mail the daemon sends, and stops everything on Ctrl-C (SIGINT)."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import ROOT

READY_LINE = "Ctrl-C stops everything."


class Lines:
    """The playground's output, line by line, read by a thread so a wait can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout

        def read() -> None:
            for line in stdout:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=read, daemon=True).start()

    def until(self, pattern: str, timeout_s: float = 120.0) -> re.Match[str]:
        while True:
            try:
                line = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s; "
                                     f"output so far: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the playground ended before {pattern!r}: {self.seen}")
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found


@pytest.fixture
def playground(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    process = subprocess.Popen(
        [sys.executable, "scripts/playground.py", "--dir", str(tmp_path / "run")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield process, Lines(process)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


async def test_the_playground_serves_the_console_and_links_that_open_here_until_ctrl_c(
    playground: tuple[subprocess.Popen[str], Lines], tmp_path: Path,
) -> None:
    process, lines = playground
    console = lines.until(r"^console:\s+(http://127\.0\.0\.1:\d+)/$").group(1)
    password = lines.until(r"sign in as admin\s+password: (\S+)$").group(1)
    link = lines.until(r"ann@example\.com\s+(http://127\.0\.0\.1:\d+/unsubscribe/\S+)$").group(1)
    lines.until(re.escape(READY_LINE))
    settings = (tmp_path / "run" / "settings.toml").read_text(encoding="utf-8")
    assert "[console]" in settings and "enabled = true" in settings

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(link) as page:
            assert page.status == 200 and "Your email choices" in await page.text()
        async with http.get(f"{console}/login") as form:
            token = re.search(r'name="login_token" value="([^"]+)"', await form.text())
        assert token is not None
        async with http.post(f"{console}/login", data={
                "name": "admin", "password": password, "login_token": token.group(1),
                "next": "/review"}) as signed_in:
            page = await signed_in.text()
        # The demo's requests the worker would not decide alone wait for a person.
        assert signed_in.url.path == "/review" and "Unsubscribe special offers" in page

    # The daemon answered the requests it could decide: confirmations, listed as sent.
    lines.until(r"^  mail sent to \S+: ")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    lines.until(r"^Stopped\.")
    log = (tmp_path / "run" / "mailer.log").read_text(encoding="utf-8")
    assert "mailer stopped" in log  # the daemon finished its work and exited
