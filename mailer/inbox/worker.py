"""The inbox worker: one mailbox as a part of the daemon, with the one lifecycle every part
has (`mailer.lifecycle.worker`):

    InboxWorker.run_once()   connect, one pass, disconnect: `mailer inbox process` (the burst)
    InboxWorker.run(stop)    one connection's life: connect, pass, IDLE, pass, ... until `stop`;
                             `mailer run` runs it under `mailer.lifecycle.supervise`, which
                             reconnects with backoff after any failure

`inbox_worker` builds the `[imap]` mailbox's, `bounces_worker` the `[bounces.imap]` one's (reports
only). Each mailbox is read by one daemon at a time, the holder of its lease
(`mailer.inbox.lease`): `run` stands by until it holds it, and a burst finding it held by a
daemon leaves the mailbox to that daemon. Both lifecycles go through `processor.run_pass`, so a
request is handled the same way in both. The session re-issues IDLE before RFC 2177's 29-minute
limit and polls where the server lacks IDLE. A lost connection, a BYE or a server restart only
costs a reconnect with backoff; nothing is lost because the database, not the connection, knows
where the worker got to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailer.backoff import SERVER_RECONNECT, Backoff
from mailer.bounces.config import ReportConfig
from mailer.inbox.config import InboxConfig
from mailer.inbox.imap import ImapClient, ImapConfig
from mailer.inbox.lease import InboxLease, lease_name
from mailer.inbox.processor import Guard, PassReport, prepare_folders, run_pass, unguarded
from mailer.lifecycle.supervise import Part, supervise
from mailer.mail.verp import Verifier
from mailer.settings import ImapSettings, Settings
from mailer.store.db import Connection, Location, open_db

log = logging.getLogger(__name__)

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


def inbox_config(settings: Settings) -> InboxConfig:
    return InboxConfig(
        folder=settings.imap.folder,
        processed_folder=settings.imap.processed_folder,
        review_folder=settings.imap.review_folder,
        subject=settings.unsubscribe.subject,
        categories=settings.unsubscribe.categories,
        own_addresses=settings.own_addresses,
        max_message_bytes=settings.imap.max_message_bytes,
        fetch_batch=settings.imap.fetch_batch,
        confirmation_interval_h=settings.unsubscribe.confirmation_interval_h,
        authserv_id=settings.imap.authserv_id,
        # Reports are read where they arrive: here, unless `[bounces.imap]` is their mailbox.
        reports=report_config(settings) if settings.bounces.imap is None else None,
    )


def report_config(settings: Settings) -> ReportConfig:
    return ReportConfig(
        verifier=Verifier(bounce_address=settings.bounces.address,
                          secret=settings.campaigns.secret),
        bounces=settings.bounces)


def bounces_inbox_config(settings: Settings) -> InboxConfig | None:
    """The pass over the `[bounces.imap]` mailbox: reports only, never requests."""
    mailbox = settings.bounces.imap
    if mailbox is None:
        return None
    return InboxConfig(
        folder=mailbox.folder, processed_folder=mailbox.processed_folder,
        review_folder=mailbox.review_folder, subject=settings.unsubscribe.subject,
        categories=settings.unsubscribe.categories, own_addresses=settings.own_addresses,
        max_message_bytes=mailbox.max_message_bytes, fetch_batch=mailbox.fetch_batch,
        confirmation_interval_h=settings.unsubscribe.confirmation_interval_h,
        reports=report_config(settings), requests=False, account="bounces")


class InboxWorker:
    """One mailbox's part of the daemon (see the module docstring); opens its own database
    connection per session, so its transactions never interleave with another part's."""

    # The IMAP sessions reconnect quickly whatever the outage's length.
    policy: Backoff = SERVER_RECONNECT

    def __init__(
        self, db_location: Location, imap: ImapConfig, config: InboxConfig, timing: WatchTiming, *,
        part: Part, on_pass: Callable[[PassReport], None] = lambda report: None,
        on_duration: Callable[[float], None] | None = None, lease: InboxLease | None = None,
        on_standby: Callable[[], None] = lambda: None,
    ) -> None:
        self.db_location = db_location
        self.imap = imap
        self.config = config
        self.timing = timing
        self.part = part
        self.on_pass = on_pass
        self.on_duration = on_duration
        self.lease = lease or InboxLease(db_location, lease_name(config), clock=part.clock)
        self.on_standby = on_standby  # another daemon reads the mailbox: this one is ready too

    async def run_once(self) -> PassReport:
        """One pass, unless a daemon holds the mailbox's lease (it reads the mailbox then)."""
        async with open_db(self.db_location) as conn:
            if not await self.lease.try_take(conn):
                log.info("%s: read by the daemon holding its lease; no pass here",
                         self.config.state_key)
                return PassReport()
            try:
                return await process_once(conn, self.imap, self.config, guard=self.lease.check)
            finally:
                await self.lease.release(conn)

    def _standing_by(self) -> None:
        # Healthy: `mailer status` shows it running, with `lease: standing by`.
        self.part.state.details["lease"] = "standing by"
        self.part.running()
        self.on_standby()

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by until this daemon holds the lease, then watch the mailbox until `stop`
        (or until the lease is lost: StoreError, and the supervisor starts standing by)."""
        async with open_db(self.db_location) as conn:
            self.part.state.details["lease"] = "taking"
            if not await self.lease.wait_for_turn(conn, stop, self._standing_by):
                return
            self.part.state.details["lease"] = "held"
            try:
                async with self.lease.held(conn, stop) as session_stop:
                    await watch_session(conn, self.imap, self.config, self.timing, session_stop,
                                        self.on_pass, part=self.part,
                                        on_duration=self.on_duration, guard=self.lease.check)
            finally:
                self.part.state.details["lease"] = "released"


def inbox_worker(
    settings: Settings, part: Part, *,
    on_pass: Callable[[PassReport], None] = lambda report: None,
    on_duration: Callable[[float], None] | None = None,
    on_standby: Callable[[], None] = lambda: None,
) -> InboxWorker:
    """The `[imap]` mailbox: requests, and reports unless `[bounces.imap]` has them."""
    s = settings.imap
    config = inbox_config(settings)
    return InboxWorker(settings.database.location, imap_config(settings), config,
                       WatchTiming(idle_timeout_s=s.idle_timeout_s,
                                   poll_interval_s=s.poll_interval_s),
                       part=part, on_pass=on_pass, on_duration=on_duration,
                       on_standby=on_standby,
                       lease=InboxLease(settings.database.location, lease_name(config),
                                        ttl_s=s.lease_ttl_s, clock=part.clock))


def bounces_worker(
    settings: Settings, part: Part, *,
    on_pass: Callable[[PassReport], None] = lambda report: None,
) -> InboxWorker | None:
    """The `[bounces.imap]` mailbox (reports only), or None when it is not set."""
    mailbox = settings.bounces.imap
    imap, config = bounces_imap_config(settings), bounces_inbox_config(settings)
    if mailbox is None or imap is None or config is None:
        return None
    return InboxWorker(settings.database.location, imap, config,
                       WatchTiming(idle_timeout_s=mailbox.idle_timeout_s,
                                   poll_interval_s=mailbox.poll_interval_s),
                       part=part, on_pass=on_pass,
                       lease=InboxLease(settings.database.location, lease_name(config),
                                        ttl_s=mailbox.lease_ttl_s, clock=part.clock))


async def process_once(
    conn: Connection, imap: ImapConfig, config: InboxConfig, *, guard: Guard = unguarded
) -> PassReport:
    """Connect, make one pass, disconnect."""
    client = await ImapClient.connect(imap)
    try:
        await prepare_folders(client, config)
        return await run_pass(client, conn, config, guard=guard)
    finally:
        await client.close()


async def watch(
    conn: Connection,
    imap: ImapConfig,
    config: InboxConfig,
    timing: WatchTiming,
    stop: asyncio.Event,
    on_pass: Callable[[PassReport], None] = lambda report: None,
    part: Part | None = None,
    *,
    idling: asyncio.Event | None = None,
) -> None:
    """Keep the inbox processed until `stop` is set; survives any IMAP or database failure
    by starting a new session under `supervise` (backoff from `mailer.backoff.RECONNECT`).
    `idling` is set while the session waits in an accepted IDLE (see `ImapClient.idle`)."""
    part = part or Part("inbox")
    await supervise(part, lambda: watch_session(conn, imap, config, timing, stop, on_pass,
                                                part=part, idling=idling), stop)


async def watch_session(
    conn: Connection,
    imap: ImapConfig,
    config: InboxConfig,
    timing: WatchTiming,
    stop: asyncio.Event,
    on_pass: Callable[[PassReport], None] = lambda report: None,
    *,
    part: Part | None = None,
    on_duration: Callable[[float], None] | None = None,
    idling: asyncio.Event | None = None,
    guard: Guard = unguarded,
) -> None:
    """One connection's life: connect, pass, IDLE (or poll), pass, ... until `stop` is set.

    Raises on any failure (ImapError, a database error) and leaves reconnecting to the
    supervisor. A connection that stops answering without closing is caught by the command
    timeout: each IDLE ends after `idle_timeout_s` with DONE and a pass, and those commands
    time out after `timeout_s` on a dead connection, so a stuck session lasts at most
    `idle_timeout_s + timeout_s`."""
    client = await ImapClient.connect(imap)
    try:
        await prepare_folders(client, config)
        idle = "IDLE" in client.capabilities
        log.info("watching %s on %s:%s (%s)", config.folder, imap.host, imap.port,
                 "IDLE" if idle else "polling")
        while not stop.is_set():
            started = time.monotonic()
            report = await run_pass(client, conn, config, guard=guard)
            if on_duration is not None:
                on_duration(time.monotonic() - started)
            if part is not None:
                part.succeeded(last_pass_at=part.clock.now().isoformat(timespec="seconds"),
                               connected=True, mode="IDLE" if idle else "polling",
                               left_to_retry=report.failed)
            on_pass(report)
            if idle:
                await _until_stopped(client.idle(timing.idle_timeout_s, idling=idling), stop)
            else:
                await _until_stopped(asyncio.sleep(timing.poll_interval_s), stop)
    finally:
        if part is not None:
            part.state.details["connected"] = False
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
