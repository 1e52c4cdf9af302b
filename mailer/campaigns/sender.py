"""Sending one campaign: lease, ledger, consent check, SMTP pool, rate limit and retries.

The ledger (`campaign_recipients`) is the truth, and every step is ordered so that a crash at
any point neither mails anyone twice (beyond the messages literally in flight) nor misses
anyone:

1. **Lease.** Inside one BEGIN IMMEDIATE: take the lease `campaign:{id}` (a conditional
   upsert that only succeeds if it is free or expired), return rows a crashed holder left in
   'sending' to pending (they were in flight when it died: at most `max_connections` of them
   were delivered and will be delivered again), snapshot the audience on the first run, and
   mark the campaign 'sending'. The lease is renewed every `lease_ttl_s / 4`; a worker only
   starts an SMTP transaction while the lease has more than a quarter of its time left, so a
   second process can only take over after this one has stopped starting new sends.
2. **Claim.** A feeder claims `batch_size` pending rows at a time with one
   `UPDATE ... SET status = 'sending' ... RETURNING` and queues their ids; it claims the next
   batch when the queue runs low, so memory stays flat whatever the audience size.
3. **Consent, just before the send.** One asyncio worker per SMTP connection
   (`max_connections` of them, each keeping its connection open for many messages) takes an
   id, waits for its connection and the rate limiter, and only then reads the customer's row
   (`audience.ConsentGate`: a synchronous primary-key SELECT of a few microseconds on a
   read-only WAL connection, no thread hand-off). Between that read and the SMTP transaction
   there is only the rendering of this one message and, usually, one turn of the event loop
   for the previous commit (if that wait takes more than `_FRESH_S`, 5 ms, the row is read
   again). So an opt-out committed before the read is always honoured; only one committed in
   the fraction of a millisecond after it can race a send. A batch-level check would leave
   the decision tens of milliseconds stale for no measurable gain: the per-message read costs
   about 1% of a message's CPU. The same read returns the campaign's status, so a pause or
   cancel by another process stops every worker before its next message.
4. **Send** with `max_attempts` tries: 4xx replies, dropped connections and timeouts are
   retried after an exponential backoff on a fresh connection (re-checking consent first); a
   5xx marks the recipient failed with the server's reply.
5. **Record.** Results go to a group committer (`_Ledger`) that writes every result recorded
   since its last flush in one UPDATE ... FROM (VALUES ...) statement, on the loop's thread
   with no busy wait (tens of microseconds), falling back to aiosqlite when another writer
   holds the lock. A worker does not start its next SMTP transaction until its previous
   result is committed, and the flush happens when some worker waits for it, so results of
   several connections share a commit. At any instant each worker has at most one message
   delivered-but-unrecorded or in flight: a kill -9 re-sends at most `max_connections`
   messages.
6. **Finish.** Workers stop on completion, on `stop` (Ctrl-C, daemon shutdown), when the
   campaign is paused or cancelled elsewhere, when failures pass `failure_threshold`, or when
   the SMTP server stays unreachable. Unsent claimed rows go back to pending and the final
   status is written in the same transaction that releases the lease; 'sent' only when no
   pending or sending rows remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

import aiosmtplib
import aiosqlite

from mailer import smtp, tokens
from mailer.campaigns.audience import ConsentGate, snapshot
from mailer.campaigns.model import (
    Campaign,
    CampaignInvalid,
    CampaignNotFound,
    CampaignRefused,
    Counts,
    backoff_s,
    failure_reason,
    failure_threshold_passed,
    next_status,
)
from mailer.campaigns.templates import CampaignTemplate, RenderContext, TemplateError
from mailer.outgoing import CampaignHeaders, CampaignMessageBuilder, HeaderInjection
from mailer.settings import Settings
from mailer.store import campaigns as store
from mailer.store.campaigns import Recipient, RecipientResult
from mailer.store.db import StoreError, transaction

log = logging.getLogger(__name__)

OnStop = Literal["pause", "leave"]
_Final = Literal["complete", "pause", "leave", "lost"]


@dataclass(frozen=True)
class SendConfig:
    """Everything a campaign send needs, taken from the settings once."""

    db_path: Path
    smtp: smtp.SmtpConfig
    sender: str
    unsubscribe_address: str
    unsubscribe_url: str
    secret: str
    templates_dir: Path | None
    max_connections: int = 4
    rate_limit: float = 0.0
    max_attempts: int = 5
    batch_size: int = 500
    failure_threshold: float = 0.2
    failure_min_sample: int = 50
    lease_ttl_s: float = 20.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0

    @functools.cached_property
    def envelope_from(self) -> str:
        return parseaddr(self.sender)[1] or self.sender

    @functools.cached_property
    def domain(self) -> str:
        return self.envelope_from.rpartition("@")[2] or "localhost"


def send_config(settings: Settings) -> SendConfig:
    s, c = settings.smtp, settings.campaigns
    return SendConfig(
        db_path=settings.database.path,
        smtp=smtp.smtp_config(settings),
        sender=s.sender,
        unsubscribe_address=settings.unsubscribe.address,
        unsubscribe_url=c.unsubscribe_url,
        secret=c.secret,
        templates_dir=settings.templates.dir,
        max_connections=s.max_connections,
        rate_limit=s.rate_limit,
        max_attempts=s.max_attempts,
        batch_size=c.batch_size,
        failure_threshold=c.failure_threshold,
        failure_min_sample=c.failure_min_sample,
    )


def require_unsubscribe(config: SendConfig) -> None:
    """Refuse to build campaign mail without what its one-click opt-out link needs."""
    if not config.secret:
        raise CampaignInvalid(
            "[campaigns] secret: missing (set MAILER_SECRET); every campaign message must "
            "carry a signed one-click unsubscribe link"
        )
    if not config.unsubscribe_url:
        raise CampaignInvalid(
            "[campaigns] unsubscribe_url: missing; every campaign message must carry a "
            "one-click unsubscribe link"
        )
    if not config.unsubscribe_url.startswith("https://"):
        # RFC 8058 §3.1: the one-click URI must be HTTPS.
        raise CampaignInvalid(
            f'[campaigns] unsubscribe_url: one-click unsubscribe needs an https:// URL, got '
            f'"{config.unsubscribe_url}"'
        )


class CampaignMessages:
    """A campaign's template compiled once; per recipient only render and build."""

    def __init__(self, campaign: Campaign, config: SendConfig, *, date: datetime) -> None:
        require_unsubscribe(config)
        try:
            self._template = CampaignTemplate.load(config.templates_dir, campaign.template,
                                                   campaign.subject)
            # The files may have changed since the campaign was created: check them again
            # now, rather than fail every recipient one by one.
            self._template.check()
        except TemplateError as exc:
            raise CampaignInvalid(f"campaign {campaign.id}: {exc}") from exc
        self._builder = CampaignMessageBuilder(
            CampaignHeaders(campaign_id=campaign.id, sender=config.sender, domain=config.domain,
                            unsubscribe_address=config.unsubscribe_address, kind=campaign.kind),
            date=date,
        )
        self._subject = campaign.subject
        self._kind = campaign.kind
        self._secret = config.secret
        self._base_url = config.unsubscribe_url
        self._unsubscribe_address = config.unsubscribe_address

    def build(self, *, customer_id: int, email: str, name: str, company: str,
              test: bool = False) -> bytes:
        """One recipient's message. Raises TemplateError or HeaderInjection."""
        link = tokens.unsubscribe_link(
            self._base_url, tokens.unsubscribe_token(self._secret, customer_id, self._kind))
        rendered = self._template.render(RenderContext(
            customer_name=name, customer_email=email, customer_company=company,
            campaign_subject=self._subject, unsubscribe_url=link,
            unsubscribe_address=self._unsubscribe_address))
        return self._builder.build(customer_id=customer_id, to_address=email, to_name=name,
                                   rendered=rendered, unsubscribe_url=link, test=test)


