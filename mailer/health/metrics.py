"""Numbers for monitoring (Prometheus) and the `/metrics` handler.

Each daemon has its own `Metrics` with its own `CollectorRegistry` (not the process-global
one), so two daemons in one test process never share a counter. Two kinds of number:

- counters of what this daemon did (requests honoured, messages sent, reconnects), which its
  parts increment as they work;
- gauges of what the database holds, read at each scrape by `DatabaseGauges` (a custom
  collector): the review queue, the outbox, each campaign in progress, and the sender-wide
  complaint rate over 1, 7 and 30 days (`mailer_complaint_rate{window="1d"}`: the daemon
  pauses every campaign at 0.3% over a day and warns from 0.1%). They tell the truth
  whoever changed the rows, so a campaign sent by `mailer campaign send` in another process
  shows here as it goes.

`add_metrics(app, metrics)` serves them on the public web listener inside the daemon
(`mailer.public.app`, which also answers `/healthz`, and `/healthz?full` from `Health`):

    GET /metrics   Prometheus text format
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from mailer.errors import StoreError
from mailer.health.status import Status
from mailer.store.db import Location
from mailer.store.gauges import COMPLAINT_DAYS, Gauges, read_gauges

log = logging.getLogger(__name__)

_CAMPAIGN_LABELS = ["campaign", "kind"]


class DatabaseGauges:
    """A prometheus-client collector: `collect()` reads the database at each scrape (in the
    thread `metrics` renders in) and yields its gauges; nothing is cached between scrapes.

    `mailer_database_readable` is 0 when the read failed, and the other gauges are then left
    out rather than shown stale; the failure is logged once, when it starts."""

    def __init__(self, db_location: Location) -> None:
        self.db_location = db_location
        self._readable = True

    def describe(self) -> Iterable[Metric]:
        # Names only: the registry checks them for clashes without reading the database.
        return _families(None, readable=None)

    def collect(self) -> Iterable[Metric]:
        try:
            gauges = read_gauges(self.db_location)
        except StoreError as exc:
            if self._readable:
                log.warning("metrics: %s", exc)
            self._readable = False
            return _families(None, readable=False)
        self._readable = True
        return _families(gauges, readable=True)


def _families(gauges: Gauges | None, *, readable: bool | None) -> list[Metric]:
    """The gauge families; `readable` None: names only (no samples). No database yet (gauges
    None but readable): nothing waits anywhere."""
    families = {
        "readable": GaugeMetricFamily(
            "mailer_database_readable", "1 when this scrape could read the database"),
        "review": GaugeMetricFamily(
            "mailer_review_open_items", "Review items waiting for a person"),
        "outbox": GaugeMetricFamily(
            "mailer_outbox_depth", "Confirmations waiting to be sent"),
        "recipients": GaugeMetricFamily(
            "mailer_campaign_recipients",
            "Recipients of each campaign in progress (sending or paused), by ledger state",
            labels=[*_CAMPAIGN_LABELS, "state"]),
        "paused": GaugeMetricFamily(
            "mailer_campaign_paused", "1 for a campaign in progress that is paused",
            labels=_CAMPAIGN_LABELS),
        "complaints": GaugeMetricFamily(
            "mailer_complaint_rate",
            "ARF complaints over messages sent (0 when none was sent), by window",
            labels=["window"]),
    }
    if readable is None:
        return list(families.values())
    families["readable"].add_metric([], 1 if readable else 0)
    if not readable:
        return [families["readable"]]  # the others left out rather than shown stale
    families["review"].add_metric([], gauges.review_open if gauges else 0)
    families["outbox"].add_metric([], gauges.outbox_depth if gauges else 0)
    for c in gauges.campaigns if gauges else ():
        labels = [str(c.id), c.kind]
        for state, n in (("sent", c.sent), ("pending", c.pending), ("failed", c.failed),
                         ("skipped", c.skipped)):
            families["recipients"].add_metric([*labels, state], n)
        families["paused"].add_metric(labels, 1 if c.status == "paused" else 0)
    for days in COMPLAINT_DAYS:
        window = gauges.complaints.get(days) if gauges else None
        rate = window.complaints / window.sent if window and window.sent else 0.0
        families["complaints"].add_metric([f"{days}d"], rate)
    return list(families.values())


class Metrics:
    """The daemon's counters, and with `db_location` the database's gauges read at each scrape."""

    def __init__(self, db_location: Location | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests_honoured = Counter(
            "mailer_requests_honoured", "Opt-out requests honoured, by source",
            ["source"], registry=r)
        self.review_items = Counter(
            "mailer_review_items", "Messages sent to the review queue", registry=r)
        self.campaign_sent = Counter(
            "mailer_campaign_messages_sent", "Campaign messages sent, by campaign kind",
            ["kind"], registry=r)
        self.campaign_failed = Counter(
            "mailer_campaign_messages_failed", "Campaign messages failed, by campaign kind",
            ["kind"], registry=r)
        self.confirmations_sent = Counter(
            "mailer_confirmations_sent", "Opt-out confirmations sent", registry=r)
        self.imap_reconnects = Counter(
            "mailer_imap_reconnects", "IMAP sessions lost and started again", registry=r)
        self.pass_duration = Histogram(
            "mailer_inbox_pass_duration_seconds", "Duration of one inbox pass", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.last_pass = Gauge(
            "mailer_inbox_last_successful_pass_timestamp_seconds",
            "Unix time of the last inbox pass that went through", registry=r)
        if db_location is not None:
            r.register(DatabaseGauges(db_location))

    def render(self) -> bytes:
        """The Prometheus text; reads the database (blocking): call it off the event loop."""
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("mailer_metrics", Metrics)
Health = Callable[[], Awaitable[Status]]


async def metrics(request: web.Request) -> web.Response:
    # In a worker thread: the database gauges are read by a synchronous collector.
    body = await asyncio.to_thread(request.app[METRICS_KEY].render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics(app: web.Application, registry: Metrics) -> None:
    """Serve /metrics on `app` (before it starts)."""
    app[METRICS_KEY] = registry
    app.router.add_get("/metrics", metrics)
