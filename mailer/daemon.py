"""`mailer run`: the daemon, a supervisor that owns the long-running parts.

    inbox            IMAP IDLE -> requests honoured, reports recorded within seconds
                     (`mailer.inbox.worker.InboxWorker`)
    bounces          only with `[bounces.imap]`: the same worker over that mailbox, reports only
    outbox           confirmations, woken by the inbox, retried with backoff
                     (`mailer.consent.confirmations.Outbox`)
    campaigns        due campaigns, one sender at a time per campaign, via a lease
                     (`mailer.campaigns.scheduler.CampaignScheduler`)
    campaign-resume  campaigns an SMTP outage paused, resumed once the server answers again
                     (`mailer.campaigns.resume.CampaignResumer`)
    housekeeping     `[retention]` once a day, erasures' IMAP clean-up within the hour
                     (`mailer.inbox.housekeeping.Housekeeping`)
    reputation       the sender-wide complaint rate of the last day, each round: every campaign
                     in progress paused at 0.3%, a warning from 0.1%
                     (`mailer.doctor.watch.ReputationWatch`)
    heartbeat        every part's state into the database for `mailer status`; systemd's
                     WATCHDOG=1
    web              one-click, preference page, /healthz and /metrics, when `[http] host` is set
    console          the marketing console on its own listener, when `[console] enabled`

Every part has the one lifecycle of `mailer.lifecycle.worker`: `run(stop)` is a session the
daemon supervises, and the pipeline parts also have `run_once()`, one unit of their work.
`burst` (`mailer inbox process`, from cron) is those same parts once each, built here the same
way, and then it returns: arq's burst mode. Nothing here handles a message or a campaign; the
daemon only builds the parts, wires their hooks (metrics, waking the outbox, READY=1) and runs
them.

All live in one `asyncio.TaskGroup`; each opens its own database connection, because a
transaction on a shared aiosqlite connection would interleave with another task's. A part
that fails (a server down, the database locked or read-only) is logged, backed off and started
again by `mailer.lifecycle.supervise`; a programming error stops the daemon with a non-zero
exit (the rule is written there). SIGINT and SIGTERM (`mailer.lifecycle.signals`) set one `stop`
event: every part finishes the unit of work in hand and returns, the heartbeat records the
stop, and the daemon exits 0. systemd hears READY=1 after the first inbox pass that went through.

At start the doctor's DNS and message checks run beside the parts, not before them (slow DNS
must not delay READY=1, and records change outside our control): each failure is one log
line, and the result is kept for the console (`mailer.doctor.watch.doctor_at_start`).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailer.backoff import RECONNECT, Backoff
from mailer.campaigns.resume import CampaignResumer
from mailer.campaigns.scheduler import POLL_INTERVAL_S, CampaignScheduler
from mailer.campaigns.sender import SendOutcome
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.consent.confirmations import (
    DEFAULT_INTERVAL_S,
    Outbox,
    OutboxReport,
    outbox_config,
)
from mailer.console import app as console_app
from mailer.doctor.watch import POLL_INTERVAL_S as REPUTATION_POLL_S
from mailer.doctor.watch import ReputationWatch, doctor_at_start
from mailer.errors import MailerError, SchemaTooNew
from mailer.health import status as status_module
from mailer.health.metrics import Metrics
from mailer.inbox.housekeeping import INTERVAL_S as HOUSEKEEPING_INTERVAL_S
from mailer.inbox.housekeeping import Housekeeping, housekeeping_config
from mailer.inbox.processor import PassReport
from mailer.inbox.worker import bounces_worker, inbox_worker
from mailer.instance import instance_name
from mailer.lifecycle import systemd
from mailer.lifecycle.signals import stop_on_signals
from mailer.lifecycle.supervise import Part, describe, wait_any
from mailer.lifecycle.worker import Supervised, run_supervised
from mailer.mail import smtp
from mailer.public import app as web_app
from mailer.settings import Settings
from mailer.store import heartbeat as heartbeat_store
from mailer.store.db import open_db

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("mailer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


@dataclass(frozen=True)
class DaemonTiming:
    heartbeat_interval_s: float = status_module.HEARTBEAT_INTERVAL_S
    outbox_interval_s: float = DEFAULT_INTERVAL_S
    scheduler_poll_s: float = POLL_INTERVAL_S
    reputation_poll_s: float = REPUTATION_POLL_S
    housekeeping_interval_s: float = HOUSEKEEPING_INTERVAL_S


async def run(settings: Settings, stop: asyncio.Event | None = None, *,
              timing: DaemonTiming = DaemonTiming(), metrics: Metrics | None = None,
              clock: Clock = SYSTEM_CLOCK) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set)."""
    stop = stop or asyncio.Event()
    daemon = Daemon(settings, stop, timing=timing,
                    metrics=metrics or Metrics(settings.database.location), clock=clock)
    async with stop_on_signals(stop):
        await daemon.run()


