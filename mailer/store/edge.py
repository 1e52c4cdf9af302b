"""The store's edge: `sqlite3` errors become `StoreError` here and nowhere else.

Store functions that the layers above call are wrapped with `translated`, and callers that
need a transaction spanning several store calls use `transaction` from here, so nothing above
`store/` ever sees (or catches) a `sqlite3` exception.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

import aiosqlite

from mailer.errors import StoreError
from mailer.store import db

P = ParamSpec("P")
T = TypeVar("T")


def translated(what: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an async store function: a `sqlite3.Error` becomes a one-line StoreError
    naming `what` was being done."""

    def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await function(*args, **kwargs)
            except sqlite3.Error as exc:
                raise StoreError(f"{what}: database error: {exc}") from exc

        return wrapper

    return decorate


@asynccontextmanager
async def transaction(conn: aiosqlite.Connection, what: str) -> AsyncIterator[None]:
    """`db.transaction` (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception) with its own
    sqlite3 errors (a lock held too long, a full disk) raised as StoreError."""
    try:
        async with db.transaction(conn, what):
            yield
    except sqlite3.Error as exc:
        raise StoreError(f"{what}: database error: {exc}") from exc
