"""The public web server: the app factory (`make_app`) and its lifecycle (`serve`).

Routes live under the path of `[campaigns] unsubscribe_url`, so a TLS proxy in front forwards
the path as it is: with `https://www.imperialtelecom.co.uk/unsubscribe` the server answers
`/unsubscribe/TOKEN` on `[http] host:port`. `/healthz` answers 200 while the database can be
read (for the proxy and systemd).

`serve(settings, stop)` listens until `stop` is set, then closes the listener, lets requests in
flight finish (at most `[http] shutdown_timeout_s`) and returns; `mailer web` runs it alone, and
the daemon can run it next to its other tasks. aiohttp's access log is off: it would write the
path, and the path holds the token (our own log line names the customer id instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import BadInput, StoreError, Unavailable
from mailer.public import unsubscribe
from mailer.public.context import WEB, WebContext
from mailer.public.middlewares import (
    OUTCOME,
    ClientAddress,
    RateLimiter,
    make_middlewares,
    security_headers,
)
from mailer.public.pages import Pages
from mailer.settings import Settings
from mailer.store import customers as customer_store
from mailer.store.db import open_db

if TYPE_CHECKING:
    from mailer.health.metrics import Health, Metrics

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"

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

    In the daemon (`ops` given) `/healthz` is the daemon's health (the `mailer status` JSON,
    503 when degraded) and `/metrics` its Prometheus numbers; alone (`mailer web`) `/healthz`
    says whether the database can be read.

    Raises BadInput when there is no campaign secret to check links with, and TemplateError
    when a page template is missing or broken.
    """
    secrets = settings.campaigns.link_secrets
    if not secrets:
        raise BadInput("[campaigns] secret: missing (set MAILER_SECRET); the unsubscribe pages "
                       "cannot check links without it")
    pages = Pages(settings.templates.dir)
    ctx = WebContext(pages=pages, secrets=secrets,
                     one_click_categories=settings.unsubscribe.categories, clock=clock)
    headers = security_headers(pages.content_security_policy)

    def error_page(request: web.Request, status: int) -> web.Response:
        title, message = _ERRORS.get(status, _ERRORS[500])
        html = pages.render("error", {"title": title, "message": message})
        return web.Response(text=html, content_type="text/html", status=status)

    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=make_middlewares(
            client_address=ClientAddress(settings.http.trusted_proxies),
            limiter=RateLimiter(settings.http.rate_limit_per_min, clock),
            error_page=error_page,
            exempt=frozenset({HEALTH_PATH, METRICS_PATH}),
        ),
    )
    app[WEB] = ctx

    async def database(app: web.Application) -> AsyncIterator[None]:
        async with open_db(settings.database.path) as conn:
            ctx.conn = conn
            try:
                yield
            finally:
                ctx.conn = None

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(headers)
        response.headers["Server"] = "mailer"  # not aiohttp's and Python's versions

    app.cleanup_ctx.append(database)
    app.on_response_prepare.append(add_headers)
    prefix = route_prefix(settings.campaigns.unsubscribe_url)
    if ops is None:
        app.router.add_get(HEALTH_PATH, healthz, name="healthz")
    else:
        from mailer.health.metrics import add_routes

        add_routes(app, *ops)
        honoured = ops[0].requests_honoured

        async def count_opt_outs(request: web.Request, response: web.StreamResponse) -> None:
            # The outcome names what a request turned off ("one-click off:offers", "saved
            # off:announcements on:offers"): count the refusals by where they came from.
            outcome = str(request.get(OUTCOME, ""))
            if "off:" in outcome:
                source = "one-click" if outcome.startswith("one-click") else "preference page"
                honoured.labels(source=source).inc()

        app.on_response_prepare.append(count_opt_outs)
    app.router.add_get(prefix + "/{token}", unsubscribe.show, name="page")
    app.router.add_post(prefix + "/{token}", unsubscribe.submit, name="submit")
    return app


async def healthz(request: web.Request) -> web.StreamResponse:
    """200 while the database can be read, 503 otherwise (the one place to make it richer)."""
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
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=http.shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, http.host, http.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise Unavailable(f"[http] {http.host}:{http.port}: cannot listen: "
                              f"{exc.strerror or exc}") from exc
        log.info("web: serving %s/TOKEN on http://%s:%d",
                 route_prefix(settings.campaigns.unsubscribe_url), http.host, http.port)
        on_listening(f"{http.host}:{http.port}")
        await stop.wait()
        log.info("web: stopping (finishing requests in flight)")
    finally:
        await runner.cleanup()
    log.info("web: stopped")