@dataclass
class SendProgress:
    """Live numbers of a send, updated by the sender; read by a progress display."""

    audience: int = 0
    settled_before: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    started_monotonic: float = field(default_factory=time.monotonic)

    @property
    def settled(self) -> int:
        return self.settled_before + self.sent + self.failed + self.skipped


@dataclass(frozen=True)
class SendOutcome:
    campaign_id: int
    status: str
    reason: str
    counts: Counts
    sent: int
    failed: int
    skipped: int


def new_holder() -> str:
    """A lease holder id: random, with the pid for whoever reads the leases table."""
    return f"{secrets.token_hex(6)}-pid{os.getpid()}"


def lease_name(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


class RateLimiter:
    """A token bucket shared by all workers: `rate_per_s` messages a second, bursts of
    `burst`; a rate of 0 means no limit."""

    def __init__(self, rate_per_s: float, burst: float = 1.0) -> None:
        self._rate = rate_per_s
        self._burst = max(burst, 1.0)
        self._tokens = self._burst
        self._updated = time.monotonic()

    @property
    def limited(self) -> bool:
        return self._rate > 0

    async def acquire(self) -> None:
        if self._rate <= 0:
            return
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self._rate)


async def send_campaign(
    conn: aiosqlite.Connection,
    config: SendConfig,
    campaign_id: int,
    *,
    stop: asyncio.Event,
    on_stop: OnStop = "pause",
    progress: SendProgress | None = None,
    holder: str | None = None,
) -> SendOutcome:
    """Send (or go on sending) one campaign until it is done, stopped, paused or failing.

    `stop` ends the run cleanly: in-flight messages finish, the rest go back to pending, and
    the campaign is paused (`on_stop="pause"`, the foreground command) or left 'sending' for
    the next daemon (`"leave"`). Raises CampaignNotFound, CampaignRefused (wrong status, or
    another process holds the lease) or CampaignInvalid (template, settings).
    """
    try:
        return await _send_campaign(conn, config, campaign_id, stop=stop, on_stop=on_stop,
                                    progress=progress, holder=holder)
    except sqlite3.Error as exc:
        # The run stops where it is; its lease expires and the next run takes over.
        raise StoreError(f"campaign {campaign_id}: database error: {exc}") from exc


