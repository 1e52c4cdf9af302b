"""The public web server: the app factory (`make_app`) and its lifecycle (`serve`).

Routes live under the path of `[campaigns] unsubscribe_url`, so a TLS proxy in front forwards
the path as it is: with `https://www.imperialtelecom.co.uk/unsubscribe` the server answers
`/unsubscribe/TOKEN` on `[http] host:port`.

`/healthz` answers for what this listener serves, and nothing else: 200 while it answers and
the database can be read, 503 when not. A proxy or load balancer checking it takes the
unsubscribe link offline on a 503, so an IMAP or SMTP outage (which the link does not need)
must not turn it red. `/healthz?full` is the daemon's whole health, the `mailer status --json`
document (200 healthy, 503 degraded or not running), for monitoring.

`serve(settings, stop)` listens until `stop` is set, then closes the listener, lets requests in
flight finish (at most `[http] shutdown_timeout_s`) and returns (`mailer.http.serving`);
`mailer web` runs it alone, and the daemon runs it next to its other tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import BadInput, StoreError
from mailer.health import status as health_status
from mailer.http import serving
from mailer.http.client import ClientAddress
from mailer.http.headers import add_security_headers
from mailer.mail.tokens import read_link_token
from mailer.public import doctor_probe, unsubscribe
from mailer.public.context import WEB, WebContext
from mailer.public.middlewares import OUTCOME, Limits, make_middlewares
from mailer.public.pages import Pages
from mailer.settings import Settings
from mailer.store import customers as customer_store
from mailer.store.db import open_db

if TYPE_CHECKING:
    from mailer.health.metrics import Health, Metrics

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
FullHealth = Callable[[], Awaitable[health_status.Status]]
FULL_HEALTH: web.AppKey[FullHealth] = web.AppKey("mailer.public.full_health")

# What each error page says: a title and one plain sentence, nothing about the cause.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Sorry, something went wrong",
          "We could not understand that request. Go back to the link in your email and try "
          "again."),
    404: ("Page not found",
          "If you used a link in an email, check that the whole link was copied."),
    405: ("Page not found",
          "If you used a link in an email, check that the whole link was copied."),
    413: ("Sorry, something went wrong",
          "That request was too large. Go back to the link in your email and try again."),
    415: ("Sorry, something went wrong",
          "We could not understand that request. Go back to the link in your email and try "
          "again."),
    429: ("Too many requests",
          "Please wait a minute and try again."),
    500: ("Sorry, there is a problem with the service",
          "Please try again later. Nothing has been changed."),
    503: ("Sorry, the service is unavailable",
          "Please try again later. Nothing has been changed."),
}


def route_prefix(unsubscribe_url: str) -> str:
    """The path the routes live under: that of `[campaigns] unsubscribe_url`."""
    path = urlsplit(unsubscribe_url).path.rstrip("/")
    return path or "/unsubscribe"


def make_app(
    settings: Settings, *, clock: Clock = SYSTEM_CLOCK,
    ops: tuple[Metrics, Health] | None = None,
) -> web.Application:
    """The aiohttp application; the database opens when it starts and closes when it stops.

    In the daemon (`ops` given) `/metrics` serves its Prometheus numbers and `/healthz?full`
    its own view of its health; alone (`mailer web`) `/healthz?full` reads the daemon's
    heartbeat from the database, as `mailer status` does.

    Raises BadInput when there is no campaign secret to check links with, and TemplateError
    when a page template is missing or broken.
    """
    secrets = settings.campaigns.link_secrets
    if not secrets:
        raise BadInput("[campaigns] secret: missing (set MAILER_SECRET); the unsubscribe pages "
                       "cannot check links without it")
    pages = Pages(settings.templates.dir, write_to=settings.unsubscribe)
    ctx = WebContext(pages=pages, secrets=secrets,
                     one_click_categories=settings.unsubscribe.categories, clock=clock)

    def error_page(request: web.Request, status: int) -> web.Response:
        title, message = _ERRORS.get(status, _ERRORS[500])
        html = pages.render("error", {"title": title, "message": message, "status": status})
        return web.Response(text=html, content_type="text/html", status=status)

    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=make_middlewares(
            client_address=ClientAddress(settings.http.trusted_proxies, "web"),
            limits=Limits(settings.http.rate_limit_per_min, clock,
                          lambda token: read_link_token(secrets, token) is not None),
            error_page=error_page,
            exempt=frozenset({HEALTH_PATH, METRICS_PATH}),
        ),
    )
    app[WEB] = ctx
    app[FULL_HEALTH] = (ops[1] if ops is not None
                        else lambda: health_status.gather(settings.database.location, clock))

    async def database(app: web.Application) -> AsyncIterator[None]:
        # Inline on SQLite: a one-click transaction holds the write lock for a fraction of a
        # millisecond, so a campaign sending from the same process is not starved of it.
        async with open_db(settings.database.location, inline=True) as conn:
            ctx.conn = conn
            try:
                yield
            finally:
                ctx.conn = None

    app.cleanup_ctx.append(database)
    add_security_headers(app, pages.content_security_policy)
    prefix = route_prefix(settings.campaigns.unsubscribe_url)
    app.router.add_get(HEALTH_PATH, healthz, name="healthz")
    if ops is not None:
        from mailer.health.metrics import add_metrics

        add_metrics(app, ops[0])
        honoured = ops[0].requests_honoured

        async def count_opt_outs(request: web.Request, response: web.StreamResponse) -> None:
            # The outcome names what a request turned off ("one-click off:offers", "saved
            # off:announcements on:offers"): count the refusals by where they came from.
            outcome = str(request.get(OUTCOME, ""))
            if "off:" in outcome:
                source = "one-click" if outcome.startswith("one-click") else "preference page"
                honoured.labels(source=source).inc()

        app.on_response_prepare.append(count_opt_outs)
    doctor_probe.add_route(app, prefix)
    app.router.add_get(prefix + "/{token}", unsubscribe.show, name="page")
    app.router.add_post(prefix + "/{token}", unsubscribe.submit, name="submit")
    return app


async def healthz(request: web.Request) -> web.StreamResponse:
    """200 while the database can be read, 503 otherwise; `?full`: the daemon's health."""
    if "full" in request.query:
        try:
            status = await request.app[FULL_HEALTH]()
        except StoreError as exc:
            log.warning("healthz?full: %s", exc)
            request[OUTCOME] = "database unavailable"
            return web.Response(text="database unavailable\n", status=503)
        request[OUTCOME] = status.label
        return web.json_response(status.as_json(),
                                 status=200 if status.code == health_status.HEALTHY else 503)
    try:
        async with request.app[WEB].db() as conn:
            await customer_store.check_usable(conn)
    except StoreError as exc:
        log.warning("healthz: %s", exc)
        request[OUTCOME] = "database unavailable"
        return web.Response(text="database unavailable\n", status=503)
    request[OUTCOME] = "ok"
    return web.Response(text="ok\n")


async def serve(
    settings: Settings, stop: asyncio.Event, *, clock: Clock = SYSTEM_CLOCK,
    ops: tuple[Metrics, Health] | None = None,
    on_listening: Callable[[str], None] = lambda where: None,
) -> None:
    """Serve on `[http] host:port` until `stop` is set; then close the listener, let requests
    in flight finish, and return. Raises Unavailable if the address cannot be listened on."""
    http = settings.http
    app = make_app(settings, clock=clock, ops=ops)
    log.info("web: the unsubscribe link is %s/TOKEN",
             route_prefix(settings.campaigns.unsubscribe_url))
    await serving.serve(app, stop, name="web", section="[http]", host=http.host,
                        port=http.port, shutdown_timeout_s=http.shutdown_timeout_s,
                        on_listening=on_listening)
