"""The overview page: the daemon's state, the sender's reputation (the complaint rates over
1, 7 and 30 days, judged as `mailer doctor` judges them, and the last result of the doctor's
checks the daemon runs at start), campaigns sending now, the queues, and 90 days of opt-outs
by source and messages sent, drawn as inline SVG."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp.web as web

from mailer.console import chart, links
from mailer.console.page import APP_SETTINGS, render
from mailer.console.security import CLOCK, allow, conn_of
from mailer.doctor.report import Check
from mailer.doctor.reputation import WINDOWS_DAYS, judge_complaints, since
from mailer.store import console as console_store
from mailer.store import doctor as doctor_store
from mailer.store import reputation as reputation_store
from mailer.store.db import Connection

DAYS = 90
# The sources of an opt-out a person outside the company makes (not imports or operators).
OPT_OUT_SOURCES: tuple[str, ...] = ("email", "one-click", "preference page", "complaint")


@dataclass(frozen=True)
class Charts:
    days: list[str]
    optouts: dict[str, list[int]]
    sends: list[int]


async def charts(conn: Connection, today: date) -> Charts:
    days = [(today - timedelta(days=DAYS - 1 - i)).isoformat() for i in range(DAYS)]
    optouts = await console_store.optouts_per_day(conn, days[0])
    sends = await console_store.sends_per_day(conn, days[0])
    return Charts(
        days=days,
        optouts={s: [optouts.get((d, s), 0) for d in days] for s in OPT_OUT_SOURCES},
        sends=[sends.get(d, 0) for d in days],
    )


async def complaint_rates(conn: Connection, now: datetime
                          ) -> list[tuple[str, Check]]:
    """The sender-wide complaint rate over each window, as `mailer doctor` judges it, with
    the period's name."""
    return [("Last day" if days == 1 else f"Last {days} days",
             judge_complaints(days, await reputation_store.complaint_window(
                 conn, since(now, days))))
            for days in WINDOWS_DAYS]


async def overview_context(request: web.Request) -> dict[str, Any]:
    conn = conn_of(request)
    settings = request.app[APP_SETTINGS]
    now = request.app[CLOCK].now()
    active = await links.active_campaigns(conn)
    data = await charts(conn, now.date())
    doctor = await doctor_store.last_run(conn)
    return {
        "daemon": await links.daemon_state(settings, settings.database.location),
        "active": active,
        "sending": any(c.status == "sending" for c, _ in active),
        "queues": await console_store.queue_facts(conn),
        "complaints": await complaint_rates(conn, now),
        "doctor": doctor,
        "doctor_at": (datetime.fromisoformat(doctor.ran_at).astimezone(UTC).strftime(
            "%-d %b %Y %H:%M UTC") if doctor else ""),
        "charts": data,
        "optout_chart": chart.stacked_bars("Opt-outs per day by source", data.days,
                                           data.optouts),
        "optout_legend": chart.legend(OPT_OUT_SOURCES),
        "sends_chart": chart.stacked_bars("Campaign messages sent per day", data.days,
                                          {"sent": data.sends}, {"sent": "Messages sent"}),
        "sends_legend": chart.legend(["sent"], {"sent": "Messages sent"}),
        "optout_totals": {s: sum(v) for s, v in data.optouts.items()},
        "sends_total": sum(data.sends),
    }


@allow("marketing", "reviewer")
async def overview(request: web.Request) -> web.StreamResponse:
    return render(request, "overview.html", "overview", **await overview_context(request))
