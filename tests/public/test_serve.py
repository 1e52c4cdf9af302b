"""The web server's lifecycle: `serve` until stopped (the request in flight finishes, the
listener closes), and the `mailer web` command under SIGTERM, in a real process."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from mailer.errors import Unavailable
from mailer.mail import tokens
from mailer.public import serve
from tests.campaigns.world import SECRET, settings_mapping
from tests.helpers import ROOT, write_settings
from tests.public.world import seed, web_settings
from tests.servers import accepts, free_port
from tests.waiting import wait_for

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


class _Started(logging.Handler):
    """Sets an event when the server starts handling a POST."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.post_started = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("POST ") and record.getMessage().endswith("started"):
            self.post_started.set()


async def test_stop_closes_the_listener_and_lets_the_request_in_flight_finish(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = web_settings(tmp_path, http={"port": port})
    ids, campaign_id = await seed(settings)
    url = (f"http://127.0.0.1:{port}/unsubscribe/"
           f"{tokens.campaign_token(SECRET, ids['ann@example.com'], campaign_id)}")
    started = _Started()
    logger = logging.getLogger("mailer.public.middlewares")
    logger.addHandler(started)
    logger.setLevel(logging.DEBUG)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop))
    blocker = sqlite3.connect(settings.database.path, isolation_level=None)
    try:
        await wait_for(lambda: accepts(port), what="the listener")
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for now
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(session.post(url, data=ONE_CLICK))
            await asyncio.wait_for(started.post_started.wait(), 20)
            stop.set()
            await wait_for(lambda: not accepts(port), what="the listener to close")

            assert not request.done() and not server.done()
            blocker.execute("ROLLBACK")
            response = await asyncio.wait_for(request, 20)
            assert response.status == 200
            await asyncio.wait_for(server, 20)
    finally:
        logger.removeHandler(started)
        logger.setLevel(logging.NOTSET)
        blocker.close()
        stop.set()
        await asyncio.gather(server, return_exceptions=True)
    with sqlite3.connect(settings.database.path) as conn:
        assert conn.execute("SELECT offers FROM customers WHERE email = 'ann@example.com'"
                            ).fetchall() == [(0,)]


async def test_serving_on_an_address_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = web_settings(tmp_path, http={"port": port})
        with pytest.raises(Unavailable, match=rf"\[http\] 127.0.0.1:{port}: cannot listen"):
            await serve(settings, asyncio.Event())


def _settings_file(tmp_path: Path, **http: object) -> Path:
    sections = settings_mapping(tmp_path, 1, http=dict(http))
    sections["templates"] = {"dir": str(ROOT / "templates")}
    return write_settings(tmp_path / "settings.toml", sections)


async def test_mailer_web_serves_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    path = _settings_file(tmp_path, host="127.0.0.1", port=port)
    settings = web_settings(tmp_path, http={"port": port})
    ids, campaign_id = await seed(settings)
    token = tokens.campaign_token(SECRET, ids["bob@example.com"], campaign_id)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(path), "web"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await wait_for(lambda: accepts(port) or process.poll() is not None, what="mailer web")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                assert health.status == 200
            async with session.get(f"http://127.0.0.1:{port}/unsubscribe/{token}") as page:
                assert page.status == 200
                assert "Bob &lt;b&gt;Baker" in await page.text()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "web: stopped" in stderr
    assert "customer=" in stderr and "outcome=page shown" in stderr
    assert token not in stderr and token[-22:] not in stderr


def test_mailer_web_without_an_http_host_exits_2_with_one_line(tmp_path: Path) -> None:
    path = _settings_file(tmp_path)
    result = subprocess.run([sys.executable, "-m", "mailer", "--settings", str(path), "web"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mailer: [http] host: missing value (`mailer web` needs [http] host and port)"]
