"""Everything between the network and a console handler: error pages, sessions, roles, CSRF,
request body limits, and where to go after signing in.

The security headers and `Server` come from the shared plumbing (`mailer.http.headers`, set by
`app.make_app`). Two middlewares, outermost first:

- `headers_middleware` turns an HTTP error into the console's error page and an unexpected
  exception into a plain 500 page (no traceback reaches the browser).
- `session_middleware` opens the request's database connection, finds the session from the
  cookie (expired by idle time or age against the app's clock), and refuses before the
  handler runs: an anonymous user is sent to the login page, a user whose role the route
  does not allow gets 403, and a POST without the session's CSRF token gets 403.

Routes are closed by default: a handler must say who may use it with `@allow(...)` or
`@public`. Every request body is small (`FORM_MAX_BYTES`, 413 beyond): an anonymous client
must not make the console hold megabytes. Only a route marked `@upload` takes up to
`[console] max_upload_bytes`, and only once the session and the role have been checked.
"""

from __future__ import annotations

import hmac
import logging
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp.web as web

from mailer.clock import Clock
from mailer.console.render import Renderer
from mailer.http.client import ClientAddress
from mailer.http.forms import read_form
from mailer.settings import ConsoleSettings
from mailer.store import users
from mailer.store.db import MAX_INTEGER, Connection, open_db

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

COOKIE = "console_session"
LOGIN_COOKIE = "console_login"

# The largest body of any form but an upload: the biggest console form (a campaign with its
# subject) is a few kilobytes.
FORM_MAX_BYTES = 64 * 1024

SETTINGS: web.AppKey[ConsoleSettings] = web.AppKey("console_settings", ConsoleSettings)
CLOCK: web.AppKey[Clock] = web.AppKey("console_clock", Clock)
RENDERER: web.AppKey[Renderer] = web.AppKey("console_renderer", Renderer)
DB_PATH: web.AppKey[Any] = web.AppKey("console_db_path", object)
CONN: web.RequestKey[Connection] = web.RequestKey("console_conn", Connection)
SESSION: web.RequestKey[users.Session | None] = web.RequestKey("console_session")
CLIENT: web.AppKey[ClientAddress] = web.AppKey("console_client_address", ClientAddress)


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


def upload(handler: H) -> H:
    """Let the route's body be up to `[console] max_upload_bytes` (a CSV file), once the
    session and the role have been checked."""
    handler.console_upload = True  # type: ignore[attr-defined]
    return handler


def conn_of(request: web.Request) -> Connection:
    return request[CONN]


def path_id(request: web.Request, name: str) -> int:
    """The numeric id in the route's `{name}` part; a plain 404 for anything else, including
    a number too large to be an id."""
    text = request.match_info[name]
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_INTEGER)) \
            or int(text) > MAX_INTEGER:
        raise web.HTTPNotFound()
    return int(text)


def session_of(request: web.Request) -> users.Session:
    session = request.get(SESSION)
    assert isinstance(session, users.Session)
    return session


def actor(request: web.Request) -> str:
    return session_of(request).user.name


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
    request.app[CLIENT].of(request)  # logs once if an untrusted proxy forwards requests
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect: aiohttp wants it raised
            raise
        response = error_page(request, exc.status, exc.reason, exc.text or exc.reason)
    except Exception:
        log.exception("console: %s %s failed", request.method, request.path)
        response = error_page(request, 500, "Something went wrong",
                              "The console could not do that. The error has been logged.")
    return response


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
        if getattr(route, "console_upload", False):
            # The larger limit only now, for a user the route allows.
            request = request.clone(client_max_size=settings.max_upload_bytes)
        if request.method == "POST":
            form = await read_form(request)
            sent = form.get("csrf")
            if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
                return error_page(request, 403, "This form has expired",
                                  "Go back, reload the page and try again.")
        return await handler(request)


def _quote_path(request: web.Request) -> str:
    from urllib.parse import quote

    return quote(request.path_qs, safe="")


def safe_next(target: str) -> str:
    """Where to go after login: only a path on this console, never another site.

    Browsers and URL libraries forgive a lot on the way to a Location header: a tab or newline
    is dropped (WHATWG URL, "remove all ASCII tab or newline"), a backslash is a slash, and
    percent-escapes are decoded, so `/%09/evil.example` becomes `//evil.example`, a
    network-path reference to another host (RFC 3986 §4.2). So the target must be an
    absolute path (RFC 3986 §4.2, "path-absolute") with no scheme, no authority, and no
    whitespace, control character or backslash, as written or once percent-decoded."""
    if not target.startswith("/") or len(target) > 2000:
        return "/"
    decoded = unquote(target)
    for text in (target, decoded):
        if text.startswith("//") or any(_unsafe(c) for c in text):
            return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _unsafe(char: str) -> bool:
    return char == "\\" or char.isspace() or unicodedata.category(char).startswith("C")
