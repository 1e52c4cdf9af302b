"""Signing in and out.

The login form is protected against cross-site posting by a double-submitted token (a cookie
and a hidden field that must agree) as well as `SameSite=Strict`. Failures are counted per
name and per client (a client may fail four times as often: several people share an office's
address); once either reaches its limit, logins for it are refused (429) until the lockout has
passed, whatever the password. Passwords are checked off the event loop (scrypt
takes tens of milliseconds), and an unknown name costs the same as a wrong password.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets

import aiohttp.web as web

from mailer.console.security import (
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
    throttle_keys,
)
from mailer.store import users
from mailer.store.db import transaction

log = logging.getLogger(__name__)

CLIENT_FACTOR = 4


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
    return request.remote or "unknown"


@public
async def login(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    now = request.app[CLOCK].time()
    form = await request.post()
    name = str(form.get("name", "")).strip()
    password = str(form.get("password", ""))
    next_path = safe_next(str(form.get("next", "/")))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    sent = str(form.get("login_token", ""))
    if not cookie or not hmac.compare_digest(cookie, sent):
        return _login_page(request, status=403, name=name, next_path=next_path,
                           error="The sign-in form had expired. Try again.")
    conn = conn_of(request)
    keys = throttle_keys(name, _client(request))
    if await users.locked_until(conn, keys, now):
        log.info("console: login refused while locked (client %s)", _client(request))
        return _login_page(request, status=429, name=name, next_path=next_path,
                           error="Too many failed attempts. Wait 15 minutes, then try again.")
    found = await users.user_with_hash(conn, name) if name else None
    stored = found[1] if found else users.dummy_hash()
    ok = await asyncio.to_thread(users.verify_password, password, stored)
    if found is None or not ok:
        async with transaction(conn):
            # One name locks after max_failures; one client (an office behind one address)
            # after CLIENT_FACTOR times as many, so one person's typos do not lock everyone.
            for key, limit in ((keys[0], settings.login_max_failures),
                               (keys[1], settings.login_max_failures * CLIENT_FACTOR)):
                await users.record_failure(conn, (key,), now, max_failures=limit,
                                           window_s=settings.login_window_s,
                                           lockout_s=settings.login_lockout_s)
        log.info("console: failed login (client %s)", _client(request))
        return _login_page(request, status=401, name=name, next_path=next_path,
                           error="The name or password is not right.")
    user = found[0]
    async with transaction(conn):
        token = await users.create_session(conn, user.id, now)
        await users.clear_failures(conn, keys[0])
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