async def _send_campaign(
    conn: aiosqlite.Connection, config: SendConfig, campaign_id: int, *, stop: asyncio.Event,
    on_stop: OnStop, progress: SendProgress | None, holder: str | None,
) -> SendOutcome:
    campaign = await store.get_campaign(conn, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    next_status(campaign, "send")
    messages = CampaignMessages(campaign, config, date=datetime.now(UTC))
    holder = holder or new_holder()
    name = lease_name(campaign_id)
    async with transaction(conn):
        now_s = time.time()
        if not await store.acquire_lease(conn, name, holder, now_s=now_s,
                                         ttl_s=config.lease_ttl_s):
            lease = await store.lease_of(conn, name)
            until = (datetime.fromtimestamp(lease[1], UTC).isoformat(timespec="seconds")
                     if lease else "?")
            raise CampaignRefused(
                f"campaign {campaign_id} is being sent by another process "
                f"({lease[0] if lease else '?'}, lease until {until})")
        # Re-read under the lock: another process may have finished or cancelled it.
        current = await store.get_campaign(conn, campaign_id)
        assert current is not None
        next_status(current, "send")
        requeued = await store.requeue_in_flight(conn, campaign_id)
        added = await snapshot(conn, current)
        await store.mark_started(conn, campaign_id)
        lease_expires = now_s + config.lease_ttl_s
    if requeued:
        log.warning("campaign %s: %s recipient(s) left in flight by an earlier run returned "
                    "to pending", campaign_id, requeued)
    if added:
        log.info("campaign %s: audience of %s taken", campaign_id, added)
    counts = await store.counts(conn, campaign_id)
    if progress is None:
        progress = SendProgress()
    progress.audience = counts.audience
    progress.settled_before = counts.audience - counts.pending
    log.info("campaign %s: sending to %s pending of %s recipient(s) with %s connection(s)",
             campaign_id, counts.pending, counts.audience, config.max_connections)
    run = _Run(conn, config, current, messages, holder=holder, lease_expires=lease_expires,
               progress=progress, stop=stop, on_stop=on_stop)
    return await run.run()


_MAX_GROUP = 200


class _Ledger:
    """Group commit of results: each flush writes, in one statement, every result recorded
    since the last flush.

    The fast path writes on the event loop's thread through a plain sqlite3 connection with
    no busy wait: a small UPDATE in WAL mode with synchronous=NORMAL takes tens of
    microseconds and no thread hand-off, so a worker waiting for its commit waits about one
    turn of the loop. If another writer holds the database lock (an import, the inbox worker)
    the batch goes through aiosqlite instead, which waits in its own thread. Checkpoints are
    left to the aiosqlite connection (wal_autocheckpoint=0 here), so they never run on the
    loop's thread either.
    """

    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock, campaign_id: int,
                 db_path: Path) -> None:
        self._conn = conn
        self._lock = lock
        self._campaign_id = campaign_id
        self._buffer: list[RecipientResult] = []
        self._flushed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = asyncio.Event()
        self._closing = False
        self._db_path = db_path
        self._writer: sqlite3.Connection | None = None

    def record(self, result: RecipientResult) -> asyncio.Future[None]:
        """Queue a result; the future resolves once it is committed. The flush happens when
        a worker waits for it (`wait`), so results from several connections share it."""
        self._buffer.append(result)
        if len(self._buffer) >= _MAX_GROUP:
            self._wake.set()
        return self._flushed

    async def wait(self, flushed: asyncio.Future[None]) -> None:
        if not flushed.done():
            self._wake.set()
            # Shielded: a worker cancelled while waiting must not cancel the flush.
            await asyncio.shield(flushed)
        else:
            flushed.result()

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        try:
            self._writer = sqlite3.connect(str(self._db_path), isolation_level=None)
            for pragma in ("busy_timeout = 0", "synchronous = NORMAL", "wal_autocheckpoint = 0"):
                self._writer.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self._db_path}: {exc}") from exc
        try:
            while True:
                # Look at the state before sleeping: one wake-up may stand for several
                # record/close calls.
                if self._buffer:
                    await self._flush()
                elif self._closing:
                    return
                else:
                    await self._wake.wait()
                    self._wake.clear()
        finally:
            self._writer.close()
            self._writer = None

    async def _flush(self) -> None:
        # One more turn of the loop lets the replies that have just arrived on the other
        # connections be recorded too: commits nearly halve, at ~100 microseconds of latency.
        await asyncio.sleep(0)
        batch, done = self._buffer, self._flushed
        self._buffer = []
        self._flushed = asyncio.get_running_loop().create_future()
        try:
            try:
                assert self._writer is not None
                store.record_results_now(self._writer, self._campaign_id, batch)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                async with self._lock:
                    await store.record_results(self._conn, self._campaign_id, batch)
        except Exception as exc:
            done.set_exception(exc)
            done.exception()  # retrieved here; workers awaiting it see it too
            raise
        done.set_result(None)


