"""A console test world: settings and a SQLite file, accounts of each role, the console app
under aiohttp's test client, and a clock the test moves (sessions expire without sleeping)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from mailer.console.app import make_app
from mailer.settings import Settings
from mailer.store import users
from mailer.store.db import open_db, transaction
from tests import dbrows
from tests.helpers import ROOT, base_sections, write_settings
from tests.servers import free_port

PASSWORD = "correct horse battery staple"
ROLES = ("admin", "marketing", "reviewer")


@dataclass
class FakeClock:
    start: datetime = field(default_factory=lambda: datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    offset_s: float = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.offset_s)

    def time(self) -> float:
        return self.now().timestamp()

    def monotonic(self) -> float:
        return self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


async def add_users(settings: Settings) -> None:
    """One account per role, each named after its role."""
    digest = users.hash_password(PASSWORD)
    async with open_db(settings.database.location) as conn, transaction(conn):
        for role in ROLES:
            await users.add_user(conn, role, role, digest)


async def start_client(settings: Settings, clock: FakeClock) -> TestClient[object, object]:
    client: TestClient[object, object] = TestClient(TestServer(make_app(settings, clock=clock)))
    await client.start_server()
    return client


_CSRF = re.compile(r'name="(?:csrf|login_token)" value="([^"]+)"')


def token_in(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "no form token in the page"
    return found.group(1)


async def login(client: TestClient[object, object], name: str,
                password: str = PASSWORD) -> int:
    """Sign in as `name` (a fresh cookie jar); the status of the POST /login."""
    client.session.cookie_jar.clear()
    page = await client.get("/login")
    token = token_in(await page.text())
    response = await client.post("/login", data={"name": name, "password": password,
                                                 "login_token": token, "next": "/"},
                                 allow_redirects=False)
    return response.status


async def csrf(client: TestClient[object, object], path: str = "/") -> str:
    """The signed-in session's CSRF token, read from a page the user may see."""
    response = await client.get(path)
    return token_in(await response.text())


def query(db: Path | str, sql: str, *params: object) -> list[tuple[object, ...]]:
    return dbrows.rows(db, sql, params)


def console_process(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """`mailer console` as a real process on a free loopback port, returned once it says it
    is listening, with that port. The caller stops it."""
    port = free_port()
    path = write_settings(tmp_path / "settings.toml",
                          base_sections(tmp_path, console={"port": port}))
    process = subprocess.Popen([sys.executable, "-m", "mailer", "--settings", str(path),
                                "console"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = ""
        while "console: listening on" not in line:
            line = process.stderr.readline()
            assert line, "mailer console exited before listening"
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, port
