"""The test-side PostgreSQL (tests/postgres.py) and the `database` fixture built on it: every test
gets a fresh empty database on either engine, and the server is reachable on loopback only.

These talk to the databases with sqlite3 and psycopg directly, not through mailer.store, so they
check the fixtures and nothing else.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from tests.conftest import POSTGRES_REQUIRED, database_engines, postgres_missing
from tests.ports import accepts, listens
from tests.postgres import PostgresServer, stop_orphans


def _tables(database: Path | str) -> set[str]:
    if isinstance(database, Path):
        with closing(sqlite3.connect(database)) as connection:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {name for (name,) in rows}
    with psycopg.connect(database) as pg:
        listed = pg.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return {name for (name,) in listed}


def _write_a_table(database: Path | str) -> None:
    statements = ("CREATE TABLE left_behind (note TEXT)",
                  "INSERT INTO left_behind VALUES ('from an earlier test')")
    if isinstance(database, Path):
        with closing(sqlite3.connect(database)) as connection, connection:
            for statement in statements:
                connection.execute(statement)
        return
    with psycopg.connect(database) as pg:
        for statement in statements:
            pg.execute(statement)


def _dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_an_empty_database_whatever_the_one_before_left(
        database: Path | str, turn: str) -> None:
    # Both turns write a table; whichever runs second would see the other's if they shared.
    assert _tables(database) == set()
    _write_a_table(database)
    assert _tables(database) == {"left_behind"}


def test_databases_from_one_server_are_independent(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.create_database(), postgres_server.create_database()
    _write_a_table(first)

    assert first != second
    assert _tables(first) == {"left_behind"}
    assert _tables(second) == set()


def test_a_database_url_names_the_mailer_user_on_loopback(
        postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()

    assert url == f"postgresql://mailer@127.0.0.1:{postgres_server.port}/{_dbname(url)}"
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("mailer", _dbname(url))


def test_the_server_listens_on_127_0_0_1_only(postgres_server: PostgresServer) -> None:
    assert listens(postgres_server.pid, [postgres_server.port])
    # No other address, IPv4 or IPv6, has a listening socket on the port.
    others = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in lines.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.split(":")
                if state == "0A" and int(port, 16) == postgres_server.port:
                    others += [address] if address != "0100007F" else []
    assert others == []
    with psycopg.connect(postgres_server.url("postgres")) as connection:
        row = connection.execute("SHOW listen_addresses").fetchone()
    assert row == ("127.0.0.1",)


def test_drop_database_removes_it_even_with_a_session_still_open(
        postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    with psycopg.connect(url, autocommit=True) as forgotten:
        postgres_server.drop_database(_dbname(url))

        with pytest.raises(psycopg.OperationalError):
            forgotten.execute("SELECT 1")
    with psycopg.connect(postgres_server.url("postgres")) as connection:
        row = connection.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                                 (_dbname(url),)).fetchone()
    assert row == (0,)


def test_kill_connections_ends_the_sessions_on_that_database_only(
        postgres_server: PostgresServer) -> None:
    victim, bystander = postgres_server.create_database(), postgres_server.create_database()
    with psycopg.connect(victim, autocommit=True) as doomed, \
            psycopg.connect(bystander, autocommit=True) as spared:
        assert postgres_server.kill_connections(_dbname(victim)) == 1

        with pytest.raises(psycopg.OperationalError):
            doomed.execute("SELECT 1")
        assert spared.execute("SELECT 1").fetchone() == (1,)


def test_a_stopped_server_leaves_no_folder_and_no_listener(
        postgres_server: PostgresServer) -> None:
    server = PostgresServer(postgres_server.bindir)
    server.start()
    folder, port = server.folder, server.port
    assert folder is not None and folder.is_dir() and accepts(port)

    server.stop()

    assert not folder.exists()
    assert not accepts(port)


def test_a_cluster_whose_session_died_is_stopped_by_the_next_start(
        postgres_server: PostgresServer) -> None:
    orphan = PostgresServer(postgres_server.bindir)
    orphan.start()
    folder, port = orphan.folder, orphan.port
    assert folder is not None and accepts(port)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (folder / "session.pid").write_text(str(gone.pid))  # as if a killed session started it

    stop_orphans(postgres_server.bindir)

    assert not folder.exists()
    assert not accepts(port)
    # This session's own server runs on.
    assert postgres_server.folder is not None and accepts(postgres_server.port)


def test_database_tests_run_on_both_engines_when_required_or_installed() -> None:
    both = POSTGRES_REQUIRED or postgres_missing() is None

    assert database_engines() == (["sqlite", "postgresql"] if both else ["sqlite"])


def test_without_the_server_the_sqlite_half_passes_and_one_line_says_so() -> None:
    this = Path(__file__)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(this),
         "-k", "empty_database or stopped_server"],
        env={**os.environ, "MAILER_TEST_POSTGRES": "off"}, cwd=this.parent.parent,
        capture_output=True, text=True, timeout=120, check=False)

    assert run.returncode == 0, run.stdout + run.stderr
    assert [line for line in run.stdout.splitlines() if "PostgreSQL" in line] == [
        "PostgreSQL half skipped: MAILER_TEST_POSTGRES=off; CI runs it"]
    assert re.match(r"2 passed, \d+ deselected in", run.stdout.splitlines()[-1])
