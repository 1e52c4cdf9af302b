"""`mailer db backup` and `mailer db check`: a consistent copy while the daemon writes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from mailer.errors import StoreError
from mailer.store.backup import backup, pg_program
from mailer.store.db import MIGRATIONS, open_db
from tests.dbrows import execute, rows
from tests.helpers import DAEMON_SECRET, base_sections, run_cli, write_settings
from tests.postgres import PostgresServer


def settings_with_data(tmp_path: Path, rows: int = 2000) -> Path:
    settings = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    imported = tmp_path / "customers.csv"
    imported.write_text("name,email\n" + "".join(
        f"Customer {i},c{i}@example.com\n" for i in range(rows)))
    result = run_cli(settings, "customers", "import", "--consent", "opted-in", str(imported))
    assert result.code == 0, result.stderr
    return settings


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_a_backup_taken_while_another_process_writes_is_whole_and_consistent(
    tmp_path: Path,
) -> None:
    settings = settings_with_data(tmp_path)
    database = tmp_path / "mailer.db"
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        # Each transaction adds a review item and an inbound row together: a consistent
        # copy holds both halves of every transaction or neither.
        with sqlite3.connect(database, timeout=30, isolation_level=None) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO inbound (message_key, folder, uidvalidity, uid, "
                             "outcome, destination, decided_at) VALUES (?, 'INBOX', 1, ?, "
                             "'review', 'Review', 'now')", (f"k{n}", n))
                conn.execute("INSERT INTO review_items (inbound_id, reason, created_at) "
                             "VALUES (last_insert_rowid(), 'test', 'now')")
                conn.execute("COMMIT")
                written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 50:
            stop.wait(0.01)
        copies = [tmp_path / f"backup-{i}.db" for i in range(3)]
        for copy in copies:
            result = run_cli(settings, "db", "backup", str(copy))
            assert result.code == 0, result.stderr
            assert "integrity ok" in result.stdout
    finally:
        stop.set()
        thread.join()
    counts = []
    for copy in copies:
        assert integrity(copy) == "ok"
        with sqlite3.connect(copy) as conn:
            inbound, reviews = conn.execute(
                "SELECT (SELECT count(*) FROM inbound), (SELECT count(*) FROM review_items)"
            ).fetchone()
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2000,)
        assert inbound == reviews
        counts.append(inbound)
    assert 0 < counts[0] <= counts[-1] <= len(written)
    assert not list(tmp_path.glob("*.partial"))


def test_a_backup_replaces_an_older_one_at_the_same_path(tmp_path: Path) -> None:
    settings = settings_with_data(tmp_path, rows=10)
    target = tmp_path / "nightly.db"
    target.write_bytes(b"yesterday's backup")
    result = run_cli(settings, "db", "backup", str(target))
    assert result.code == 0, result.stderr
    assert integrity(target) == "ok"


def test_backing_up_a_database_that_does_not_exist_says_so_with_exit_1(tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    result = run_cli(settings, "db", "backup", str(tmp_path / "copy.db"))
    assert result.code == 1
    assert result.stderr == f"mailer: no database at {tmp_path / 'mailer.db'}\n"
    assert not (tmp_path / "mailer.db").exists()


def test_db_check_reports_integrity_and_schema_version(tmp_path: Path) -> None:
    settings = settings_with_data(tmp_path, rows=10)
    result = run_cli(settings, "db", "check")
    assert (result.code, result.stderr) == (0, "")
    assert result.stdout == (f"{tmp_path / 'mailer.db'}: integrity ok; schema version "
                             f"{len(MIGRATIONS)} (this mailer: {len(MIGRATIONS)})\n")


def test_db_check_of_a_damaged_database_fails_with_exit_3(tmp_path: Path) -> None:
    settings = settings_with_data(tmp_path, rows=3000)
    database = tmp_path / "mailer.db"
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = "
                            "'customers_name_key'").fetchone()[0]
    with database.open("r+b") as handle:  # scribble over one index page
        handle.seek((root - 1) * page_size)
        handle.write(b"\xff" * 200)
    result = run_cli(settings, "db", "check")
    assert result.code == 3
    assert result.stderr.startswith("mailer: ")
    assert len(result.stderr.splitlines()) == 1


async def test_many_connections_opening_a_new_database_at_once_all_get_the_whole_schema(
    tmp_path: Path,
) -> None:
    # A daemon's parts each open their own connection at start; on a new database they all
    # find it unmigrated. Every one must come up, with every migration applied once.
    database = tmp_path / "new.db"
    versions: list[int] = []

    async def one() -> None:
        async with open_db(database) as conn:
            async with conn.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            assert row is not None
            versions.append(int(row[0]))

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(8))), timeout=60)
    assert versions == [len(MIGRATIONS)] * 8
    assert integrity(database) == "ok"


def test_db_migrate_says_from_and_to_which_version_then_that_it_is_up_to_date(
        tmp_path: Path, database: Path | str) -> None:
    sections = base_sections(tmp_path, database={"url": database}) if isinstance(
        database, str) else base_sections(tmp_path)
    settings = write_settings(tmp_path / "settings.toml", sections)
    first = run_cli(settings, "db", "migrate")
    again = run_cli(settings, "db", "migrate")
    assert (first.code, first.stderr) == (0, "")
    assert first.stdout.endswith(f": schema version 0 -> {len(MIGRATIONS)}\n")
    assert again.stdout.endswith(f": schema version {len(MIGRATIONS)}, up to date\n")


def pg_settings(tmp_path: Path, url: str) -> Path:
    return write_settings(tmp_path / "settings.toml",
                          base_sections(tmp_path, database={"url": url}))


def add_customer(settings: Path, url: str) -> None:
    """The schema (`mailer db migrate`) and one customer in it."""
    assert run_cli(settings, "db", "migrate").code == 0
    execute(url, "INSERT INTO customers (email, name, created_at, updated_at) "
            "VALUES ('ann@example.com', 'Ann Lee', 'now', 'now')")


def test_db_check_on_postgresql_reads_the_version_and_counts_each_table(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    settings = pg_settings(tmp_path, url)
    add_customer(settings, url)
    result = run_cli(settings, "db", "check")
    assert (result.code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == (f"{url}: integrity ok; schema version {len(MIGRATIONS)} "
                        f"(this mailer: {len(MIGRATIONS)})")
    counts = dict(line.split() for line in lines[1:])
    assert counts["customers"] == "1"
    assert counts["review_items"] == "0"
    assert "consent_events" in counts


def test_db_backup_on_postgresql_is_a_pg_dump_archive_that_pg_restore_brings_back(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    settings = pg_settings(tmp_path, url)
    add_customer(settings, url)
    dump = tmp_path / "mailer.dump"
    result = run_cli(settings, "db", "backup", str(dump))
    assert (result.code, result.stderr) == (0, "")
    assert result.stdout.startswith(f"backed up {url} to {dump} (")
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    restored = postgres_server.create_database()
    restore = pg_program("pg_restore")
    assert restore is not None
    done = subprocess.run([restore, "--no-owner", f"--dbname={restored}", str(dump)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rows(restored, "SELECT email FROM customers") == [("ann@example.com",)]


async def test_db_backup_on_postgresql_without_pg_dump_names_the_command_to_run(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    with pytest.raises(StoreError) as raised:
        await backup(url, tmp_path / "mailer.dump", find=lambda name: None)
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert message.endswith(f"run: pg_dump --format=custom --file={tmp_path / 'mailer.dump'} "
                            f"{url}")
    assert not (tmp_path / "mailer.dump").exists()


def test_a_daemon_refuses_to_start_on_a_schema_newer_than_the_code_in_one_line(
        tmp_path: Path, database: Path | str) -> None:
    sections = base_sections(tmp_path, database={"url": database}) if isinstance(
        database, str) else base_sections(tmp_path)
    settings = write_settings(tmp_path / "settings.toml", sections)
    assert run_cli(settings, "db", "migrate").code == 0
    execute(database, "PRAGMA user_version = 99" if isinstance(database, Path)
            else "UPDATE schema_version SET version = 99")

    started = run_cli(settings, "run", timeout=60, env={"MAILER_SECRET": DAEMON_SECRET})
    migrated = run_cli(settings, "db", "migrate")

    refusal = f"mailer: database schema version 99 is newer than this mailer ({len(MIGRATIONS)})"
    assert (migrated.code, migrated.stderr) == (3, refusal + "\n")
    # The daemon's log says it was starting; then the one line, and it never ran a part.
    assert started.code == 3
    assert started.stderr.splitlines()[-1] == refusal
    assert "Traceback" not in started.stderr
    assert rows(database, "SELECT count(*) FROM daemon_heartbeat") == [(0,)]
