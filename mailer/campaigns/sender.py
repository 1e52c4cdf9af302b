"""Sending one campaign: the orchestration of lease, claims, consent, pool, ledger and finish.

The ledger (`campaign_recipients`) is the truth, and every step is ordered so that a crash at
any point neither mails anyone twice (beyond the messages literally in flight) nor misses
anyone:

1. **Lease.** Every daemon that is up sends the campaign, each under a lease of its own,
   `campaign:{id}:{holder}` (`campaigns.senders`). Inside one exclusive transaction: take
   it, return rows that a gone sender left in 'sending' to pending (its lease expired, or its
   process is seen dead on this host, as after a kill -9: at most `max_connections` of them
   were delivered and will be delivered again, so they go behind the fresh ones), snapshot
   the audience on the first run, and mark the campaign 'sending'. The lease is renewed every
   `lease_ttl_s / 4` (and gone senders looked for again); a worker only starts an SMTP
   transaction while the lease has more than a quarter of its time left, so another sender
   can only take back this one's rows after it has stopped starting new sends. Lease times
   are the database's clock on PostgreSQL (`store.leases.now_s`).
2. **Claim.** A feeder claims `batch_size` pending rows at a time with one
   `UPDATE ... SET status = 'sending', claimed_by = holder ... RETURNING` (on PostgreSQL over
   `SELECT ... FOR UPDATE SKIP LOCKED`, in a non-exclusive transaction: senders on several
   hosts never wait on each other, and the ledger's primary key keeps each recipient in one
   claim), least requeued first, and queues their ids; it claims the next batch when the
   queue runs low, so memory stays flat whatever the audience size. The rate limit is the
   campaign's: each sender takes `pool.rate_share` of it, counting the live sender leases at
   every renewal.
3. **Consent, just before the send.** One asyncio worker per SMTP connection
   (`max_connections` of them, each keeping its connection open for many messages) takes an
   id, waits for its connection and the rate limiter, and only then reads the customer's row,
   consent and whether the address is undeliverable in one statement
   (`store.consent.ConsentGate`: a synchronous primary-key SELECT of a few microseconds on a
   read-only WAL connection, no thread hand-off). Between that read and the SMTP transaction
   there is only the rendering (and DKIM signing) of this one message and, usually, one turn
   of the event loop for the previous commit (if the decision is more than `FRESH_S`, 5 ms,
   old by then, the row is read again; see `delivery`). So an opt-out committed before the
   read is always honoured; only one committed in the fraction of a millisecond after it can
   race a send. A batch-level check would leave the decision tens of milliseconds stale for no
   measurable gain: the per-message read costs about 1% of a message's CPU. On PostgreSQL a
   read is a round trip, so one query also reads the next few queued recipients, and such a
   read answers their checks only while it is at most `REUSE_S` (half of `FRESH_S`) old:
   every message still goes out on a decision at most `FRESH_S` old. The same read
   returns the campaign's status, so a pause or cancel by another process stops every worker
   before its next message.
4. **Send** with `max_attempts` tries: 4xx replies, dropped connections and timeouts are
   retried after `backoff.CAMPAIGN_SEND` on a fresh connection (re-checking consent first); a
   5xx marks the recipient failed with the server's reply.
5. **Record.** Results, each with the keyed Message-ID it went out with, go to a group
   committer (`store.ledger.Ledger`) that writes every result recorded
   since its last flush in one UPDATE ... FROM (VALUES ...) statement, on the loop's thread
   with no busy wait (tens of microseconds), falling back to aiosqlite when another writer
   holds the lock. A worker does not start its next SMTP transaction until its previous
   result is committed, and the flush happens when some worker waits for it, so results of
   several connections share a commit. At any instant each worker has at most one message
   delivered-but-unrecorded or in flight: a kill -9 re-sends at most `max_connections`
   messages.
6. **Finish.** Workers stop on completion, on `stop` (Ctrl-C, daemon shutdown), when the
   campaign is paused or cancelled elsewhere, when failures pass `failure_threshold`, when
   the SMTP server stays unreachable, or when the campaign's hard-bounce or complaint rate
   passes `[bounces]`'s limits (looked at before each batch is claimed: the reports arrive
   through the inbox pass while it sends). Its unsent claimed rows go back to pending and the
   final status is written in the same transaction that releases its lease; 'sent' only when
   no pending or sending rows remain, written by whichever sender sees that last (a sender
   that ends while others still have rows in flight leaves the campaign 'sending').

The parts live apart: `pool` (SMTP connections, rate limiting), `delivery` (one connection's
loop of messages), `messages` (render and build), `failures` (the auto-pause policy),
`senders` (the per-sender leases, taking back a gone sender's rows), `store.ledger`,
`store.consent` and `store.leases`. Lease times are the database's clock on PostgreSQL and the
`Clock` on SQLite, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Literal

from mailer.bounces.deliverability import pause_reason
from mailer.campaigns.delivery import Worker
from mailer.campaigns.failures import FailureTally
from mailer.campaigns.messages import CampaignMessages, SendConfig, send_config
from mailer.campaigns.model import Campaign, Counts, next_status
from mailer.campaigns.pool import RateLimiter, first, rate_share, sleep_unless
from mailer.campaigns.senders import (
    renew,
    requeue_abandoned,
    sender_lease,
    senders_prefix,
    take_back_abandoned,
)
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import CampaignInvalid, CampaignNotFound, StoreError
from mailer.mail.dkim_pool import SigningPool, signing
from mailer.store import campaigns as store
from mailer.store import deliverability as deliverability_store
from mailer.store import leases
from mailer.store.campaigns import PauseCause, RecipientResult
from mailer.store.consent import ConsentGate
from mailer.store.db import Connection, transaction
from mailer.store.leases import Holder, new_holder
from mailer.store.ledger import Ledger

__all__ = [
    "CampaignInvalid", "Holder", "SendConfig", "SendOutcome", "SendProgress", "new_holder",
    "send_campaign", "send_config",
]

log = logging.getLogger(__name__)

OnStop = Literal["pause", "leave"]
Ending = Literal["complete", "pause", "leave", "lost"]


@dataclass
class SendProgress:
    """Live numbers of a send, updated by the sender; read by a progress display."""

    audience: int = 0
    settled_before: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    started_monotonic: float = field(default_factory=SYSTEM_CLOCK.monotonic)

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
    paused_by: PauseCause = ""  # why, when `status` is "paused"


async def send_campaign(
    conn: Connection,
    config: SendConfig,
    campaign_id: int,
    *,
    stop: asyncio.Event,
    on_stop: OnStop = "pause",
    progress: SendProgress | None = None,
    holder: Holder | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> SendOutcome:
    """Send (or go on sending) one campaign until it is done, stopped, paused or failing.

    `stop` ends the run cleanly: in-flight messages finish, the rest go back to pending, and
    the campaign is paused (`on_stop="pause"`, the foreground command) or left 'sending' for
    the next daemon (`"leave"`). Other senders may send it at the same time (each its own
    `holder`, never two runs with one). Raises CampaignNotFound, CampaignRefused (wrong
    status), CampaignInvalid (template, settings) or
    StoreError (the database; the run stops where it is and the next run takes over).
    """
    campaign = await store.get_campaign(conn, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    next_status(campaign, "send")
    # Compiling and checking the template renders it once: off the event loop (up to a
    # second for a template that does too much; it is then refused).
    messages = await asyncio.to_thread(CampaignMessages, campaign, config, date=clock.now())
    holder = holder or new_holder()
    name = sender_lease(campaign_id, holder.id)
    # The local deadline counts from before the lease is written: never later than the
    # database's own.
    lease_expires = clock.time() + config.lease_ttl_s
    async with transaction(conn, f"campaign {campaign_id}"):
        now_s = await leases.now_s(conn, clock)
        await leases.acquire(conn, name, holder, now_s=now_s, ttl_s=config.lease_ttl_s)
        # Re-read under the lock: another process may have finished or cancelled it.
        current = await store.get_campaign(conn, campaign_id)
        assert current is not None
        next_status(current, "send")
        # Rows an earlier run of this same holder left (it failed) count as abandoned too.
        await store.requeue_claims_of(conn, campaign_id, holder.id)
        await requeue_abandoned(conn, campaign_id, now_s=now_s, me=holder)
        added = await store.snapshot_audience(conn, current)
        await store.mark_started(conn, campaign_id)
        senders = await leases.live_count(conn, senders_prefix(campaign_id), now_s=now_s)
    if added:
        log.info("campaign %s: audience of %s taken", campaign_id, added)
    counts = await store.counts(conn, campaign_id)
    if progress is None:
        progress = SendProgress()
    progress.audience = counts.audience
    progress.settled_before = counts.audience - counts.pending
    log.info("campaign %s: sending to %s pending of %s recipient(s) with %s connection(s), "
             "%s sender(s)", campaign_id, counts.pending, counts.audience,
             config.max_connections, senders)
    run = _Run(conn, config, current, messages, holder=holder, lease_expires=lease_expires,
               progress=progress, stop=stop, on_stop=on_stop, clock=clock)
    run.rate.set_rate(rate_share(config.rate_limit, senders))
    return await run.run()


class _Run:
    """One process's run over one campaign, between taking and releasing its lease."""

    def __init__(
        self, conn: Connection, config: SendConfig, campaign: Campaign,
        messages: CampaignMessages, *, holder: Holder, lease_expires: float,
        progress: SendProgress, stop: asyncio.Event, on_stop: OnStop, clock: Clock,
    ) -> None:
        self.conn = conn
        self.config = config
        self.campaign = campaign
        self.messages = messages
        self.holder = holder
        self.lease = sender_lease(campaign.id, holder.id)
        self.lease_expires = lease_expires
        self.progress = progress
        self.stop = stop
        self.on_stop = on_stop
        self.clock = clock
        self.db_lock = asyncio.Lock()
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.room = asyncio.Event()
        self.low_water = max(2 * config.max_connections, 8)
        self.halted = asyncio.Event()
        self.finished = asyncio.Event()
        self.final: Ending = "complete"
        self.reason = ""
        self.cause: PauseCause = ""
        self.rate = RateLimiter(config.rate_limit, clock=clock)
        self.ledger = Ledger(conn, self.db_lock, campaign.id, config.db_location,
                             claimed_by=holder.id)
        self.tally = FailureTally(config.failure_threshold, config.failure_min_sample)
        self.gate: ConsentGate | None = None
        self.signing: SigningPool | None = None

    def halt(self, final: Ending, reason: str, cause: PauseCause = "") -> None:
        """Stop taking new work; the first reason (and, for a pause, its cause) wins."""
        if not self.halted.is_set():
            self.final, self.reason, self.cause = final, reason, cause
            self.halted.set()
            log.info("campaign %s: stopping: %s", self.campaign.id, reason)

    async def run(self) -> SendOutcome:
        async with ConsentGate(self.config.db_location, self.campaign.id,
                               self.campaign.kind, monotonic=self.clock.monotonic) as gate:
            self.gate = gate
            try:
                async with signing(self.config.signer) as self.signing:
                    await self._run_tasks()
            except BaseExceptionGroup as group:
                # One task's failure (the database, most likely) is the run's failure; the
                # lease expires (or its holder is seen dead) and the next run takes over.
                raise group.exceptions[0] from None
            finally:
                self.gate = None
                self.signing = None
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
        await first(self.stop, self.finished)
        if self.stop.is_set() and not self.finished.is_set():
            if self.on_stop == "pause":
                self.halt("pause", "paused: interrupted", "interrupted")
            else:
                self.halt("leave", "shutting down")

    async def _renew_lease(self) -> None:
        interval = self.config.lease_ttl_s / 4
        while not self.finished.is_set():
            await sleep_unless(self.finished, interval)
            if self.finished.is_set():
                return
            started = self.clock.time()
            try:
                async with self.db_lock:
                    senders = await renew(self.conn, self.campaign.id, self.holder,
                                          ttl_s=self.config.lease_ttl_s, clock=self.clock)
            except StoreError as exc:
                # A busy database: the workers hold back until a renewal gets through.
                log.warning("campaign %s: cannot renew the sending lease: %s",
                            self.campaign.id, exc)
                continue
            if senders:
                self.lease_expires = started + self.config.lease_ttl_s
                self.rate.set_rate(rate_share(self.config.rate_limit, senders))
            else:
                self.halt("lost", "the sending lease expired and was broken by another sender")
                return

    def lease_short(self) -> bool:
        """True while the lease is close to expiry (a renewal is overdue): no new sends."""
        return self.clock.time() > self.lease_expires - self.config.lease_ttl_s / 4

    async def wait_for_lease(self) -> bool:
        """Wait while the lease is close to expiry; False if halted meanwhile."""
        while self.lease_short():
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
                    await first(self.room, self.halted)
                if self.halted.is_set():
                    return
                async with self.db_lock:
                    # Reports arrive through the inbox pass (another task or process) while
                    # this campaign sends: look at them at every batch boundary.
                    paused_by_reports = await self._reports_pause_reason()
                    if paused_by_reports is not None:
                        self.halt("pause", f"paused: {paused_by_reports}", "reports")
                        return
                    async with transaction(self.conn, f"campaign {self.campaign.id}",
                                           exclusive=False):
                        ids = await store.claim_batch(self.conn, self.campaign.id,
                                                      self.config.batch_size, self.holder.id)
                    # Nothing pending: rows a gone sender left are the last to send.
                    if not ids and await take_back_abandoned(self.conn, self.campaign.id,
                                                             self.holder, clock=self.clock):
                        continue
                if not ids:
                    return
                assert self.gate is not None
                self.gate.expect(ids)
                for customer_id in ids:
                    self.queue.put_nowait(customer_id)
        finally:
            for _ in range(self.config.max_connections):
                self.queue.put_nowait(None)

    async def _reports_pause_reason(self) -> str | None:
        """Why the campaign's bounces or complaints so far call for a pause
        (`[bounces] pause_bounce_rate`, `pause_complaint_rate` after `pause_min_sample`
        sent), or None. Over the whole campaign, not this run: reports come in late."""
        cid = self.campaign.id
        sent = (await store.counts(self.conn, cid)).sent
        if sent < self.config.bounces.pause_min_sample:
            return None
        reports = await deliverability_store.campaign_report_counts(self.conn, cid)
        return pause_reason(reports, sent, self.config.bounces)

    async def _work(self, index: int) -> None:
        worker = Worker(self, index)
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
            await worker.connection.close()

    def record(self, result: RecipientResult) -> asyncio.Future[None]:
        pause = self.tally.add(result.status, result.reply)
        self.progress.sent, self.progress.failed, self.progress.skipped = (
            self.tally.sent, self.tally.failed, self.tally.skipped)
        if pause is not None:
            self.halt("pause", pause, "failures")
        log.debug("campaign %s customer %s: %s after %s attempt(s) %s", self.campaign.id,
                  result.customer_id, result.status, result.attempts, result.reply)
        return self.ledger.record(result)

    # --- finishing ----------------------------------------------------------------------

    async def _finish(self) -> SendOutcome:
        cid = self.campaign.id
        async with self.db_lock, transaction(self.conn, f"campaign {cid}"):
            if self.final != "lost" and await leases.holds(self.conn, self.lease, self.holder):
                await store.requeue_own(self.conn, cid, self.holder.id)
                if self.final == "pause":
                    await store.set_status(self.conn, cid, "paused", reason=self.reason,
                                           paused_by=self.cause,
                                           expected=("sending",))
                elif self.final == "complete":
                    left = await store.unsettled(self.conn, cid)
                    if left == 0:
                        await store.set_status(self.conn, cid, "sent", reason="",
                                               expected=("sending",), finished=True)
                    else:
                        self.reason = f"{left} recipient(s) still with other senders"
                await leases.release(self.conn, self.lease, self.holder)
        campaign = await store.get_campaign(self.conn, cid)
        counts = await store.counts(self.conn, cid)
        assert campaign is not None
        tally = self.tally
        elapsed = self.clock.monotonic() - self.progress.started_monotonic
        log.info("campaign %s: %s; this run %s sent, %s failed, %s skipped in %.1f s; "
                 "%s pending", cid, campaign.status, tally.sent, tally.failed, tally.skipped,
                 elapsed, counts.pending)
        return SendOutcome(campaign_id=cid, status=campaign.status,
                           reason=campaign.status_reason or self.reason,
                           paused_by=campaign.paused_by or self.cause, counts=counts,
                           sent=tally.sent, failed=tally.failed, skipped=tally.skipped)
