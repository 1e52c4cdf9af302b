"""`mailer run`: the daemon that owns the long-running tasks.

    inbox watcher  (IMAP IDLE -> requests honoured, reports recorded within seconds)
    bounces watcher (only with `[bounces.imap]`: the same pass over that mailbox, reports only)
    outbox sender  (confirmations, woken by the watcher, retried with backoff)
    campaign scheduler (due campaigns, one sender at a time per campaign, via a lease)

All three live in one `asyncio.TaskGroup`; each has its own database connection, because a
transaction on a shared aiosqlite connection would interleave with another task's. SIGINT and
SIGTERM set one `stop` event: every loop finishes the unit of work in hand, then returns, and
the daemon exits 0. An unexpected crash of any task stops the others and exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import Awaitable

from mailer.campaigns.scheduler import scheduler_loop
from mailer.inbox.processor import PassReport
from mailer.inbox.worker import (
    WatchTiming,
    bounces_imap_config,
    bounces_rules,
    imap_config,
    inbox_rules,
    watch,
)
from mailer.outbox import confirmation_settings, send_due
from mailer.settings import Settings
from mailer.store.db import open_db

log = logging.getLogger(__name__)

OUTBOX_INTERVAL_S = 30.0


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set)."""
    stop = stop or asyncio.Event()
    wake_outbox = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _on_signal, sig, stop)
            installed.append(sig)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_inbox_task(settings, stop, wake_outbox), name="inbox")
            if settings.bounces.imap is not None:
                group.create_task(_bounces_task(settings, stop), name="bounces")
            group.create_task(_guard("outbox", _outbox_task(settings, stop, wake_outbox)),
                              name="outbox")
            group.create_task(_guard("campaigns", scheduler_loop(settings, stop)),
                              name="campaigns")
        log.info("mailer stopped")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("%s received: finishing work in hand, then stopping", sig.name)
    stop.set()


async def _guard(name: str, work: Awaitable[None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.exception("%s task crashed; stopping the daemon", name)
        raise


async def _inbox_task(settings: Settings, stop: asyncio.Event, wake: asyncio.Event) -> None:
    def after_pass(report: PassReport) -> None:
        if report.confirmations:
            wake.set()

    async with open_db(settings.database.path) as conn:
        timing = WatchTiming(idle_timeout_s=settings.imap.idle_timeout_s,
                             poll_interval_s=settings.imap.poll_interval_s)
        await _guard("inbox", watch(conn, imap_config(settings), inbox_rules(settings), timing,
                                    stop, after_pass))


async def _bounces_task(settings: Settings, stop: asyncio.Event) -> None:
    config, rules, mailbox = (bounces_imap_config(settings), bounces_rules(settings),
                              settings.bounces.imap)
    assert config is not None and rules is not None and mailbox is not None
    async with open_db(settings.database.path) as conn:
        timing = WatchTiming(idle_timeout_s=mailbox.idle_timeout_s,
                             poll_interval_s=mailbox.poll_interval_s)
        await _guard("bounces", watch(conn, config, rules, timing, stop))


async def _outbox_task(settings: Settings, stop: asyncio.Event, wake: asyncio.Event) -> None:
    config = confirmation_settings(settings)
    async with open_db(settings.database.path) as conn:
        while not stop.is_set():
            try:
                report = await send_due(conn, config)
            except sqlite3.OperationalError as exc:  # locked or full: try again next round
                log.warning("outbox: database: %s", exc)
            else:
                if report.sent or report.failed or report.retrying:
                    log.info("outbox: %s sent, %s to retry, %s failed",
                             report.sent, report.retrying, report.failed)
            await _wait_any(stop, wake, OUTBOX_INTERVAL_S)
            wake.clear()


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.wait(waiters)


