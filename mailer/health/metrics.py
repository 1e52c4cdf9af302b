"""Numbers for monitoring (Prometheus) and the `/healthz` and `/metrics` handlers.

Each daemon has its own `Metrics` with its own `CollectorRegistry` (not the process-global
one), so two daemons in one test process never share a counter. The daemon's parts update it;
`add_routes(app, metrics, health)` serves it on an aiohttp app: the daemon's own small
listener today, the public web app once both are merged.

    GET /metrics   Prometheus text format
    GET /healthz   200 healthy, 503 degraded or not running; the body is `mailer status --json`
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mailer.health.status import HEALTHY, Status


class Metrics:
    def __init__(self) -> None:
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
        self.outbox_depth = Gauge(
            "mailer_outbox_depth", "Confirmations waiting to be sent", registry=r)
        self.pass_duration = Histogram(
            "mailer_inbox_pass_duration_seconds", "Duration of one inbox pass", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.last_pass = Gauge(
            "mailer_inbox_last_successful_pass_timestamp_seconds",
            "Unix time of the last inbox pass that went through", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("mailer_metrics", Metrics)
Health = Callable[[], Awaitable[Status]]
HEALTH_KEY: web.AppKey[Health] = web.AppKey("mailer_health")


async def healthz(request: web.Request) -> web.Response:
    status = await request.app[HEALTH_KEY]()
    return web.json_response(status.as_json(), status=200 if status.code == HEALTHY else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application, registry: Metrics,
               health: Callable[[], Awaitable[Status]]) -> None:
    """Serve /healthz and /metrics on `app` (before it starts)."""
    app[METRICS_KEY] = registry
    app[HEALTH_KEY] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
