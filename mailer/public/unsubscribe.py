"""The handlers behind the unsubscribe link, `{path of [campaigns] unsubscribe_url}/TOKEN`.

- `GET`/`HEAD`: the preference page. Never changes anything: mail scanners and link previews
  fetch every link.
- `POST` with `List-Unsubscribe=One-Click` (RFC 8058 §3.2, urlencoded or multipart): opt out of
  `[unsubscribe] categories` at once and answer 200 with a short plain body; no redirect, no
  cookie, no confirmation. Other fields next to it are ignored (RFC 8058 only requires that one).
- `POST` from the page's forms (`nonce`, `action` = save | everything, `categories`): apply
  exactly what was chosen, then 303 to the page with `?saved=choices|everything`, which shows
  the saved choices and a notice (post/redirect/get: a refresh does not post again).

A link opens the page only when the ledger shows its message was sent to the customer its
token names (`mailer.store.links`): a token made for a preview or a draft never sent proves
nothing about the customer. A forged, truncated or unknown token, a token whose message was
never sent, or the token of a customer who has been erased, gets the same plain 404 page and
changes nothing. Two links change nothing by design and say so (200, on GET and POST alike):
the sample link of a campaign preview and the link in a test copy.
Handlers are thin: consent changes are in `choices`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from mailer.categories import CATEGORIES, label
from mailer.http.forms import BadForm, read_form
from mailer.mail.tokens import (
    SAMPLE_TOKEN,
    LinkToken,
    form_nonce,
    read_link_token,
    verify_form_nonce,
    verify_token_for_test_copies,
)
from mailer.public import choices
from mailer.public.context import WEB, WebContext
from mailer.public.evidence import web_evidence, wording_version
from mailer.public.middlewares import CLIENT, CUSTOMER, OUTCOME
from mailer.store import customers as customer_store
from mailer.store.customers import Customer
from mailer.store.evidence import EventEvidence

# A page may be left open this long before Save (a customer reading slowly, a tab left open).
NONCE_MAX_AGE_S = 24 * 3600.0
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _link(request: web.Request, ctx: WebContext) -> LinkToken:
    link = read_link_token(ctx.secrets, request.match_info["token"])
    if link is None:
        request[OUTCOME] = "bad token"
        raise web.HTTPNotFound()
    request[CUSTOMER] = link.customer_id
    return link


async def _require_sent(request: web.Request, ctx: WebContext, link: LinkToken) -> None:
    """404 unless the ledger shows the link's message sent to its customer."""
    async with ctx.db() as conn:
        sent = await choices.was_sent(conn, link)
    if not sent:
        raise _not_sent(request)


def _not_sent(request: web.Request) -> web.HTTPNotFound:
    # The same 404 as a bad token: the page tells no one which tokens we have made.
    request[OUTCOME] = "message not sent"
    return web.HTTPNotFound()


# What a link that changes nothing says: (title, what happened, what the real link does).
INERT: dict[str, tuple[str, str, str]] = {
    "sample": ("This is a sample link",
               "This is a sample link in a preview; nothing was changed.",
               "In the emails we send, this link opens the customer’s own email choices."),
    "test copy": ("This is a test copy",
                  "This link came in a test copy of a campaign; nothing was changed.",
                  "In the emails we send, this link opens the customer’s own email choices."),
}


def _inert(request: web.Request, ctx: WebContext) -> web.Response | None:
    """The page of a link that changes nothing (a preview's sample, a test copy's), or None.
    A one-click POST gets the same words as plain text (RFC 8058 §3.2 answers have no page)."""
    token = request.match_info["token"]
    if token == SAMPLE_TOKEN:
        kind = "sample"
    elif verify_token_for_test_copies(ctx.secrets, token) is not None:
        kind = "test copy"
    else:
        return None
    request[OUTCOME] = f"{kind} link"
    title, message, real_link = INERT[kind]
    if request.method == "POST":
        return web.Response(text=f"{message}\n")
    return web.Response(text=ctx.pages.render("notice", {
        "title": title, "message": message, "real_link": real_link}), content_type="text/html")


def _unknown_customer(request: web.Request) -> web.HTTPNotFound:
    request[OUTCOME] = "unknown customer"
    return web.HTTPNotFound()


# What the page says after a save; the redirect names one of these, never the words.
SAVED: dict[str, str] = {
    "choices": "Your email choices have been saved.",
    "everything": "You have been unsubscribed from everything. We will not send you these "
                  "emails. You will still get service messages about your account.",
}


async def show(request: web.Request) -> web.StreamResponse:
    """GET and HEAD: the preference page, read-only (with `?saved=`, the notice of a save)."""
    ctx = request.app[WEB]
    inert = _inert(request, ctx)
    if inert is not None:
        return inert
    link = _link(request, ctx)
    async with ctx.db() as conn:
        sent = await choices.was_sent(conn, link)
        customer = await customer_store.get(conn, link.customer_id) if sent else None
    if not sent:
        raise _not_sent(request)
    if customer is None:
        raise _unknown_customer(request)
    request[OUTCOME] = "page shown"
    return page(ctx, customer, saved=SAVED.get(request.query.get("saved", ""), ""))


