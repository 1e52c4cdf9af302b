"""The inbox worker's lifecycles: one burst pass (`mailer inbox process`) and the watch loop
that `mailer run` owns (connect, pass, IDLE, pass, ... reconnecting after any failure).

Both go through `processor.run_pass`, so a request is handled the same way in both. The loop
re-issues IDLE before RFC 2177's 29-minute limit and polls where the server lacks IDLE. A lost
connection, a BYE or a server restart only costs a reconnect with backoff; nothing is lost
because the database, not the connection, knows where the worker got to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite

from mailer.inbox.imap import ImapClient, ImapConfig, ImapError
from mailer.inbox.processor import PassReport, prepare_folders, run_pass
from mailer.inbox.rules import InboxRules, ReportRules
from mailer.settings import ImapSettings, Settings
from mailer.verp import Verifier

log = logging.getLogger(__name__)

_RECONNECT_MIN_S = 1.0
_RECONNECT_MAX_S = 60.0


@dataclass(frozen=True)
class WatchTiming:
    idle_timeout_s: float
    poll_interval_s: float


def imap_config(settings: Settings) -> ImapConfig:
    return _config(settings.imap)


def bounces_imap_config(settings: Settings) -> ImapConfig | None:
    """The `[bounces.imap]` mailbox, or None when reports arrive in `[imap]`'s."""
    return _config(settings.bounces.imap) if settings.bounces.imap is not None else None


def _config(s: ImapSettings) -> ImapConfig:
    return ImapConfig(host=s.host, port=s.port, security=s.security, username=s.username,
                      password=s.password, ca_file=str(s.ca_file) if s.ca_file else None,
                      timeout_s=s.timeout_s)


def inbox_rules(settings: Settings) -> InboxRules:
    return InboxRules(
        folder=settings.imap.folder,
        processed_folder=settings.imap.processed_folder,
        review_folder=settings.imap.review_folder,
        subject=settings.unsubscribe.subject,
        categories=settings.unsubscribe.categories,
        own_addresses=settings.own_addresses,
        max_message_bytes=settings.imap.max_message_bytes,
        fetch_batch=settings.imap.fetch_batch,
        confirmation_interval_h=settings.unsubscribe.confirmation_interval_h,
        # Reports are read where they arrive: here, unless `[bounces.imap]` is their mailbox.
        reports=report_rules(settings) if settings.bounces.imap is None else None,
    )


def report_rules(settings: Settings) -> ReportRules:
    return ReportRules(
        verifier=Verifier(bounce_address=settings.bounces.address,
                          secret=settings.campaigns.secret),
        bounces=settings.bounces)


def bounces_rules(settings: Settings) -> InboxRules | None:
    """The pass over the `[bounces.imap]` mailbox: reports only, never requests."""
    mailbox = settings.bounces.imap
    if mailbox is None:
        return None
    return InboxRules(
        folder=mailbox.folder, processed_folder=mailbox.processed_folder,
        review_folder=mailbox.review_folder, subject=settings.unsubscribe.subject,
        categories=settings.unsubscribe.categories, own_addresses=settings.own_addresses,
        max_message_bytes=mailbox.max_message_bytes, fetch_batch=mailbox.fetch_batch,
        confirmation_interval_h=settings.unsubscribe.confirmation_interval_h,
        reports=report_rules(settings), requests=False, account="bounces")


async def process_settings_once(conn: aiosqlite.Connection, settings: Settings) -> PassReport:
    """`mailer inbox process`: one pass over `[imap]`, and over `[bounces.imap]` if set."""
    report = await process_once(conn, imap_config(settings), inbox_rules(settings))
    bounces = bounces_rules(settings)
    config = bounces_imap_config(settings)
    if bounces is not None and config is not None:
        report.add(await process_once(conn, config, bounces))
    return report


async def process_once(
    conn: aiosqlite.Connection, config: ImapConfig, rules: InboxRules
) -> PassReport:
    """Connect, make one pass, disconnect."""
    client = await ImapClient.connect(config)
    try:
        await prepare_folders(client, rules)
        return await run_pass(client, conn, rules)
    finally:
        await client.close()


async def watch(
    conn: aiosqlite.Connection,
    config: ImapConfig,
    rules: InboxRules,
    timing: WatchTiming,
    stop: asyncio.Event,
    on_pass: Callable[[PassReport], None] = lambda report: None,
) -> None:
    """Keep the inbox processed until `stop` is set; survives any IMAP failure."""
    delay = _RECONNECT_MIN_S
    while not stop.is_set():
        client: ImapClient | None = None
        try:
            client = await ImapClient.connect(config)
            await prepare_folders(client, rules)
            log.info("watching %s on %s:%s (%s)", rules.folder, config.host, config.port,
                     "IDLE" if "IDLE" in client.capabilities else "polling")
            delay = _RECONNECT_MIN_S
            while not stop.is_set():
                on_pass(await run_pass(client, conn, rules))
                if "IDLE" in client.capabilities:
                    await _until_stopped(client.idle(timing.idle_timeout_s), stop)
                else:
                    await _until_stopped(asyncio.sleep(timing.poll_interval_s), stop)
        except ImapError as exc:
            log.warning("IMAP: %s; reconnecting in %.0f s", exc, delay)
            await _sleep_unless_stopped(delay, stop)
            delay = min(delay * 2, _RECONNECT_MAX_S)
        except sqlite3.OperationalError as exc:
            # Locked for longer than the busy timeout, or the disk is full: the batch rolled
            # back and nothing was moved, so the next pass simply redoes it.
            log.warning("database: %s; retrying in %.0f s", exc, delay)
            await _sleep_unless_stopped(delay, stop)
            delay = min(delay * 2, _RECONNECT_MAX_S)
        finally:
            if client is not None:
                await client.close()


async def _until_stopped(awaitable: Awaitable[object], stop: asyncio.Event) -> None:
    """Await `awaitable` unless `stop` is set first, in which case it is cancelled."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leftovers = {t for t in (task, stopper) if not t.done()}
        for pending in leftovers:
            pending.cancel()
        if leftovers:
            # asyncio.wait never raises the children's CancelledError, only our own.
            await asyncio.wait(leftovers)
    if task.done() and not task.cancelled():
        task.result()  # re-raise ConnectionLost and friends


async def _sleep_unless_stopped(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
