"""Review queue pages: the waiting requests, one request shown safely (its text as text,
never its HTML rendered, attachments named and never opened) with the customers the matcher
considered, and resolving or dismissing it with the same effect as `mailer review resolve`.
An item marked "opt back in" also offers to record the opt-in it asks for, with the request
as the evidence. Either carries the user's name into the consent history (`actor`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp.web as web

from mailer.categories import CATEGORIES, label
from mailer.console import links
from mailer.console.page import APP_SETTINGS, redirect, render
from mailer.console.security import actor, allow, conn_of, path_id, session_of
from mailer.errors import BadInput, ImapError, MailerError, NotFound
from mailer.http.forms import read_form
from mailer.inbox.optback import OPT_BACK_IN
from mailer.store import inbox as inbox_store
from mailer.store import users
from mailer.store.db import transaction
from mailer.wording import plural

log = logging.getLogger(__name__)


@allow("reviewer")
async def review_list(request: web.Request) -> web.StreamResponse:
    settled = request.query.get("all") == "1"
    items = await inbox_store.review_items(conn_of(request), include_settled=settled)
    return render(request, "review_list.html", "review", items=items, settled=settled)


async def _item_page(request: web.Request, *, status: int = 200, error: str = "",
                     chosen: list[str] | None = None, other: str = "",
                     optin_error: str = "", optin: Mapping[str, object] | None = None,
                     ) -> web.Response:
    settings = request.app[APP_SETTINGS]
    conn = conn_of(request)
    item = await inbox_store.review_item(conn, path_id(request, "item_id"))
    if item is None:
        raise web.HTTPNotFound(text="There is no such review item.")
    message: links.RequestMessage | None = None
    fetch_problem = ""
    if item.status == "open":
        try:
            message = await links.fetch_request(conn, settings, item.message_id)
        except ImapError as exc:
            fetch_problem = f"The message cannot be fetched from the mail server now: {exc}"
        if message is None and not fetch_problem:
            fetch_problem = "The message is no longer in the review folder."
    return render(request, "review_item.html", "review", status=status, item=item,
                  message=message, fetch_problem=fetch_problem, error=error,
                  chosen=chosen or [], other=other, optin_error=optin_error,
                  optin=optin or {"email": "", "categories": []}, categories=CATEGORIES,
                  label=label, opt_back_in=item.marked == OPT_BACK_IN)


@allow("reviewer")
async def review_item(request: web.Request) -> web.StreamResponse:
    return await _item_page(request)


@allow("reviewer")
async def review_resolve(request: web.Request) -> web.StreamResponse:
    settings = request.app[APP_SETTINGS]
    item_id = path_id(request, "item_id")
    form = await read_form(request)
    chosen = [str(v) for v in form.getall("customer", [])]
    other = str(form.get("other", "")).strip()
    emails = [*chosen, *([other] if other else [])]
    if not emails:
        return await _item_page(request, status=400, chosen=chosen, other=other,
                                error="Choose at least one customer, or enter an address")
    conn = conn_of(request)
    try:
        item = await links.resolve(conn, settings, item_id, emails, actor(request))
    except NotFound as exc:
        return await _item_page(request, status=400, error=str(exc), chosen=chosen, other=other)
    except MailerError as exc:
        raise redirect(request, f"/review/{item_id}", str(exc)) from exc
    async with transaction(conn):
        await users.audit(conn, actor(request), "resolved review item",
                          f"review item {item_id}: {plural(len(set(emails)), 'customer')}")
    log.info("console: review item %s resolved by user %s", item_id,
             session_of(request).user.id)
    problem = await links.file_settled(settings, item.message_id)
    raise redirect(request, "/review", f"Request {item_id} resolved: "
                   f"{plural(len(set(emails)), 'customer')} unsubscribed. {problem}".strip())


@allow("reviewer")
async def review_opt_in(request: web.Request) -> web.StreamResponse:
    """Record the opt-in an item marked "opt back in" asks for (admin and reviewer only)."""
    settings = request.app[APP_SETTINGS]
    item_id = path_id(request, "item_id")
    form = await read_form(request)
    email = str(form.get("email", "")).strip()
    wanted = [c for c in CATEGORIES if c in {str(v) for v in form.getall("category", [])}]
    kept = {"email": email, "categories": wanted}
    if not email:
        return await _item_page(request, status=400, optin=kept,
                                optin_error="Enter the email address of the customer to opt in")
    conn = conn_of(request)
    try:
        item = await links.record_opt_in(conn, item_id, email, wanted, actor(request))
    except (NotFound, BadInput) as exc:
        return await _item_page(request, status=400, optin=kept, optin_error=str(exc))
    except MailerError as exc:
        raise redirect(request, f"/review/{item_id}", str(exc)) from exc
    async with transaction(conn):
        await users.audit(conn, actor(request), "recorded an opt-in from review",
                          f"review item {item_id}: {', '.join(wanted)}")
    log.info("console: review item %s: opt-in recorded by user %s", item_id,
             session_of(request).user.id)
    problem = await links.file_settled(settings, item.message_id)
    raise redirect(request, "/review", f"Request {item_id}: opt-in recorded for {email}. "
                   f"{problem}".strip())


@allow("reviewer")
async def review_dismiss(request: web.Request) -> web.StreamResponse:
    settings = request.app[APP_SETTINGS]
    item_id = path_id(request, "item_id")
    conn = conn_of(request)
    try:
        item = await links.dismiss(conn, item_id)
    except NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    except MailerError as exc:
        raise redirect(request, f"/review/{item_id}", str(exc)) from exc
    async with transaction(conn):
        await users.audit(conn, actor(request), "dismissed review item", f"review item {item_id}")
    problem = await links.file_settled(settings, item.message_id)
    raise redirect(request, "/review", f"Request {item_id} dismissed. {problem}".strip())
