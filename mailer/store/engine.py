"""The store's two engines behind one handle: SQLite (embedded, the default) and PostgreSQL.

Everything above `store/` holds a `Connection`, never a driver's object. The store writes its
SQL once, in SQLite's dialect with `?` (or `:name`) placeholders; on PostgreSQL each statement
is translated once (and cached) into psycopg's `%s` form, `BEGIN IMMEDIATE` becomes `BEGIN`.
What cannot be said the same way on both engines is chosen with `Connection.engine` inside the
store module that needs it.

Both handles answer the same small API, the one the store already used with aiosqlite:
`execute` (awaited, or used as `async with ... as cur`), `execute_fetchall`, `executemany`,
`executescript`; rows answer `row[0]` and `row["name"]` alike. A PostgreSQL connection runs in
autocommit, like SQLite's `isolation_level=None`: a statement outside `db.transaction` is its
own transaction.

A location is a `Path` (SQLite), or a URL: `sqlite:///path/mailer.db` or
`postgresql://user@host:port/db?sslmode=verify-full`. The PostgreSQL password comes from
`MAILER_DATABASE_PASSWORD`, else libpq's own `.pgpass` or service file.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import aiosqlite
import psycopg
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.rows import RowMaker

from mailer.errors import SettingsError

Engine = Literal["sqlite", "postgresql"]
Location = Path | str
Params = Sequence[Any] | Mapping[str, Any]
# A row of either engine (sqlite3.Row or `Row`): both answer row[0] and row["name"].
StoredRow = Any

PASSWORD_ENV = "MAILER_DATABASE_PASSWORD"

# Errors of either driver, for the store's edges (`edge.translated`, `db.transaction`).
DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
OPEN_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.Error, psycopg.Error)


@dataclass(frozen=True)
class Where:
    """A parsed location: the engine, and the SQLite file or the PostgreSQL conninfo."""

    engine: Engine
    path: Path | None = None
    url: str = ""

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else redact(self.url)


def where(location: Location) -> Where:
    """Parse a location; a URL of another scheme is a SettingsError naming it."""
    if isinstance(location, Path):
        return Where("sqlite", path=location)
    if location.startswith("sqlite://"):
        rest = location.removeprefix("sqlite://")
        if not rest.startswith("/"):
            raise SettingsError(f"[database] url {location!r}: write sqlite:///path/mailer.db")
        # sqlite:///relative.db is relative; sqlite:////abs/path.db is absolute (SQLAlchemy's
        # convention).
        path = unquote(rest[1:]) or "mailer.db"
        return Where("sqlite", path=Path(path))
    if location.startswith(("postgresql://", "postgres://")):
        if (not urlsplit(location).hostname and "host=" not in location
                and "service=" not in location):
            raise SettingsError(f"[database] url {redact(location)!r}: names no host")
        return Where("postgresql", url=location)
    raise SettingsError(
        f"[database] url {redact(location)!r}: must start with sqlite:/// or postgresql://")


def redact(url: str) -> str:
    """The URL without a password written into it, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class Row(tuple[Any, ...]):
    """A PostgreSQL row that also answers by column name, as sqlite3.Row does."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> RowMaker[Row]:
    description = cursor.description
    if description is None:
        return tuple  # type: ignore[return-value]
    return _row_class(tuple(column.name for column in description))


@functools.lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    """One Row class per column list (a class per statement would cost more than its row)."""
    index = {name: i for i, name in enumerate(names)}
    return type("Row", (Row,), {"_index": index, "__slots__": ()})


class _BoolAsInteger(Dumper):
    """SQLite has no booleans: the schema keeps flags in INTEGER columns on both engines."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> Buffer:
        return b"1" if obj else b"0"


class _NumericLoader(Loader):
    """SUM() of integers is NUMERIC on PostgreSQL: load whole numbers as int (as SQLite does)
    and the rest as float, never Decimal."""

    def load(self, data: Buffer) -> Any:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|%|(?<!:):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=4096)
