"""The store's edge: `translated`, which turns a store function's driver errors (sqlite3 or
psycopg) into StoreError.

Store functions that the layers above call are wrapped with `translated` (a test checks every
public one), and `db.transaction` turns its own BEGIN and COMMIT failures into StoreError, so
nothing above `store/` ever sees (or catches) a driver's exception.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from mailer.errors import StoreError
from mailer.store.engine import DRIVER_ERRORS

P = ParamSpec("P")
T = TypeVar("T")


def translated(what: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an async store function: a driver's error becomes a one-line StoreError
    naming `what` was being done."""

    def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await function(*args, **kwargs)
            except DRIVER_ERRORS as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise StoreError(f"{what}: database error: {first}") from exc

        return wrapper

    return decorate
