"""What every console page shares: rendering with the signed-in user, the navigation and the
CSRF token; one-line notices carried across a redirect; the application's settings key; the
favicon."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote

import aiohttp.web as web

from mailer.console.security import RENDERER, SESSION, public
from mailer.settings import Settings

APP_SETTINGS: web.AppKey[Settings] = web.AppKey("console_app_settings", Settings)

NAV: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("overview", "Overview", "/", frozenset({"admin", "marketing", "reviewer"})),
    ("campaigns", "Campaigns", "/campaigns", frozenset({"admin", "marketing"})),
    ("review", "Review queue", "/review", frozenset({"admin", "reviewer"})),
    ("customers", "Customers", "/customers", frozenset({"admin", "reviewer"})),
    ("audit", "Audit log", "/audit", frozenset({"admin"})),
)


def render(request: web.Request, template: str, nav: str, *, status: int = 200,
           **context: Any) -> web.Response:
    session = request.get(SESSION)
    user = session.user if session is not None else None
    links = [(key, label, href) for key, label, href, roles in NAV
             if user is not None and user.role in roles]
    text = request.app[RENDERER].page(
        template, user=user, csrf=session.csrf if session is not None else "", nav=nav,
        nav_links=links, notice=notice_of(request),
        zone=request.app[APP_SETTINGS].console.timezone, **context)
    return web.Response(status=status, text=text, content_type="text/html")


def _signature(request: web.Request, notice: str) -> str:
    # Keyed by the session's secret CSRF token: a link made elsewhere cannot put words in
    # the console's mouth.
    session = request.get(SESSION)
    key = session.csrf.encode() if session is not None else b""
    return hmac.new(key, notice.encode(), hashlib.sha256).hexdigest()[:32]


def notice_of(request: web.Request) -> str:
    notice = request.query.get("done", "")
    sent = request.query.get("sig", "")
    if notice and hmac.compare_digest(sent, _signature(request, notice)):
        return notice
    return ""


def redirect(request: web.Request, path: str, notice: str = "") -> web.HTTPSeeOther:
    """A 303 to `path` (after a POST), carrying a one-line notice shown at the top."""
    if notice:
        path += (("&" if "?" in path else "?") + "done=" + quote(notice)
                 + "&sig=" + _signature(request, notice))
    return web.HTTPSeeOther(path)


@public
async def favicon(request: web.Request) -> web.StreamResponse:
    """The console's icon (an SVG; `img-src 'self'` in the CSP allows it), for every page's
    `<link rel="icon">` and for browsers that ask for /favicon.ico regardless."""
    return web.Response(body=request.app[RENDERER].favicon, content_type="image/svg+xml")