class _Run:
    """One process's run over one campaign, between taking and releasing its lease."""

    def __init__(
        self, conn: aiosqlite.Connection, config: SendConfig, campaign: Campaign,
        messages: CampaignMessages, *, holder: str, lease_expires: float,
        progress: SendProgress, stop: asyncio.Event, on_stop: OnStop,
    ) -> None:
        self.conn = conn
        self.config = config
        self.campaign = campaign
        self.messages = messages
        self.holder = holder
        self.lease = lease_name(campaign.id)
        self.lease_expires = lease_expires
        self.progress = progress
        self.stop = stop
        self.on_stop = on_stop
        self.db_lock = asyncio.Lock()
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.room = asyncio.Event()
        self.low_water = max(2 * config.max_connections, 8)
        self.halted = asyncio.Event()
        self.finished = asyncio.Event()
        self.final: _Final = "complete"
        self.reason = ""
        self.rate = RateLimiter(config.rate_limit)
        self.ledger = _Ledger(conn, self.db_lock, campaign.id, config.db_path)
        self.sent = self.failed = self.skipped = 0
        self.gate: ConsentGate | None = None

    def halt(self, final: _Final, reason: str) -> None:
        """Stop taking new work; the first reason wins."""
        if not self.halted.is_set():
            self.final, self.reason = final, reason
            self.halted.set()
            log.info("campaign %s: stopping: %s", self.campaign.id, reason)

    async def run(self) -> SendOutcome:
        with ConsentGate(self.config.db_path, self.campaign) as gate:
            self.gate = gate
            try:
                await self._run_tasks()
            except BaseExceptionGroup as group:
                # One task's failure (the database, most likely) is the run's failure; the
                # lease expires and the next run takes the claimed rows back.
                raise group.exceptions[0] from None
            finally:
                self.gate = None
        return await self._finish()

    async def _run_tasks(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_stop())
            group.create_task(self._renew_lease())
            ledger = group.create_task(self.ledger.run())
            feeder = group.create_task(self._feed())
            workers = [group.create_task(self._work(i))
                       for i in range(self.config.max_connections)]
            await asyncio.wait([feeder, *workers])
            # Every result is recorded by now; the ledger writes the last of them and ends.
            self.ledger.close()
            await asyncio.wait([ledger])
            self.finished.set()

    # --- background duties --------------------------------------------------------------

    async def _watch_stop(self) -> None:
        await _first(self.stop, self.finished)
        if self.stop.is_set() and not self.finished.is_set():
            self.halt("pause" if self.on_stop == "pause" else "leave",
                      "paused: interrupted" if self.on_stop == "pause" else "shutting down")

    async def _renew_lease(self) -> None:
        interval = self.config.lease_ttl_s / 4
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.finished.wait()
            if self.finished.is_set():
                return
            now = time.time()
            try:
                async with self.db_lock:
                    renewed = await store.renew_lease(self.conn, self.lease, self.holder,
                                                      now_s=now, ttl_s=self.config.lease_ttl_s)
            except sqlite3.Error as exc:
                # A busy database: the workers hold back until a renewal gets through.
                log.warning("campaign %s: cannot renew the sending lease: %s",
                            self.campaign.id, exc)
                continue
            if renewed:
                self.lease_expires = now + self.config.lease_ttl_s
            else:
                self.halt("lost", "the sending lease was taken by another process")
                return

    async def wait_for_lease(self) -> bool:
        """Wait while the lease is close to expiry (a renewal is overdue); False if halted."""
        margin = self.config.lease_ttl_s / 4
        while time.time() > self.lease_expires - margin:
            if self.halted.is_set():
                return False
            await asyncio.sleep(0.05)
        return not self.halted.is_set()

    # --- feeding and working ------------------------------------------------------------

    async def _feed(self) -> None:
        try:
            while not self.halted.is_set():
                while self.queue.qsize() > self.low_water and not self.halted.is_set():
                    self.room.clear()
                    await _first(self.room, self.halted)
                if self.halted.is_set():
                    return
                async with self.db_lock:
                    ids = await store.claim_batch(self.conn, self.campaign.id,
                                                  self.config.batch_size)
                if not ids:
                    return
                for customer_id in ids:
                    self.queue.put_nowait(customer_id)
        finally:
            for _ in range(self.config.max_connections):
                self.queue.put_nowait(None)

    async def _work(self, index: int) -> None:
        worker = _Worker(self, index)
        try:
            while not self.halted.is_set():
                try:
                    customer_id = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    customer_id = await self.queue.get()
                if self.queue.qsize() <= self.low_water:
                    self.room.set()
                if customer_id is None:
                    return
                result = await worker.deliver(customer_id)
                if result is not None:
                    worker.committed = self.record(result)
            # Claimed rows still queued stay 'sending' and go back to pending at the end.
        finally:
            await worker.close()

    def record(self, result: RecipientResult) -> asyncio.Future[None]:
        if result.status == "sent":
            self.sent += 1
            self.progress.sent += 1
        elif result.status == "failed":
            self.failed += 1
            self.progress.failed += 1
            # This run's share: a campaign resumed after a fix starts with a clean slate.
            this_run = Counts(sent=self.sent, failed=self.failed)
            if failure_threshold_passed(this_run, threshold=self.config.failure_threshold,
                                        min_sample=self.config.failure_min_sample):
                self.halt("pause", failure_reason(this_run, self.config.failure_threshold,
                                                  result.reply))
        elif result.status == "skipped":
            self.skipped += 1
            self.progress.skipped += 1
        log.debug("campaign %s customer %s: %s after %s attempt(s) %s", self.campaign.id,
                  result.customer_id, result.status, result.attempts, result.reply)
        return self.ledger.record(result)

    # --- finishing ----------------------------------------------------------------------

    async def _finish(self) -> SendOutcome:
        cid = self.campaign.id
        async with self.db_lock, transaction(self.conn):
            if self.final != "lost" and await store.holds_lease(self.conn, self.lease,
                                                                self.holder):
                await store.requeue_in_flight(self.conn, cid)
                if self.final == "pause":
                    await store.set_status(self.conn, cid, "paused", reason=self.reason,
                                           expected=("sending",))
                elif self.final == "complete" and await store.unsettled(self.conn, cid) == 0:
                    await store.set_status(self.conn, cid, "sent", reason="",
                                           expected=("sending",), finished=True)
                await store.release_lease(self.conn, self.lease, self.holder)
        campaign = await store.get_campaign(self.conn, cid)
        counts = await store.counts(self.conn, cid)
        assert campaign is not None
        elapsed = time.monotonic() - self.progress.started_monotonic
        log.info("campaign %s: %s; this run %s sent, %s failed, %s skipped in %.1f s; "
                 "%s pending", cid, campaign.status, self.sent, self.failed, self.skipped,
                 elapsed, counts.pending)
        return SendOutcome(campaign_id=cid, status=campaign.status,
                           reason=campaign.status_reason or self.reason, counts=counts,
                           sent=self.sent, failed=self.failed, skipped=self.skipped)


