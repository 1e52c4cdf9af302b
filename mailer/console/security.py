"""Everything between the network and a console handler: headers, sessions, roles, CSRF.

Two middlewares, outermost first:

- `headers_middleware` puts the security headers on every answer, errors included, and turns
  an unexpected exception into a plain 500 page (no traceback reaches the browser).
- `session_middleware` opens the request's database connection, finds the session from the
  cookie (expired by idle time or age against the app's clock), and refuses before the
  handler runs: an anonymous user is sent to the login page, a user whose role the route
  does not allow gets 403, and a POST without the session's CSRF token gets 403.

Routes are closed by default: a handler must say who may use it with `@allow(...)` or
`@public`. Login throttling (`throttle_keys`) counts failures per name and per client.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp.web as web
import aiosqlite

from mailer.clock import Clock
from mailer.console.render import Renderer
from mailer.settings import ConsoleSettings
from mailer.store import users
from mailer.store.db import open_db

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

COOKIE = "console_session"
LOGIN_COOKIE = "console_login"

SETTINGS: web.AppKey[ConsoleSettings] = web.AppKey("console_settings", ConsoleSettings)
CLOCK: web.AppKey[Clock] = web.AppKey("console_clock", Clock)
RENDERER: web.AppKey[Renderer] = web.AppKey("console_renderer", Renderer)
DB_PATH: web.AppKey[Any] = web.AppKey("console_db_path", object)
CONN: web.RequestKey[aiosqlite.Connection] = web.RequestKey("console_conn", aiosqlite.Connection)
SESSION: web.RequestKey[users.Session | None] = web.RequestKey("console_session")


def allow(*roles: str) -> Callable[[H], H]:
    """Let users with these roles (and admins) use the route."""
    def mark(handler: H) -> H:
        handler.console_roles = frozenset({"admin", *roles})  # type: ignore[attr-defined]
        return handler
    return mark


def public(handler: H) -> H:
    """Let anyone use the route (the login page, and nothing else that shows data)."""
    handler.console_public = True  # type: ignore[attr-defined]
    return handler


def conn_of(request: web.Request) -> aiosqlite.Connection:
    return request[CONN]


def path_id(request: web.Request, name: str) -> int:
    """The numeric id in the route's `{name}` part; a plain 404 for anything else."""
    try:
        return int(request.match_info[name])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc


def session_of(request: web.Request) -> users.Session:
    session = request.get(SESSION)
    assert isinstance(session, users.Session)
    return session


def actor(request: web.Request) -> str:
    return session_of(request).user.name


def content_security_policy(style_hash: str) -> str:
    return (
        "default-src 'none'; "
        f"style-src {style_hash}; "
        "img-src 'self' data:; "
        "frame-src 'self'; "  # the sandboxed campaign preview
        "form-action 'self'; "
        "frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    renderer = request.app[RENDERER]
    session = request.get(SESSION)
    text = renderer.page("error.html", title=title, message=message, status=status,
                         user=session.user if isinstance(session, users.Session) else None,
                         csrf=session.csrf if isinstance(session, users.Session) else "",
                         nav="")
    return web.Response(status=status, text=text, content_type="text/html")


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect: aiohttp wants it raised, with our headers on it
            _secure(request, exc)
            raise
        response = error_page(request, exc.status, exc.reason, exc.text or exc.reason)
    except Exception:
        log.exception("console: %s %s failed", request.method, request.path)
        response = error_page(request, 500, "Something went wrong",
                              "The console could not do that. The error has been logged.")
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy",
                       content_security_policy(request.app[RENDERER].css_hash))
    headers.setdefault("X-Frame-Options", "DENY")
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cache-Control"] = "no-store"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"


def _route_handler(request: web.Request) -> Any:
    return request.match_info.handler


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    clock = request.app[CLOCK]
    route = _route_handler(request)
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception
    async with open_db(request.app[DB_PATH]) as conn:
        request[CONN] = conn
        token = request.cookies.get(COOKIE, "")
        session = None
        if token:
            session = await users.session(conn, token, clock.time(),
                                          idle_s=settings.session_idle_s,
                                          max_s=settings.session_max_s)
        request[SESSION] = session
        if getattr(route, "console_public", False):
            return await handler(request)
        if session is None:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther(f"/login?next={_quote_path(request)}")
            raise web.HTTPSeeOther("/login")
        roles: frozenset[str] = getattr(route, "console_roles", frozenset())
        if session.user.role not in roles:
            log.info("console: %s (%s) refused %s %s", session.user.name, session.user.role,
                     request.method, request.path)
            return error_page(request, 403, "You cannot use this page",
                              "Your account does not have access to this page. Ask an "
                              "administrator if you need it.")
        if request.method == "POST":
            form = await request.post()
            sent = form.get("csrf")
            if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
                return error_page(request, 403, "This form has expired",
                                  "Go back, reload the page and try again.")
        return await handler(request)


def _quote_path(request: web.Request) -> str:
    from urllib.parse import quote

    return quote(request.path_qs, safe="")


def safe_next(target: str) -> str:
    """Where to go after login: only a path on this console (never another site)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def throttle_keys(name: str, client: str) -> tuple[str, ...]:
    return (f"user:{name.lower()}", f"client:{client}")