@dataclass(frozen=True)
class Burst:
    """What one burst did: the mailboxes' passes (added up) and the outbox's round."""

    inbox: PassReport
    outbox: OutboxReport


async def burst(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> Burst:
    """`mailer inbox process`: the daemon's inbox parts make one pass each (`[imap]`, then
    `[bounces.imap]` if set), then its outbox sends what is due (what the passes just queued
    among it); then it returns. The parts are the daemon's own, built by `Daemon`."""
    daemon = Daemon(settings, asyncio.Event(), timing=DaemonTiming(), metrics=Metrics(),
                    clock=clock)
    return await daemon.burst()


class _Loop:
    """A part whose session is one coroutine of the daemon's (the heartbeat, a listener):
    it has `run(stop)` only, since a listener has no unit of work to do once."""

    def __init__(self, part: Part, body: Callable[[asyncio.Event], Awaitable[None]],
                 policy: Backoff = RECONNECT) -> None:
        self.part = part
        self.policy = policy
        self._body = body

    async def run(self, stop: asyncio.Event) -> None:
        await self._body(stop)


class Daemon:
    def __init__(self, settings: Settings, stop: asyncio.Event, *, timing: DaemonTiming,
                 metrics: Metrics, clock: Clock) -> None:
        self.settings = settings
        self.stop = stop
        self.timing = timing
        self.metrics = metrics
        self.clock = clock
        self.started_at = clock.now().isoformat(timespec="seconds")
        self.changed = asyncio.Event()  # a part changed state: beat now
        self.ready = False
        self.tasks: list[asyncio.Task[None]] = []
        s = settings

        def part(name: str, **hooks: Callable[[Part], None]) -> Part:
            return Part(name, clock=clock, on_change=self._on_change, **hooks)

        # The parts `mailer status` shows, in this order; each one's state is on its Part.
        self.inbox = inbox_worker(
            s, part("inbox", on_failure=lambda p: metrics.imap_reconnects.inc()),
            on_pass=self._after_pass, on_duration=metrics.pass_duration.observe,
            on_standby=lambda: self._ready("inbox standing by: another daemon reads it"))
        self.outbox = Outbox(
            s.database.location, outbox_config(s), part=part("outbox"),
            interval_s=timing.outbox_interval_s, clock=clock,
            on_round=lambda report: metrics.confirmations_sent.inc(report.sent))
        self.bounces = bounces_worker(s, part("bounces"), on_pass=self._after_reports)
        shown: dict[str, Supervised] = {
            "inbox": self.inbox, "outbox": self.outbox,
            "campaigns": CampaignScheduler.from_settings(
                s, poll_interval_s=timing.scheduler_poll_s, part=part("campaigns"),
                on_outcome=self._counted, clock=clock)}
        if self.bounces is not None:
            shown["bounces"] = self.bounces
        shown["reputation"] = self.reputation = ReputationWatch(
            s.database.location, min_sample=s.bounces.pause_min_sample,
            poll_interval_s=timing.reputation_poll_s, part=part("reputation"), clock=clock)
        shown["housekeeping"] = Housekeeping(
            housekeeping_config(s), part=part("housekeeping"),
            interval_s=timing.housekeeping_interval_s, clock=clock)
        if s.http.host:
            shown["web"] = _Loop(part("web"), self._web)
        if s.console.enabled:
            shown["console"] = _Loop(part("console"), self._console)
        self.parts = {name: worker.part for name, worker in shown.items()}
        # Two more the heartbeat does not report: itself, and the resumer (whose work shows
        # on the campaigns it resumes).
        self.supervised: dict[str, Supervised] = {
            **shown,
            "heartbeat": _Loop(Part("heartbeat", clock=clock), self._heartbeat),
            "campaign-resume": CampaignResumer(
                s.database.location, smtp.smtp_config(s), poll_interval_s=timing.scheduler_poll_s,
                part=Part("campaign-resume", clock=clock), clock=clock),
        }

    def _on_change(self, part: Part) -> None:
        self.changed.set()

    async def run(self) -> None:
        log.info("mailer %s starting (pid %s)", VERSION, os.getpid())
        await self._refuse_a_newer_schema()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._doctor(), name="doctor")
            for name, worker in self.supervised.items():
                task = group.create_task(run_supervised(worker, self.stop), name=name)
                if name in self.parts:
                    self.tasks.append(task)
        await self._last_beat()
        log.info("mailer stopped")

    async def _refuse_a_newer_schema(self) -> None:
        """A schema newer than this code (another host upgraded first) does not get older by
        retrying: refuse to start, in one line, as every command does. Any other failure to
        open the database is the parts' to retry (a server still starting, a full disk)."""
        try:
            async with open_db(self.settings.database.location):
                pass
        except SchemaTooNew:
            raise
        except MailerError as exc:
            log.warning("database not usable at start, the parts will retry: %s", exc)

    async def burst(self) -> Burst:
        """Each pipeline part's `run_once`, in the order work flows (see `burst`)."""
        report = await self.inbox.run_once()
        if self.bounces is not None:
            report.add(await self.bounces.run_once())
        return Burst(inbox=report, outbox=await self.outbox.run_once())

    # --- the hooks the parts call -----------------------------------------------------------

    def _after_pass(self, report: PassReport) -> None:
        self.metrics.requests_honoured.labels(source="email").inc(report.unsubscribed)
        self.metrics.review_items.inc(report.review)
        self.metrics.last_pass.set(time.time())
        if report.confirmations:
            self.outbox.wake.set()
        self._after_reports(report)
        self._ready("first inbox pass done")

    def _ready(self, why: str) -> None:
        """READY=1 once: after the first inbox pass, or when another daemon holds the inbox
        (this one stands by and would otherwise never be ready for systemd)."""
        if not self.ready:
            self.ready = True
            systemd.notify("READY=1")
            log.info("ready: %s", why)

    def _after_reports(self, report: PassReport) -> None:
        """A pass that read a complaint: the reputation part looks at the rate now."""
        if report.complaints:
            self.reputation.wake.set()

    def _counted(self, kind: str, outcome: SendOutcome) -> None:
        self.metrics.campaign_sent.labels(kind=kind).inc(outcome.sent)
        self.metrics.campaign_failed.labels(kind=kind).inc(outcome.failed)

    async def _doctor(self) -> None:
        """The doctor's checks at start, until done or the daemon stops (DNS may be slow)."""
        checks = asyncio.create_task(doctor_at_start(self.settings, self.clock))
        stopping = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait((checks, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (checks, stopping):
                task.cancel()
            await asyncio.gather(checks, stopping, return_exceptions=True)

    # --- the listeners ----------------------------------------------------------------------

    async def _web(self, stop: asyncio.Event) -> None:
        """The public web listener (one-click, preference page) with /healthz and /metrics."""
        part = self.parts["web"]
        await web_app.serve(self.settings, stop, clock=self.clock,
                            ops=(self.metrics, self.health),
                            on_listening=lambda where: part.succeeded(listening=where))

    async def _console(self, stop: asyncio.Event) -> None:
        """The marketing console, on its own internal listener (`[console] enabled`)."""
        self.parts["console"].succeeded(
            listening=f"{self.settings.console.host}:{self.settings.console.port}")
        await console_app.serve(self.settings, stop, clock=self.clock)

    async def health(self) -> status_module.Status:
        return await status_module.gather(self.settings.database.location, self.clock)

    # --- heartbeat and watchdog -----------------------------------------------------------

    def _beat(self, stopped: bool = False) -> heartbeat_store.Heartbeat:
        now = self.clock.now().isoformat(timespec="microseconds")
        return heartbeat_store.Heartbeat(
            host=instance_name(), pid=os.getpid(), started_at=self.started_at,
            version=VERSION, beat_at=now, stopped_at=now if stopped else None,
            parts={name: part.state.as_json() for name, part in self.parts.items()})

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        watchdog_s = systemd.watchdog_interval_s()
        interval_s = min(self.timing.heartbeat_interval_s, watchdog_s or float("inf"))
        async with open_db(self.settings.database.location) as conn:
            await heartbeat_store.prune_heartbeats(conn, self.clock.now())
            while not stop.is_set():
                self.changed.clear()
                await heartbeat_store.write_heartbeat(conn, self._beat())
                # After READY only: until then systemd's start timeout is the one that counts.
                if watchdog_s is not None and self.ready and all(
                        not task.done() for task in self.tasks):
                    systemd.notify("WATCHDOG=1")
                await wait_any(stop, self.changed, interval_s)

    async def _last_beat(self) -> None:
        systemd.notify("STOPPING=1")
        try:
            async with open_db(self.settings.database.location) as conn:
                await heartbeat_store.write_heartbeat(conn, self._beat(stopped=True))
        except Exception as exc:  # the database may be why we stop; status then sees the pid
            log.warning("heartbeat: could not record the stop: %s", describe(exc))