def postgresql_sql(sql: str, named: bool = False) -> str:
    """One statement in the store's dialect, as psycopg wants it: `?` -> `%s`, `:name` ->
    `%(name)s` (when the parameters are a mapping), a literal `%` doubled, and SQLite's
    BEGIN IMMEDIATE as a plain BEGIN (PostgreSQL locks rows as it writes them)."""
    if sql.lstrip().upper().startswith("BEGIN IMMEDIATE"):
        return "BEGIN"

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if match.group(1) is not None:
            return f"%({match.group(1)})s" if named else text
        if text.startswith("'") or text.startswith('"'):
            return text.replace("%", "%%")
        return text

    return _PLACEHOLDER.sub(replace, sql)


class Cursor(Protocol):
    """What a statement's result offers: its rows, and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Any: ...

    async def fetchall(self) -> Iterable[Any]: ...

    async def close(self) -> None: ...

    def __aiter__(self) -> Any: ...


class Result(Protocol):
    """`conn.execute(...)`: await it for the cursor, or `async with` it to close it after."""

    def __await__(self) -> Generator[Any, None, Cursor]: ...

    async def __aenter__(self) -> Cursor: ...

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None: ...


class Connection:
    """An open database: one engine's connection behind the API the store uses."""

    engine: Engine
    where: Where

    def execute(self, sql: str, parameters: Params = ()) -> Result:
        raise NotImplementedError

    async def execute_fetchall(self, sql: str, parameters: Params = ()) -> Iterable[Any]:
        raise NotImplementedError

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        raise NotImplementedError

    async def executescript(self, script: str) -> None:
        raise NotImplementedError

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    async def commit(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file (the engine-specific fast paths open their own connections)."""
        assert self.where.path is not None, "not a SQLite database"
        return self.where.path


class SqliteConnection(Connection):
    """aiosqlite underneath (its own thread); rows are sqlite3.Row."""

    engine: Engine = "sqlite"

    def __init__(self, raw: aiosqlite.Connection, place: Where) -> None:
        self.raw = raw
        self.where = place

    def execute(self, sql: str, parameters: Params = ()) -> Result:
        return self.raw.execute(sql, parameters)

    async def execute_fetchall(self, sql: str, parameters: Params = ()) -> Iterable[Any]:
        return await self.raw.execute_fetchall(sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        await self.raw.executemany(sql, parameters)

    async def executescript(self, script: str) -> None:
        await self.raw.executescript(script)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    async def rollback(self) -> None:
        await self.raw.rollback()

    async def commit(self) -> None:
        await self.raw.commit()

    async def close(self) -> None:
        await self.raw.close()


class _InlineCursor:
    """A sqlite3 cursor behind the async cursor API (every call completes at once)."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    def __aiter__(self) -> Any:
        return self._rows()

    async def _rows(self) -> Any:
        for row in self._cursor:
            yield row


class InlineSqliteConnection(Connection):
    """SQLite on the event loop's own thread, for a listener's short transactions.

    Through aiosqlite each statement is a hand-off to its thread and back: on a loop busy
    with a campaign, about a loop turn each, so a ten-statement one-click transaction held
    SQLite's single write lock for milliseconds, and the campaign's ledger commits queued
    behind it (its rate fell to a third). Inline, the same transaction runs in a few hundred
    microseconds without yielding. The busy timeout is 0, so nothing blocks the loop: a
    statement that finds another process writing is retried after an asyncio sleep, up to
    `_BUSY_WAIT_S`. Only for small, indexed statements (the public listener's); everything
    else keeps aiosqlite."""

    engine: Engine = "sqlite"
    _BUSY_WAIT_S = 10.0

    def __init__(self, raw: sqlite3.Connection, place: Where) -> None:
        self.raw = raw
        self.where = place

    async def _run(self, call: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        waited = 0.0
        pause = 0.001
        while True:
            try:
                return call()
            except sqlite3.OperationalError as exc:
                if (exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                        or waited >= self._BUSY_WAIT_S):
                    raise
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.05)

    def execute(self, sql: str, parameters: Params = ()) -> Result:
        async def run() -> _InlineCursor:
            return _InlineCursor(await self._run(lambda: self.raw.execute(sql, parameters)))

        return _PgResult(run)  # type: ignore[arg-type]

    async def execute_fetchall(self, sql: str, parameters: Params = ()) -> Iterable[Any]:
        cursor = await self._run(lambda: self.raw.execute(sql, parameters))
        return cursor.fetchall()

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        rows = list(parameters)
        await self._run(lambda: self.raw.executemany(sql, rows))

    async def executescript(self, script: str) -> None:
        await self._run(lambda: self.raw.executescript(script))

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    async def rollback(self) -> None:
        self.raw.rollback()

    async def commit(self) -> None:
        self.raw.commit()

    async def close(self) -> None:
        self.raw.close()


class _PgCursor:
    """psycopg's cursor, answering None/[] where a statement returned no rows (as sqlite3)."""

    def __init__(self, cursor: psycopg.AsyncCursor[Row]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Row | None:
        if self._cursor.description is None:
            return None
        return await self._cursor.fetchone()

    async def fetchall(self) -> list[Row]:
        if self._cursor.description is None:
            return []
        return await self._cursor.fetchall()

    async def close(self) -> None:
        await self._cursor.close()

    def __aiter__(self) -> Any:
        return self._rows()

    async def _rows(self) -> Any:
        if self._cursor.description is None:
            return
        async for row in self._cursor:
            yield row


class _PgResult:
    def __init__(self, run: Callable[[], Awaitable[_PgCursor]]) -> None:
        self._run = run
        self._cursor: _PgCursor | None = None

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._run().__await__()

    async def __aenter__(self) -> Cursor:
        self._cursor = await self._run()
        return self._cursor

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class PostgresConnection(Connection):
    """psycopg 3's AsyncConnection in autocommit; statements translated by `postgresql_sql`.

    A connection the server ended (a restart, a failover, an administrator) is opened again
    before the next statement, so a holder of a long-lived connection (the public listener,
    a part between rounds) carries on: the statement that met the end failed, as it must. A
    transaction that was open is lost with its session: until its ROLLBACK, every statement
    fails, so the rest of it never runs outside a transaction on the new session."""

    engine: Engine = "postgresql"

    def __init__(self, raw: psycopg.AsyncConnection[Row], place: Where,
                 application_name: str = "mailer") -> None:
        self.raw = raw
        self.where = place
        self._application_name = application_name
        self._was_in_transaction = False  # after the last statement that reached the server

    async def _session(self, sql: str | bytes) -> psycopg.AsyncConnection[Row]:
        if self.raw.closed:
            if self._was_in_transaction and not _is_rollback(sql):
                raise psycopg.OperationalError(
                    "the connection to the database ended inside a transaction")
            self._was_in_transaction = False
            self.raw = await _open_postgres(self.where, self._application_name)
        return self.raw

    def _seen(self) -> None:
        self._was_in_transaction = (self.raw.info.transaction_status
                                    != psycopg.pq.TransactionStatus.IDLE)

    def execute(self, sql: str, parameters: Params = ()) -> Result:
        async def run() -> _PgCursor:
            cursor = (await self._session(sql)).cursor()
            await cursor.execute(_translate(sql, parameters), parameters)
            self._seen()
            return _PgCursor(cursor)

        return _PgResult(run)

    async def execute_fetchall(self, sql: str, parameters: Params = ()) -> list[Row]:
        async with (await self._session(sql)).cursor() as cursor:
            await cursor.execute(_translate(sql, parameters), parameters)
            self._seen()
            return await cursor.fetchall() if cursor.description is not None else []

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        rows = list(parameters)
        if not rows:
            return
        async with (await self._session(sql)).cursor() as cursor:
            await cursor.executemany(_translate(sql, rows[0]), rows)
            self._seen()

    async def executescript(self, script: str) -> None:
        # Without parameters psycopg sends the text as it is, several statements at once.
        await (await self._session(script)).execute(script.encode())
        self._seen()

    @property
    def in_transaction(self) -> bool:
        if self.raw.closed:
            return self._was_in_transaction
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    async def rollback(self) -> None:
        await (await self._session(b"ROLLBACK")).execute(b"ROLLBACK")
        self._seen()

    async def commit(self) -> None:
        if self.in_transaction:
            await self.raw.execute(b"COMMIT")

    async def close(self) -> None:
        await self.raw.close()


def _is_rollback(sql: str | bytes) -> bool:
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else sql
    return text.strip().upper().startswith("ROLLBACK")


def _translate(sql: str, parameters: Params) -> str:
    return postgresql_sql(sql, isinstance(parameters, Mapping))


async def connect(place: Where, *, application_name: str = "mailer", inline: bool = False
                  ) -> Connection:
    """Open one connection (not yet configured or migrated: see `db.open_db`). `inline`: on
    SQLite, statements run on the loop's thread (`InlineSqliteConnection`)."""
    if place.engine == "sqlite":
        assert place.path is not None
        place.path.parent.mkdir(parents=True, exist_ok=True)
        if inline:
            plain = sqlite3.connect(str(place.path), isolation_level=None)
            plain.row_factory = sqlite3.Row
            return InlineSqliteConnection(plain, place)
        raw = await aiosqlite.connect(str(place.path), isolation_level=None)
        raw.row_factory = aiosqlite.Row
        return SqliteConnection(raw, place)
    return PostgresConnection(await _open_postgres(place, application_name), place,
                              application_name)


async def _open_postgres(place: Where, application_name: str) -> psycopg.AsyncConnection[Row]:
    options: dict[str, Any] = {"autocommit": True, "row_factory": _row_factory,
                               "application_name": application_name}
    password = os.environ.get(PASSWORD_ENV)
    if password:
        options["password"] = password
    if _pgbouncer(place.url):
        options["prepare_threshold"] = None
    pg = await psycopg.AsyncConnection.connect(_without_mailer_options(place.url), **options)
    pg.adapters.register_dumper(bool, _BoolAsInteger)
    pg.adapters.register_loader("numeric", _NumericLoader)
    return pg


class SyncPostgres:
    """A blocking PostgreSQL connection for the few synchronous readers (a Prometheus scrape
    runs in a worker thread), with the same `execute(sql, parameters)` as sqlite3's."""

    def __init__(self, place: Where) -> None:
        options: dict[str, Any] = {"autocommit": True, "application_name": "mailer metrics"}
        password = os.environ.get(PASSWORD_ENV)
        if password:
            options["password"] = password
        if _pgbouncer(place.url):
            options["prepare_threshold"] = None
        self.raw = psycopg.connect(_without_mailer_options(place.url), connect_timeout=5,
                                   **options)
        self.raw.adapters.register_dumper(bool, _BoolAsInteger)
        self.raw.adapters.register_loader("numeric", _NumericLoader)

    def execute(self, sql: str, parameters: Params = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(_translate(sql, parameters), parameters)

    def close(self) -> None:
        self.raw.close()


def _pgbouncer(url: str) -> bool:
    """`?pgbouncer=1` (ours, not libpq's): behind pgbouncer in transaction mode a prepared
    statement may land on another server connection, so psycopg must not prepare any."""
    return re.search(r"[?&]pgbouncer=(1|true|yes)\b", url) is not None


def _without_mailer_options(url: str) -> str:
    return re.sub(r"([?&])pgbouncer=[^&]*&?", r"\1", url).rstrip("?&")
