"""PostgreSQL behind the store's handle: psycopg 3's AsyncConnection in autocommit.

The store writes its SQL once, in SQLite's dialect with `?` (or `:name`) placeholders; here
each statement is translated once (and cached) into psycopg's `%s` form, and `BEGIN IMMEDIATE`
becomes `BEGIN`. What cannot be said the same way on both engines is chosen with
`Connection.engine` inside the store module that needs it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.rows import RowMaker

from mailer.store.handle import (
    PASSWORD_ENV,
    Connection,
    Engine,
    LazyResult,
    Params,
    Result,
    Where,
)


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
            self.raw = await open_postgres(self.where, self._application_name)
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

        return LazyResult(run)

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


async def open_postgres(place: Where, application_name: str) -> psycopg.AsyncConnection[Row]:
    options: dict[str, Any] = {"autocommit": True, "row_factory": _row_factory,
                               "application_name": application_name}
    password = os.environ.get(PASSWORD_ENV)
    if password:
        options["password"] = password
    if _pgbouncer(place.url):
        options["prepare_threshold"] = None
    pg = await psycopg.AsyncConnection.connect(without_mailer_options(place.url), **options)
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
        self.raw = psycopg.connect(without_mailer_options(place.url), connect_timeout=5,
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


def without_mailer_options(url: str) -> str:
    return re.sub(r"([?&])pgbouncer=[^&]*&?", r"\1", url).rstrip("?&")
