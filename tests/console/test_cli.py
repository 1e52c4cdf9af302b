"""`mailer users …` and `mailer console` through the real command line."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from mailer import settings as settings_module
from mailer.console.app import serve
from tests import dbrows
from tests.console.world import console_process, query
from tests.helpers import ROOT, base_sections, write_settings
from tests.servers import accepts, free_port
from tests.waiting import wait_for


def mailer(settings_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailer", "--settings", str(settings_path),
                           *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env=dict(os.environ))


def test_users_are_added_listed_given_a_new_password_and_removed(
    tmp_path: Path, database: Path | str
) -> None:
    path = write_settings(tmp_path / "settings.toml", base_sections(
        tmp_path, database=dbrows.database_section(database)))
    db = database
    added = mailer(path, "users", "add", "mo", "--role", "marketing",
                   stdin="a long enough password\n")
    assert (added.returncode, added.stdout) == (0, "user mo added (marketing)\n")
    (stored,) = query(db, "SELECT password_hash FROM console_users WHERE name = 'mo'")[0]
    assert str(stored).startswith("$argon2id$") and "a long enough password" not in str(stored)
    again = mailer(path, "users", "add", "mo", "--role", "admin", stdin="another password!\n")
    assert (again.returncode, again.stderr) == (2, "mailer: user mo already exists\n")
    listed = mailer(path, "users", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("mo\tmarketing\t")
    changed = mailer(path, "users", "passwd", "mo", stdin="a different password\n")
    assert changed.returncode == 0
    assert query(db, "SELECT password_hash FROM console_users")[0][0] != stored
    removed = mailer(path, "users", "remove", "mo")
    assert removed.returncode == 0
    assert query(db, "SELECT count(*) FROM console_users") == [(0,)]
    missing = mailer(path, "users", "remove", "mo")
    assert (missing.returncode, missing.stderr) == (1, "mailer: no user mo\n")


def test_a_short_password_or_an_unknown_role_is_refused(tmp_path: Path) -> None:
    path = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    short = mailer(path, "users", "add", "mo", "--role", "reviewer", stdin="short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    role = mailer(path, "users", "add", "mo", "--role", "boss", stdin="long enough password\n")
    assert role.returncode == 2


def test_a_password_easy_to_guess_is_refused_with_one_line_saying_why(tmp_path: Path) -> None:
    path = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    for weak in ("aaaaaaaaaaaa", " " * 12, "Password123!", "mo-mo-mo-mo-mo"):
        added = mailer(path, "users", "add", "mo", "--role", "reviewer", stdin=weak + "\n")
        assert added.returncode == 2, weak
        [line] = added.stderr.splitlines()
        assert line.startswith("mailer: password: too easy to guess ("), line
    assert not (tmp_path / "mailer.db").exists()  # refused before the database is opened
    assert mailer(path, "users", "add", "mo", "--role", "reviewer",
                  stdin="plum kettle orbit saffron\n").returncode == 0
    weak = mailer(path, "users", "passwd", "mo", stdin="aaaaaaaaaaaa\n")
    assert weak.returncode == 2 and "too easy to guess" in weak.stderr


async def test_the_console_serves_on_its_own_port_until_stopped(tmp_path: Path) -> None:
    port = free_port()
    path = write_settings(tmp_path / "settings.toml",
                          base_sections(tmp_path, console={"port": port}))
    settings = settings_module.load(path)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop))
    await wait_for(lambda: accepts(port) or server.done(), what="the console to listen")
    if server.done():
        server.result()  # raises why it never listened
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/login") as response:
        assert response.status == 200
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Server"] == "mailer"
    stop.set()
    await asyncio.wait_for(server, 15)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the listener is closed


def test_mailer_console_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process, _ = console_process(tmp_path)
    try:
        process.terminate()
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
