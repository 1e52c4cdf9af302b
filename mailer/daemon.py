"""`mailer run`: the daemon that owns the long-running parts, each under `supervise`.

    inbox      IMAP IDLE -> requests honoured, reports recorded within seconds
    bounces    only with `[bounces.imap]`: the same pass over that mailbox, reports only
    outbox     confirmations, woken by the inbox, retried with backoff
    campaigns  due campaigns, one sender at a time per campaign, via a lease; a campaign the
               sender paused because the SMTP server could not be reached is resumed once
               the server answers again (probed on `backoff.SERVER_RECONNECT`)
    heartbeat  every part's state into the database for `mailer status`; systemd's WATCHDOG=1
    web        one-click, preference page, /healthz and /metrics, when `[http] host` is set
    console    the marketing console on its own listener, when `[console] enabled`

All live in one `asyncio.TaskGroup`; each opens its own database connection, because a
transaction on a shared aiosqlite connection would interleave with another task's. A part
that fails (a server down, the database locked or read-only) is logged, backed off and started
again by `mailer.lifecycle.supervise`; a programming error stops the daemon with a non-zero
exit (the rule is written there). SIGINT and SIGTERM (`mailer.lifecycle.signals`) set one `stop`
event: every part finishes the unit of work in hand and returns, the heartbeat records the
stop, and the daemon exits 0. systemd hears READY=1 after the first inbox pass that went through.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mailer.backoff import RECONNECT, SERVER_RECONNECT
from mailer.campaigns import service as campaign_service
from mailer.campaigns.scheduler import POLL_INTERVAL_S, scheduler_loop
from mailer.campaigns.sender import SendOutcome
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.consent.confirmations import outbox_config, send_due_confirmations
from mailer.console import app as console_app
from mailer.errors import CampaignRefused, SmtpError
from mailer.health import status as status_module
from mailer.health.metrics import Metrics
from mailer.inbox.processor import PassReport
from mailer.inbox.worker import (
    WatchTiming,
    bounces_imap_config,
    bounces_inbox_config,
    imap_config,
    inbox_config,
    watch_session,
)
from mailer.lifecycle import systemd
from mailer.lifecycle.signals import stop_on_signals
from mailer.lifecycle.supervise import Part, describe, sleep_unless_stopped, supervise, wait_any
from mailer.mail import smtp
from mailer.public import app as web_app
from mailer.settings import Settings
from mailer.store import campaigns as campaign_store
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
    outbox_interval_s: float = 30.0
    scheduler_poll_s: float = POLL_INTERVAL_S


async def run(settings: Settings, stop: asyncio.Event | None = None, *,
              timing: DaemonTiming = DaemonTiming(), metrics: Metrics | None = None,
              clock: Clock = SYSTEM_CLOCK) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set)."""
    stop = stop or asyncio.Event()
    daemon = Daemon(settings, stop, timing=timing,
                    metrics=metrics or Metrics(settings.database.path), clock=clock)
    async with stop_on_signals(stop):
        await daemon.run()


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
        self.wake_outbox = asyncio.Event()
        self.ready = False
        names = ["inbox", "outbox", "campaigns"]
        if settings.bounces.imap is not None:
            names.append("bounces")
        if settings.http.host:
            names.append("web")
        if settings.console.enabled:
            names.append("console")
        self.parts = {name: Part(name, clock=clock, on_change=self._on_change)
                      for name in names}
        self.parts["inbox"] = Part("inbox", clock=clock, on_change=self._on_change,
                                   on_failure=lambda part: metrics.imap_reconnects.inc())
        self.tasks: list[asyncio.Task[None]] = []

    def _on_change(self, part: Part) -> None:
        self.changed.set()

    async def run(self) -> None:
        bodies: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "inbox": self._inbox, "bounces": self._bounces, "outbox": self._outbox,
            "campaigns": self._campaigns, "web": self._web, "console": self._console}
        log.info("mailer %s starting (pid %s)", VERSION, os.getpid())
        async with asyncio.TaskGroup() as group:
            for name, part in self.parts.items():
                # The IMAP sessions reconnect quickly whatever the outage's length.
                policy = SERVER_RECONNECT if name in ("inbox", "bounces") else RECONNECT
                self.tasks.append(group.create_task(
                    supervise(part, bodies[name], self.stop, policy=policy), name=name))
            group.create_task(supervise(Part("heartbeat", clock=self.clock), self._heartbeat,
                                        self.stop), name="heartbeat")
            group.create_task(supervise(Part("campaign-resume", clock=self.clock),
                                        self._resume_campaigns, self.stop),
                              name="campaign-resume")
        await self._last_beat()
        log.info("mailer stopped")

    # --- the parts ------------------------------------------------------------------------

    async def _inbox(self) -> None:
        part = self.parts["inbox"]

        def after_pass(report: PassReport) -> None:
            self.metrics.requests_honoured.labels(source="email").inc(report.unsubscribed)
            self.metrics.review_items.inc(report.review)
            self.metrics.last_pass.set(time.time())
            if report.confirmations:
                self.wake_outbox.set()
            if not self.ready:
                self.ready = True
                systemd.notify("READY=1")
                log.info("ready: first inbox pass done")

        s = self.settings
        timing = WatchTiming(idle_timeout_s=s.imap.idle_timeout_s,
                             poll_interval_s=s.imap.poll_interval_s)
        async with open_db(s.database.path) as conn:
            await watch_session(conn, imap_config(s), inbox_config(s), timing, self.stop,
                                after_pass, part=part,
                                on_duration=self.metrics.pass_duration.observe)

    async def _bounces(self) -> None:
        """The same pass over `[bounces.imap]`'s mailbox, reading reports only."""
        s = self.settings
        config, rules, mailbox = bounces_imap_config(s), bounces_inbox_config(s), s.bounces.imap
        assert config is not None and rules is not None and mailbox is not None
        timing = WatchTiming(idle_timeout_s=mailbox.idle_timeout_s,
                             poll_interval_s=mailbox.poll_interval_s)
        async with open_db(s.database.path) as conn:
            await watch_session(conn, config, rules, timing, self.stop,
                                part=self.parts["bounces"])

    async def _outbox(self) -> None:
        part = self.parts["outbox"]
        config = outbox_config(self.settings)
        async with open_db(self.settings.database.path) as conn:
            part.running()
            while not self.stop.is_set():
                report = await send_due_confirmations(conn, config)
                self.metrics.confirmations_sent.inc(report.sent)
                part.succeeded(last_round_at=self.clock.now().isoformat(timespec="seconds"))
                if report.sent or report.failed or report.retrying:
                    log.info("outbox: %s sent, %s to retry, %s failed",
                             report.sent, report.retrying, report.failed)
                await wait_any(self.stop, self.wake_outbox, self.timing.outbox_interval_s)
                self.wake_outbox.clear()

    async def _campaigns(self) -> None:
        def counted(kind: str, outcome: SendOutcome) -> None:
            self.metrics.campaign_sent.labels(kind=kind).inc(outcome.sent)
            self.metrics.campaign_failed.labels(kind=kind).inc(outcome.failed)

        await scheduler_loop(self.settings, self.stop, poll_interval_s=self.timing.scheduler_poll_s,
                             part=self.parts["campaigns"], on_outcome=counted)

    async def _resume_campaigns(self) -> None:
        """Resume the campaigns paused on an unreachable SMTP server once it answers again.

        While one waits, the server is probed (connect, EHLO, QUIT) on `SERVER_RECONNECT`: a
        long outage costs one connection every few seconds, and its end is noticed within
        seconds; the scheduler then picks the campaign up on its next round and carries on
        from its ledger."""
        config = smtp.smtp_config(self.settings)
        failed_probes = 0
        async with open_db(self.settings.database.path) as conn:
            while not self.stop.is_set():
                waiting = [c.id for c in await campaign_store.list_campaigns(conn)
                           if c.status == "paused" and c.paused_by == "smtp-unavailable"]
                delay_s = self.timing.scheduler_poll_s
                if waiting:
                    try:
                        async with asyncio.timeout(config.timeout_s * 2):
                            await (await smtp.connect(config)).close()
                    except (SmtpError, TimeoutError) as exc:
                        failed_probes += 1
                        delay_s = SERVER_RECONNECT.delay_s(failed_probes)
                        log.info("campaigns %s wait for the SMTP server: %s; probing again in "
                                 "%.1f s", ", ".join(map(str, waiting)),
                                 describe(exc) if str(exc) else "timed out", delay_s)
                    else:
                        failed_probes = 0
                        for campaign_id in waiting:
                            try:
                                await campaign_service.resume(conn, campaign_id)
                            except CampaignRefused as exc:  # resumed or cancelled meanwhile
                                log.info("campaign %s: not resumed: %s", campaign_id, exc)
                            else:
                                log.info("campaign %s: the SMTP server answers again; resumed",
                                         campaign_id)
                else:
                    failed_probes = 0
                await sleep_unless_stopped(delay_s, self.stop)

    async def _web(self) -> None:
        """The public web listener (one-click, preference page) with /healthz and /metrics."""
        part = self.parts["web"]
        await web_app.serve(self.settings, self.stop, clock=self.clock,
                            ops=(self.metrics, self.health),
                            on_listening=lambda where: part.succeeded(listening=where))

    async def _console(self) -> None:
        """The marketing console, on its own internal listener (`[console] enabled`)."""
        self.parts["console"].succeeded(
            listening=f"{self.settings.console.host}:{self.settings.console.port}")
        await console_app.serve(self.settings, self.stop, clock=self.clock)

    async def health(self) -> status_module.Status:
        return await status_module.gather(self.settings.database.path, self.clock)

    # --- heartbeat and watchdog -----------------------------------------------------------

    def _beat(self, stopped: bool = False) -> heartbeat_store.Heartbeat:
        now = self.clock.now().isoformat(timespec="microseconds")
        return heartbeat_store.Heartbeat(
            host=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
            version=VERSION, beat_at=now, stopped_at=now if stopped else None,
            parts={name: part.state.as_json() for name, part in self.parts.items()})

    async def _heartbeat(self) -> None:
        watchdog_s = systemd.watchdog_interval_s()
        interval_s = min(self.timing.heartbeat_interval_s, watchdog_s or float("inf"))
        async with open_db(self.settings.database.path) as conn:
            await heartbeat_store.prune_heartbeats(conn, self.clock.now())
            while not self.stop.is_set():
                self.changed.clear()
                await heartbeat_store.write_heartbeat(conn, self._beat())
                # After READY only: until then systemd's start timeout is the one that counts.
                if watchdog_s is not None and self.ready and all(
                        not task.done() for task in self.tasks):
                    systemd.notify("WATCHDOG=1")
                await wait_any(self.stop, self.changed, interval_s)

    async def _last_beat(self) -> None:
        systemd.notify("STOPPING=1")
        try:
            async with open_db(self.settings.database.path) as conn:
                await heartbeat_store.write_heartbeat(conn, self._beat(stopped=True))
        except Exception as exc:  # the database may be why we stop; status then sees the pid
            log.warning("heartbeat: could not record the stop: %s", describe(exc))