class _Worker:
    """One SMTP connection and the messages that go through it, one at a time."""

    def __init__(self, run: _Run, index: int) -> None:
        self.run = run
        self.index = index
        self.client: aiosmtplib.SMTP | None = None
        # The commit of this worker's last result: awaited before its next SMTP transaction.
        self.committed: asyncio.Future[None] | None = None

    def drop(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            client.close()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await smtp.close(client)

    async def _connect(self) -> aiosmtplib.SMTP | None:
        """The worker's connection, (re)opened with backoff; None if the run must stop."""
        run, config = self.run, self.run.config
        attempt = 0
        while self.client is None:
            if run.halted.is_set():
                return None
            attempt += 1
            try:
                async with asyncio.timeout(config.smtp.timeout_s * 2):
                    self.client = await smtp.connect(config.smtp)
            except smtp.PermanentSmtpError as exc:
                run.halt("pause", f"paused: SMTP server refused us: {exc}")
                return None
            except (smtp.TransientSmtpError, TimeoutError) as exc:
                if attempt >= config.max_attempts:
                    run.halt("pause", f"paused: SMTP server unavailable: {exc}")
                    return None
                delay = backoff_s(attempt, base_s=config.retry_base_s, max_s=config.retry_max_s)
                log.warning("campaign %s connection %s: %s; retrying in %.1f s",
                            run.campaign.id, self.index, exc, delay)
                await _sleep_unless(run.halted, delay)
        return self.client

    async def _prepare(
        self, customer_id: int
    ) -> tuple[Recipient, bytes] | RecipientResult | None:
        """Decide consent and build the message, right before the send; a result (skipped,
        failed) instead, or None if the run is stopping."""
        run = self.run
        assert run.gate is not None
        margin = run.config.lease_ttl_s / 4
        while True:
            if run.halted.is_set():
                return None
            if time.time() > run.lease_expires - margin and not await run.wait_for_lease():
                return None
            # The consent check: from here to the SMTP transaction, only building the
            # message and (usually) one turn of the event loop for the previous commit.
            verdict = run.gate.check(customer_id)
            if verdict.stop_reason:
                run.halt("leave", verdict.stop_reason)
                return None
            recipient = verdict.recipient
            if recipient is None:
                return RecipientResult(customer_id, "skipped", 0, verdict.skip_reason)
            try:
                message = run.messages.build(customer_id=customer_id, email=recipient.email,
                                             name=recipient.name, company=recipient.company)
            except (TemplateError, HeaderInjection) as exc:
                return RecipientResult(customer_id, "failed", 0, f"not sent: {exc}")
            if self.committed is None:
                return recipient, message
            # At most one delivered-but-unrecorded message per connection: wait for the
            # previous one's commit before this one goes out.
            waited_from = time.monotonic()
            await run.ledger.wait(self.committed)
            self.committed = None
            if time.monotonic() - waited_from <= _FRESH_S:
                return recipient, message
            # The database was busy and the wait long: decide consent again.

    async def deliver(self, customer_id: int) -> RecipientResult | None:
        """Send to one claimed recipient; the result to record, or None to leave the row
        claimed (the run is stopping; it goes back to pending at the end)."""
        run, config = self.run, self.run.config
        attempts = 0
        last_reply = ""
        while True:
            client = self.client if self.client is not None else await self._connect()
            if client is None:
                return _unsent(customer_id, attempts, last_reply)
            if run.rate.limited:
                await run.rate.acquire()
            prepared = await self._prepare(customer_id)
            if prepared is None:
                return _unsent(customer_id, attempts, last_reply)
            if isinstance(prepared, RecipientResult):
                return dataclasses.replace(prepared, attempts=attempts)
            recipient, message = prepared
            attempts += 1
            try:
                # aiosmtplib times out each command (MAIL, RCPT, DATA and the message).
                reply = await smtp.send(client, config.envelope_from, recipient.email,
                                        message, config.smtp.timeout_s)
            except smtp.PermanentSmtpError as exc:
                return RecipientResult(customer_id, "failed", attempts, str(exc))
            except (smtp.TransientSmtpError, TimeoutError) as exc:
                last_reply = str(exc) or f"SMTP to <{recipient.email}>: timed out"
                # The connection's state is unknown after a 4xx, a drop or a timeout: drop
                # it (a polite QUIT could wait on a stuck server) and start afresh.
                self.drop()
                if attempts >= config.max_attempts:
                    return RecipientResult(customer_id, "failed", attempts, last_reply)
                delay = backoff_s(attempts, base_s=config.retry_base_s,
                                  max_s=config.retry_max_s)
                log.info("campaign %s customer %s: %s; retry %s in %.1f s", run.campaign.id,
                         customer_id, last_reply, attempts + 1, delay)
                await _sleep_unless(run.halted, delay)
                continue
            return RecipientResult(customer_id, "sent", attempts, reply)


# How old a consent decision may be when its message goes out, at most (plus rendering).
_FRESH_S = 0.005


def _unsent(customer_id: int, attempts: int, last_reply: str) -> RecipientResult | None:
    # Attempts already made are kept; the row returns to pending either way.
    if attempts == 0:
        return None
    return RecipientResult(customer_id, "pending", attempts, last_reply)


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _sleep_unless(event: asyncio.Event, delay_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay_s):
            await event.wait()

