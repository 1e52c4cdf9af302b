"""Signing in and out.

The login form is protected against cross-site posting by a double-submitted token (a cookie
and a hidden field that must agree) as well as `SameSite=Strict`. Every attempt is counted
before its password is checked (`store.users.begin_login`, one transaction): one name from one
client gets `[console] login_max_failures` attempts, then growing delays; one client, whatever
names it tries, four times as many (several people share an office's address) within the
window, then `login_lockout_s`. A refused attempt gets 429 whatever the password, and is not
checked. The client is the address after `[http] trusted_proxies` (`mailer.http.client`).
Passwords are checked off the event loop (Argon2id takes tens of milliseconds), an unknown name
costs the same as a wrong password, and an older hash is replaced after a sign-in that
verified it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets

import aiohttp.web as web

from mailer.console.security import (
    CLIENT,
    CLOCK,
    COOKIE,
    LOGIN_COOKIE,
    RENDERER,
    SESSION,
    SETTINGS,
    allow,
    conn_of,
    public,
    safe_next,
)
from mailer.http.client import limit_key
from mailer.http.forms import read_form
from mailer.settings import ConsoleSettings
from mailer.store import users
from mailer.store.db import transaction

log = logging.getLogger(__name__)

CLIENT_FACTOR = 4
MAX_NAME = 64  # `mailer users add` refuses longer names


def _login_page(request: web.Request, *, status: int = 200, error: str = "", name: str = "",
                next_path: str = "/") -> web.Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    text = request.app[RENDERER].page(
        "login.html", title="Sign in", user=None, csrf="", nav="", login_token=token,
        error=error, name=name, next_path=next_path)
    response = web.Response(status=status, text=text, content_type="text/html")
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=request.app[SETTINGS].secure_cookie)
    return response


@public
async def login_form(request: web.Request) -> web.StreamResponse:
    if request.get(SESSION) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next", "/")))
    return _login_page(request, next_path=safe_next(request.query.get("next", "/")))


def _client(request: web.Request) -> str:
    return limit_key(request.app[CLIENT].of(request))


def throttle(settings: ConsoleSettings) -> users.Throttle:
    return users.Throttle(free_failures=settings.login_max_failures,
                          client_failures=settings.login_max_failures * CLIENT_FACTOR,
                          window_s=settings.login_window_s, lockout_s=settings.login_lockout_s)


def _wait(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


@public
async def login(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    now = request.app[CLOCK].time()
    form = await read_form(request)
    name = str(form.get("name", "")).strip()[:MAX_NAME]
    password = str(form.get("password", ""))
    next_path = safe_next(str(form.get("next", "/")))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    sent = str(form.get("login_token", ""))
    if not cookie or not hmac.compare_digest(cookie, sent):
        return _login_page(request, status=403, name=name, next_path=next_path,
                           error="The sign-in form had expired. Try again.")
    conn = conn_of(request)
    client = _client(request)
    keys = users.throttle_keys(name, client)
    wait_s = await users.begin_login(conn, keys, now, throttle(settings))
    if wait_s:
        log.info("console: login refused for %.0f s more (client %s)", wait_s, client)
        response = _login_page(request, status=429, name=name, next_path=next_path,
                               error=f"Too many failed attempts. Wait {_wait(wait_s)}, then "
                                     "try again.")
        response.headers["Retry-After"] = str(math.ceil(wait_s))
        return response
    found = await users.user_with_hash(conn, name) if name else None
    stored = found[1] if found else users.dummy_hash()
    ok = await asyncio.to_thread(users.verify_password, password, stored)
    if found is None or not ok:
        log.info("console: failed login (client %s)", client)
        return _login_page(request, status=401, name=name, next_path=next_path,
                           error="The name or password is not right.")
    user = found[0]
    rehashed = (await asyncio.to_thread(users.hash_password, password)
                if users.needs_rehash(stored) else None)
    async with transaction(conn):
        token = await users.create_session(conn, user.id, now)
        await users.login_succeeded(conn, keys)
        if rehashed is not None:
            await users.replace_hash(conn, user.id, stored, rehashed)
        await users.audit(conn, user.name, "signed in")
    log.info("console: user %s signed in", user.id)
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=settings.secure_cookie or request.secure)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


@allow("marketing", "reviewer")
async def logout(request: web.Request) -> web.StreamResponse:
    conn = conn_of(request)
    async with transaction(conn):
        await users.end_session(conn, request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response
