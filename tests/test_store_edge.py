"""The store's edge: no sqlite3 exception ever leaves `mailer/store/`; each becomes one
StoreError line saying what was being done."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import aiosqlite
import pytest

import mailer.store
from mailer.errors import StoreError
from mailer.store import heartbeat, users
from mailer.store.db import open_db, transaction

# Public coroutine functions that translate their own errors (they open their own read-only
# connection, or say "cannot read" in their own words).
OWN_WORDS = {"backup", "check", "check_usable", "read_snapshot", "migrate", "connect",
             "open_postgres", "schema_version", "copy_to_postgresql"}


def public_store_coroutines() -> list[tuple[str, object]]:
    found = []
    for info in pkgutil.iter_modules(mailer.store.__path__, "mailer.store."):
        module = importlib.import_module(info.name)
        for name, function in inspect.getmembers(module, inspect.iscoroutinefunction):
            if name.startswith("_") or function.__module__ != module.__name__:
                continue
            found.append((f"{info.name}.{name}", function))
    return found


def test_every_public_store_coroutine_turns_sqlite_errors_into_store_errors() -> None:
    untranslated = [name for name, function in public_store_coroutines()
                    if not hasattr(function, "__wrapped__")
                    and name.rsplit(".", 1)[1] not in OWN_WORDS]
    assert untranslated == []


async def test_a_store_read_that_fails_is_one_store_error_line(tmp_path: Path) -> None:
    async with open_db(tmp_path / "mailer.db") as conn:
        await conn.execute("DROP TABLE console_users")
        with pytest.raises(StoreError) as caught:
            await users.list_users(conn)
    assert str(caught.value).startswith("users: list users: database error: no such table")
    assert "\n" not in str(caught.value)


async def test_a_commit_that_fails_is_a_store_error_and_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    async with open_db(tmp_path / "mailer.db") as conn:
        # A deferred foreign key violated at COMMIT: the commit itself fails.
        await conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await conn.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id) "
                           "DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(StoreError, match=r"^adding a child: cannot commit: database error"):
            async with transaction(conn, "adding a child"):
                await conn.execute("INSERT INTO child VALUES (42)")
        assert not conn.in_transaction
        async with transaction(conn, "the next one"):
            await conn.execute("INSERT INTO parent VALUES (1)")
        assert [tuple(r) for r in await conn.execute_fetchall("SELECT count(*) FROM child")] \
            == [(0,)]


async def test_a_write_that_fails_names_what_it_was(tmp_path: Path) -> None:
    async with aiosqlite.connect(f"file:{tmp_path / 'ro.db'}?mode=memory", uri=True) as conn:
        with pytest.raises(StoreError, match=r"^heartbeat: write heartbeat: database error: "
                                             r"no such table"):
            await heartbeat.write_heartbeat(conn, heartbeat.Heartbeat(
                host="h", pid=1, started_at="", version="", beat_at="", stopped_at=None,
                parts={}))
