"""The console application: its route table, the factory, and `serve` on its own listener.

`make_app` takes the settings and a clock (tests pass their own to expire sessions without
sleeping); `serve` runs it on `[console] host:port` until `stop` is set, then closes the
listener and finishes the requests in flight (`mailer.http.serving`, as the public listener
does). `mailer console` runs `serve` alone; the daemon may run it beside its other tasks.
Headers, client address (after `[http] trusted_proxies`) and page rendering come from the
shared plumbing, `mailer.http`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp.web as web

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.console import audit, campaigns, customers, login, overview, review, rights
from mailer.console.page import APP_SETTINGS, favicon
from mailer.console.render import Renderer
from mailer.console.security import (
    CLIENT,
    CLOCK,
    DB_PATH,
    FORM_MAX_BYTES,
    RENDERER,
    SETTINGS,
    headers_middleware,
    session_middleware,
)
from mailer.http import serving
from mailer.http.client import ClientAddress
from mailer.http.headers import add_security_headers, content_security_policy
from mailer.settings import Settings
from mailer.store.db import open_db

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
        web.get(r"/campaigns/{campaign_id:\d+}/cancel", campaigns.cancel_confirm),
        web.post(r"/campaigns/{campaign_id:\d+}/test", campaigns.campaign_test),
        web.post(r"/campaigns/{campaign_id:\d+}/schedule", campaigns.campaign_schedule),
        web.post(r"/campaigns/{campaign_id:\d+}/{action:pause|resume|cancel}",
                 campaigns.campaign_action),
        web.get("/review", review.review_list),
        web.get(r"/review/{item_id:\d+}", review.review_item),
        web.post(r"/review/{item_id:\d+}/resolve", review.review_resolve),
        web.post(r"/review/{item_id:\d+}/dismiss", review.review_dismiss),
        web.post(r"/review/{item_id:\d+}/opt-in", review.review_opt_in),
        web.get("/customers", customers.customer_search),
        web.get(r"/customers/{customer_id:\d+}", customers.customer_page),
        web.get(r"/customers/{customer_id:\d+}/export", rights.download),
        web.get(r"/customers/{customer_id:\d+}/erase", rights.erase_confirm),
        web.post(r"/customers/{customer_id:\d+}/erase", rights.erase),
        web.post(r"/customers/{customer_id:\d+}/consent", customers.customer_consent),
        web.get("/customers/import", customers.import_form),
        web.post("/customers/import", customers.import_upload),
        web.get("/audit", audit.audit_log),
        web.get("/favicon.svg", favicon),
        web.get("/favicon.ico", favicon),
    ]


def make_app(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    # Small bodies for every route; the CSV upload's larger limit applies after its checks.
    app = web.Application(middlewares=[headers_middleware, session_middleware],
                          client_max_size=FORM_MAX_BYTES)
    renderer = Renderer.load(settings.templates.dir)
    app[APP_SETTINGS] = settings
    app[SETTINGS] = settings.console
    app[CLOCK] = clock
    app[RENDERER] = renderer
    app[DB_PATH] = settings.database.location
    app[CLIENT] = ClientAddress(settings.http.trusted_proxies, "console")
    add_security_headers(app, content_security_policy(
        renderer.css_hash, ["img-src 'self' data:", "frame-src 'self'"]))  # frame: the preview
    app.add_routes(routes())

    async def migrate_first(app: web.Application) -> None:
        # Each request opens its own connection, and opening one migrates: done once here,
        # before any request, so the first requests in parallel never migrate side by side.
        async with open_db(settings.database.location):
            pass

    app.on_startup.append(migrate_first)
    return app


async def serve(settings: Settings, stop: asyncio.Event, *, clock: Clock = SYSTEM_CLOCK,
                on_listening: Callable[[str], None] = lambda where: None) -> None:
    """Serve the console on `[console] host:port` until `stop` is set; then close the listener
    and finish requests in flight (up to SHUTDOWN_TIMEOUT_S). Raises Unavailable if the
    address cannot be listened on."""
    console = settings.console
    await serving.serve(make_app(settings, clock=clock), stop, name="console",
                        section="[console]", host=console.host, port=console.port,
                        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S, on_listening=on_listening)
