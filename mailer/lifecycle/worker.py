"""The one lifecycle every long-running part of `mailer run` has (arq's worker, in small).

    run(stop)    one session: open what it needs, work until `stop` is set, return; raise on
                 a failure. The daemon runs it under `supervise`, which records the failure on
                 `part`, backs off on `policy` and starts another session.
    run_once()   one unit of the same work, then return what it did: the burst mode
                 (`mailer inbox process` is the inbox and outbox parts' `run_once`, from cron).

A pipeline part (`Worker`) has both; a listener (`Supervised` only) serves until stopped and
has no unit of work to do once.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, TypeVar

from mailer.backoff import Backoff
from mailer.lifecycle.supervise import Part, supervise

T_co = TypeVar("T_co", covariant=True)


class Supervised(Protocol):
    @property
    def part(self) -> Part:
        """Its state, as the heartbeat records it and `mailer status` shows it."""
        ...

    @property
    def policy(self) -> Backoff:
        """The backoff between failed sessions."""
        ...

    async def run(self, stop: asyncio.Event) -> None: ...


class Worker(Supervised, Protocol[T_co]):
    async def run_once(self) -> T_co: ...


async def run_supervised(worker: Supervised, stop: asyncio.Event) -> None:
    """`worker.run(stop)` again and again until `stop` is set (see `supervise`)."""
    await supervise(worker.part, lambda: worker.run(stop), stop, policy=worker.policy)
