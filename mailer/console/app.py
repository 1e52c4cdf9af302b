"""The console application: its route table, the factory, and `serve` on its own listener.

`make_app` takes the settings and a clock (tests pass their own to expire sessions without
sleeping); `serve` runs it on `[console] host:port` until `stop` is set, then finishes the
requests in flight and closes the listener. `mailer console` runs `serve` alone; the daemon
may run it beside its other tasks.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp.web as web

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.console import campaigns, customers, login, overview, review
from mailer.console.page import APP_SETTINGS
from mailer.console.render import Renderer
from mailer.console.security import (
    CLOCK,
    DB_PATH,
    RENDERER,
    SETTINGS,
    headers_middleware,
    session_middleware,
)
from mailer.errors import Unavailable
from mailer.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0


def routes() -> list[web.RouteDef]:
    return [
        web.get("/login", login.login_form),
        web.post("/login", login.login),
        web.post("/logout", login.logout),
        web.get("/", overview.overview),
        web.get("/campaigns", campaigns.campaign_list),
        web.get("/campaigns/new", campaigns.campaign_new),
        web.post("/campaigns/new", campaigns.campaign_create),
        web.get(r"/campaigns/{campaign_id:\d+}", campaigns.campaign_page),
        web.get(r"/campaigns/{campaign_id:\d+}/preview.html", campaigns.campaign_preview_html),
        web.post(r"/campaigns/{campaign_id:\d+}/test", campaigns.campaign_test),
        web.post(r"/campaigns/{campaign_id:\d+}/schedule", campaigns.campaign_schedule),
        web.post(r"/campaigns/{campaign_id:\d+}/{action:pause|resume|cancel}",
                 campaigns.campaign_action),
        web.get("/review", review.review_list),
        web.get(r"/review/{item_id:\d+}", review.review_item),
        web.post(r"/review/{item_id:\d+}/resolve", review.review_resolve),
        web.post(r"/review/{item_id:\d+}/dismiss", review.review_dismiss),
        web.get("/customers", customers.customer_search),
        web.get(r"/customers/{customer_id:\d+}", customers.customer_page),
        web.get("/customers/import", customers.import_form),
        web.post("/customers/import", customers.import_upload),
    ]


def make_app(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    app = web.Application(middlewares=[headers_middleware, session_middleware],
                          client_max_size=settings.console.max_upload_bytes)
    app[APP_SETTINGS] = settings
    app[SETTINGS] = settings.console
    app[CLOCK] = clock
    app[RENDERER] = Renderer.load(settings.templates.dir)
    app[DB_PATH] = settings.database.path
    app.add_routes(routes())
    return app


async def serve(settings: Settings, stop: asyncio.Event, *, clock: Clock = SYSTEM_CLOCK) -> None:
    """Serve the console on `[console] host:port` until `stop` is set; then finish requests in
    flight (up to SHUTDOWN_TIMEOUT_S) and close the listener."""
    runner = web.AppRunner(make_app(settings, clock=clock), access_log=None,
                           shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.console.host, settings.console.port)
        try:
            await site.start()
        except OSError as exc:
            raise Unavailable(f"[console] port {settings.console.port}: cannot listen on "
                              f"{settings.console.host}: {exc.strerror}") from exc
        log.info("console listening on %s:%s", settings.console.host, settings.console.port)
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("console stopped")
