"""The customer's data rights in the console, for administrators only: "Download data" (the
JSON document of `mailer customers export`, request emails included) and "Erase" (that of
`mailer customers erase`), which cannot be undone and so asks first on a page of its own,
with the reason it records."""

from __future__ import annotations

import json
import logging

import aiohttp.web as web

from mailer.consent import rights
from mailer.console.page import APP_SETTINGS, redirect, render
from mailer.console.security import actor, allow, conn_of, path_id
from mailer.errors import ImapError, MailerError
from mailer.http.forms import read_form
from mailer.inbox.imap import ImapClient
from mailer.inbox.worker import imap_config
from mailer.store import console as console_store
from mailer.store import users
from mailer.store.db import transaction

log = logging.getLogger(__name__)


async def _customer(request: web.Request) -> tuple[int, str]:
    customer_id = path_id(request, "customer_id")
    customer = await console_store.customer(conn_of(request), customer_id)
    if customer is None or (not customer.name and customer.email.endswith("@erased.invalid")):
        raise web.HTTPNotFound(text="There is no such customer.")
    return customer_id, customer.email


@allow()
async def download(request: web.Request) -> web.StreamResponse:
    customer_id, email = await _customer(request)
    settings = request.app[APP_SETTINGS]
    conn = conn_of(request)
    try:
        async with await ImapClient.connect(imap_config(settings)) as mailbox:
            document = await rights.export(
                conn, email, mailbox=mailbox, key=settings.privacy.key,
                folders=(settings.imap.processed_folder, settings.imap.review_folder))
    except MailerError as exc:
        raise redirect(request, f"/customers/{customer_id}",
                       f"Cannot export customer {customer_id}: {exc}") from exc
    async with transaction(conn):
        await users.audit(conn, actor(request), "exported customer data",
                          f"customer {customer_id}")
    body = json.dumps(document, indent=2, ensure_ascii=False, default=str)
    return web.Response(
        text=body, content_type="application/json",
        headers={"Content-Disposition":
                 f'attachment; filename="customer-{customer_id}.json"'})


@allow()
async def erase_confirm(request: web.Request) -> web.StreamResponse:
    customer_id, _ = await _customer(request)
    customer = await console_store.customer(conn_of(request), customer_id)
    return render(request, "customer_erase.html", "customers", customer=customer, error="",
                  reason="")


@allow()
async def erase(request: web.Request) -> web.StreamResponse:
    customer_id, email = await _customer(request)
    form = await read_form(request)
    reason = " ".join(str(form.get("reason", "")).split())
    if form.get("confirm") != "yes":
        raise web.HTTPSeeOther(f"/customers/{customer_id}/erase")
    conn = conn_of(request)
    if not reason:
        customer = await console_store.customer(conn, customer_id)
        return render(request, "customer_erase.html", "customers", status=400,
                      customer=customer, reason="",
                      error="Enter why this customer is erased (it is recorded)")
    settings = request.app[APP_SETTINGS]
    try:
        erased = await rights.erase(conn, email, key=settings.privacy.key, reason=reason,
                                    actor=actor(request))
    except MailerError as exc:
        raise redirect(request, f"/customers/{customer_id}", str(exc)) from exc
    async with transaction(conn):
        await users.audit(conn, actor(request), "erased customer",
                          f"customer {customer_id} (erasure {erased.erasure_id})")
    notice = f"Customer {customer_id} is erased."
    try:
        async with await ImapClient.connect(imap_config(settings)) as mailbox:
            await rights.run_pending_erasures(
                conn, mailbox, (settings.imap.processed_folder, settings.imap.review_folder))
    except ImapError as exc:
        log.warning("erasure %s: IMAP clean-up pending: %s", erased.erasure_id, exc)
        notice += " Their emails could not be removed yet; this is retried until done."
    raise redirect(request, "/customers", notice)
