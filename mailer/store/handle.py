"""The store's handle: the `Connection` every layer above `store/` holds, the locations it opens
and the small API both engines answer (`store.engine` opens one; `store.sqlite_engine` and
`store.postgres_engine` implement it).

Both handles answer the API the store already used with aiosqlite: `execute` (awaited, or used
as `async with ... as cur`), `execute_fetchall`, `executemany`, `executescript`; rows answer
`row[0]` and `row["name"]` alike. A PostgreSQL connection runs in autocommit, like SQLite's
`isolation_level=None`: a statement outside `db.transaction` is its own transaction.

A location is a `Path` (SQLite), or a URL: `sqlite:///path/mailer.db` or
`postgresql://user@host:port/db?sslmode=verify-full`. The PostgreSQL password comes from
`MAILER_DATABASE_PASSWORD`, else libpq's own `.pgpass` or service file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import psycopg

from mailer.errors import SettingsError

Engine = Literal["sqlite", "postgresql"]
Location = Path | str
Params = Sequence[Any] | Mapping[str, Any]
# A row of either engine (sqlite3.Row or `postgres_engine.Row`): row[0] and row["name"].
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

    def one_of(self, column: str, ids: Iterable[int]) -> tuple[str, tuple[object, ...]]:
        """`one_of` on this connection's engine."""
        return one_of(self.engine, column, ids)


def one_of(engine: Engine, column: str, ids: Iterable[int]) -> tuple[str, tuple[object, ...]]:
    """`column` is one of `ids`, as a condition and its parameters. On PostgreSQL one array
    literal (`= ANY(?::bigint[])`): the statement's text is the same however many ids, so it
    is prepared and planned once, and one string is dumped instead of a parameter per id. On
    SQLite `IN (?, ...)`."""
    values = [int(i) for i in ids]
    if engine == "postgresql":
        return f"{column} = ANY(?::bigint[])", (int_array(values),)
    return f"{column} IN ({','.join('?' * len(values))})", tuple(values)


def int_array(values: Iterable[int]) -> str:
    """Integers as a PostgreSQL array literal ('{1,2,3}'), for a `?::bigint[]` parameter."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


class LazyResult:
    """A statement run when awaited, or entered (its cursor closed on leaving)."""

    def __init__(self, run: Callable[[], Awaitable[Cursor]]) -> None:
        self._run = run
        self._cursor: Cursor | None = None

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._run().__await__()

    async def __aenter__(self) -> Cursor:
        cursor = self._cursor = await self._run()
        return cursor

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._cursor is not None:
            await self._cursor.close()
