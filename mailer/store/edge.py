"""The store's edge: `translated`, which turns a store function's `sqlite3` errors into StoreError.

Store functions that the layers above call are wrapped with `translated` (a test checks every
public one), and `db.transaction` turns its own BEGIN and COMMIT failures into StoreError, so
nothing above `store/` ever sees (or catches) a `sqlite3` exception.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from mailer.errors import StoreError

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
