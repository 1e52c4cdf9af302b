"""Customer pages: search by name, address or company (indexed, paged by id), one customer's
preferences, deliverability and full consent history, CSV import by upload with the same
all-or-none validation and line-numbered errors as `mailer customers import`, and, for
administrators, the customer's data rights: "Download data" (the export of `mailer customers
export`) and "Erase" after a confirmation page (`mailer customers erase`)."""

from __future__ import annotations

import logging

import aiohttp.web as web

from mailer.categories import CATEGORIES, label
from mailer.console import forms, links
from mailer.console.page import APP_SETTINGS, redirect, render
from mailer.console.security import actor, allow, conn_of, path_id, session_of, upload
from mailer.errors import BadInput
from mailer.http.forms import read_form
from mailer.store import console as console_store
from mailer.store import customers as customer_store
from mailer.store import rights as rights_store
from mailer.store import users
from mailer.store.db import MAX_INTEGER, transaction
from mailer.wording import plural

log = logging.getLogger(__name__)

PAGE_SIZE = 25


@allow("reviewer")
async def customer_search(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "").strip()[:200]
    after = forms.page_number(request.query.get("after"), largest=MAX_INTEGER)
    if after is None:
        raise web.HTTPBadRequest(text="The page to show ('after') must be a customer id.")
    page = None
    if query:
        page = await console_store.search_customers(conn_of(request), query, after=after,
                                                    limit=PAGE_SIZE)
    return render(request, "customers.html", "customers", query=query, page=page,
                  after=after, categories=CATEGORIES)


@allow("reviewer")
async def customer_page(request: web.Request) -> web.StreamResponse:
    customer_id = path_id(request, "customer_id")
    conn = conn_of(request)
    customer = await console_store.customer(conn, customer_id)
    if customer is None:
        raise web.HTTPNotFound(text="There is no such customer.")
    if (erased := await rights_store.erased_at(conn, customer_id)) is not None:
        raise web.HTTPNotFound(text=f"Customer {customer_id} was erased on {erased[:10]}; "
                                    "nothing is held about them.")
    return render(request, "customer.html", "customers", customer=customer,
                  history=await customer_store.history(conn, customer_id),
                  delivery=await console_store.deliverability(conn, customer_id),
                  categories=CATEGORIES, label=label)


@allow("reviewer")
async def import_form(request: web.Request) -> web.StreamResponse:
    return render(request, "import.html", "customers", error="", report=None, filename="")


@allow("reviewer")
@upload
async def import_upload(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    upload = form.get("file")
    if not isinstance(upload, web.FileField) or not upload.filename:
        return render(request, "import.html", "customers", status=400, report=None,
                      filename="", error="Choose a CSV file to upload")
    filename = upload.filename
    data = upload.file.read()
    conn = conn_of(request)
    try:
        report = await links.import_csv(
            conn, data, filename,
            suppression_key=request.app[APP_SETTINGS].privacy.key)
    except BadInput as exc:
        return render(request, "import.html", "customers", status=400, report=None,
                      filename=filename, error=str(exc))
    if not report.ok:
        return render(request, "import.html", "customers", status=400, report=report,
                      filename=filename,
                      error=f"{filename}: {plural(len(report.bad_rows), 'bad row')}; "
                            "nothing was imported")
    async with transaction(conn):
        await users.audit(conn, actor(request), "imported customers",
                          f"{filename}: {report.created} created, {report.updated} updated")
    log.info("console: import by user %s: %s created, %s updated",
             session_of(request).user.id,
             report.created, report.updated)
    raise redirect(request, "/customers/import",
                   f"Imported {filename}: {report.created} created, {report.updated} "
                   f"updated, {report.unchanged} unchanged, "
                   f"{plural(len(report.kept_opt_outs), 'opt-out')} kept, "
                   f"{len(report.suppressed)} suppressed (erased before: opted out of "
                   "everything)")