async def submit(request: web.Request) -> web.StreamResponse:
    """POST: one-click, or the preference page's forms."""
    ctx = request.app[WEB]
    inert = _inert(request, ctx)
    if inert is not None:
        return inert
    link = _link(request, ctx)
    if request.content_type not in _FORM_TYPES:
        request[OUTCOME] = "wrong content type"
        raise web.HTTPUnsupportedMediaType()
    try:
        form = await read_form(request)  # 413 past [http] max_body_bytes
    except BadForm:
        request[OUTCOME] = "unreadable form"
        raise
    if "List-Unsubscribe" in form:  # the ledger is checked in the click's group commit
        return await _one_click(request, ctx, link, form.getall("List-Unsubscribe"))
    await _require_sent(request, ctx, link)
    action, nonce = form.get("action"), form.get("nonce")
    wanted = _wanted(action, form.getall("categories", []))
    if wanted is None or not isinstance(nonce, str):
        request[OUTCOME] = "bad form"
        raise web.HTTPBadRequest()
    if not verify_form_nonce(ctx.secrets, link.customer_id, nonce, now_s=ctx.clock.time(),
                             max_age_s=NONCE_MAX_AGE_S):
        async with ctx.db() as conn:
            customer = await customer_store.get(conn, link.customer_id)
        if customer is None:
            raise _unknown_customer(request)
        request[OUTCOME] = "stale page"
        return page(ctx, customer, status=400, error=(
            "This page was open for too long, so nothing was saved. Check your choices "
            "below and save them again."))
    async with ctx.db() as conn:
        shown = await customer_store.get(conn, link.customer_id)
        if shown is None:
            raise _unknown_customer(request)
        # The wording of the page this form came from: the same page rendered again for the
        # customer as they were before this save (the nonce is left out of the hash).
        evidence = _evidence(request, wording_version(page(ctx, shown).text or ""))
        outcome = await choices.save(conn, link, wanted, evidence)
        customer = await customer_store.get(conn, link.customer_id) if outcome.found else None
    if customer is None:
        raise _unknown_customer(request)
    request[OUTCOME] = f"saved {outcome.name}"
    # 303 (RFC 9110 §15.4.4): the browser GETs the page, so a refresh cannot post again.
    # Returned, not raised, so the request's log line and opt-out count see it like any other.
    saved = "everything" if action == "everything" else "choices"
    return web.Response(status=303, headers={"Location": f"{request.path}?saved={saved}"})


def _evidence(request: web.Request, wording: str) -> EventEvidence:
    return web_evidence(request.get(CLIENT, ""), request.headers.get("User-Agent", ""), wording)


def _wanted(action: object, ticked: list[Any]) -> choices.Choices | None:
    """What the page's form asks for, or None if it is not a form we served."""
    if action == "everything":
        return choices.Choices.everything_off()
    if action != "save" or not all(isinstance(t, str) for t in ticked):
        return None
    try:
        return choices.Choices.ticked(ticked)
    except ValueError:  # a category we do not have
        return None


async def _one_click(request: web.Request, ctx: WebContext, link: LinkToken,
                     values: list[Any]) -> web.StreamResponse:
    # RFC 8058 §3.2: the receiver POSTs the header's one key/value pair, and only this value.
    if values != ["One-Click"]:
        request[OUTCOME] = "bad one-click body"
        raise web.HTTPBadRequest()
    # A one-click POST comes from the mail client or provider, with no page shown.
    outcome = await ctx.one_click.click(link, _evidence(request, ""))
    if not outcome.sent:
        raise _not_sent(request)
    if not outcome.found:
        raise _unknown_customer(request)
    request[OUTCOME] = f"one-click {outcome.name}"
    names = " and ".join(label(c) for c in ctx.one_click_categories)
    return web.Response(text=f"You are unsubscribed from {names}.\n")


def page(ctx: WebContext, customer: Customer, *, status: int = 200, saved: str = "",
         error: str = "") -> web.Response:
    """The preference page for `customer`, with a fresh form nonce."""
    categories: list[Mapping[str, Any]] = [
        {"name": c, "title": _sentence(label(c)), "on": customer.preferences[c]}
        for c in CATEGORIES
    ]
    html = ctx.pages.render("preferences", {
        "name": customer.name,
        "categories": categories,
        "nonce": form_nonce(ctx.secrets[0], customer.id, ctx.clock.time()),
        "saved": saved,
        "error": error,
        "any_on": any(customer.preferences[c] for c in CATEGORIES),
    })
    return web.Response(text=html, content_type="text/html", status=status)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
