"""The doctor in the daemon: the reputation part, which checks the sender-wide complaint rate
of the last day on each round, and the DNS and message checks run once at start.

    reputation   each round (every `POLL_INTERVAL_S`, and at once after an inbox pass that
                 read a complaint): `reputation_pause_check`; at 0.3% (once `[bounces]
                 pause_min_sample` messages went out) every campaign sending or scheduled is
                 paused with the cause "complaint-rate" and the rate as its reason; from 0.1%
                 the part carries a `warning` that `mailer status` turns into WARNING (exit 1)
    at start     `startup_report` (one log line per failure; DNS never stops the daemon, as
                 records change outside our control), kept in the store for the console

Gmail and Yahoo refuse bulk mail from senders whose complaint rate reaches 0.3%: sending on
into it would harm every later campaign, so the pause holds until a person resumes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mailer.backoff import RECONNECT, Backoff
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.doctor.report import Report
from mailer.doctor.reputation import PauseDecision, pause_campaigns, reputation_pause_check
from mailer.doctor.run import startup_report
from mailer.errors import MailerError
from mailer.lifecycle.supervise import Part, describe, wait_any
from mailer.settings import Settings
from mailer.store import doctor as doctor_store
from mailer.store.db import Location, open_db

log = logging.getLogger(__name__)

# Complaints arrive with the inbox passes; a minute is soon enough to stop a campaign's next
# batches and costs one indexed count.
POLL_INTERVAL_S = 60.0


@dataclass
class ReputationRound:
    """One look: the decision, and the campaigns it paused."""

    decision: PauseDecision
    paused: list[int] = field(default_factory=list)


def part_details(decision: PauseDecision) -> dict[str, str]:
    """What the heartbeat records for `mailer status`: the rate, and a warning from 0.1%."""
    return {"complaint_rate_1d": f"{decision.rate * 100:.2f}%",
            "warning": decision.reason if decision.warning else ""}


class ReputationWatch:
    """The daemon's reputation part (see the module docstring)."""

    policy: Backoff = RECONNECT

    def __init__(self, db_location: Location, *, min_sample: int,
                 poll_interval_s: float = POLL_INTERVAL_S, part: Part | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.db_location = db_location
        self.min_sample = min_sample
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.part = part or Part("reputation", clock=clock)
        self.wake = asyncio.Event()  # set by the daemon when a pass read a complaint

    async def run_once(self) -> ReputationRound:
        async with open_db(self.db_location) as conn:
            decision = await reputation_pause_check(conn, now=self.clock.now(),
                                                    min_sample=self.min_sample)
            looked = ReputationRound(decision, await pause_campaigns(conn, decision))
        for campaign_id in looked.paused:
            log.warning("campaign %s: paused: %s", campaign_id, decision.reason)
        self.part.succeeded(**part_details(decision))
        return looked

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            await self.run_once()
            await wait_any(stop, self.wake, self.poll_interval_s)


def doctor_run(report: Report, ran_at: str) -> doctor_store.DoctorRun:
    """The report as the store keeps it: the counts, and the failures with their fixes."""
    count = {r: sum(c.result == r for c in report.checks) for r in ("pass", "warn", "fail")}
    return doctor_store.DoctorRun(
        ran_at=ran_at, passed=count["pass"], warned=count["warn"], failed=count["fail"],
        failures=tuple(doctor_store.Failure(c.name, c.found, c.fix)
                       for c in report.failures()))


async def doctor_at_start(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> Report | None:
    """`startup_report`, kept in the store; None if it could not run or be kept (logged: the
    daemon goes on either way)."""
    try:
        report = await startup_report(settings)
        async with open_db(settings.database.location) as conn:
            await doctor_store.record_run(
                conn, doctor_run(report, clock.now().isoformat(timespec="seconds")))
    except Exception as exc:  # diagnosis must never stop the daemon; a bug is logged whole
        log.warning("doctor: the checks at start did not run: %s", describe(exc),
                    exc_info=not isinstance(exc, (MailerError, OSError)))
        return None
    return report
