"""Customer pages: search by name, address or company (indexed, paged by id), one customer's
preferences, deliverability and full consent history, recording consent the customer gave or
refused another way (by phone, in a shop: the same as `mailer customers consent`, evidence
required for an opt-in), CSV import by upload with the same all-or-none validation and
line-numbered errors as `mailer customers import`, and, for administrators, the customer's
data rights: "Download data" (the export of `mailer customers export`) and "Erase" after a
confirmation page (`mailer customers erase`)."""

from __future__ import annotations

import logging

import aiohttp.web as web

from mailer.categories import CATEGORIES, label
from mailer.consent.change import Evidence, MissingEvidence, change_consent
from mailer.consent.imports import consent_summary
from mailer.console import forms, links
from mailer.console.page import APP_SETTINGS, redirect, render
from mailer.console.security import actor, allow, conn_of, path_id, session_of, upload
from mailer.errors import BadInput, ConsentNotNamed
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
    return await _customer_page(request)


async def _customer_page(request: web.Request, *, status: int = 200, error: str = "",
                         wanted: dict[str, bool] | None = None,
                         evidence: str = "") -> web.Response:
    customer_id = path_id(request, "customer_id")
    conn = conn_of(request)
    customer = await console_store.customer(conn, customer_id)
    if customer is None:
        raise web.HTTPNotFound(text="There is no such customer.")
    if (erased := await rights_store.erased_at(conn, customer_id)) is not None:
        raise web.HTTPNotFound(text=f"Customer {customer_id} was erased on {erased[:10]}; "
                                    "nothing is held about them.")
    return render(request, "customer.html", "customers", status=status, customer=customer,
                  history=await customer_store.history(conn, customer_id),
                  delivery=await console_store.deliverability(conn, customer_id),
                  categories=CATEGORIES, label=label, consent_error=error,
                  wanted=wanted if wanted is not None else dict(customer.preferences),
                  evidence=evidence)


@allow("reviewer")
async def customer_consent(request: web.Request) -> web.StreamResponse:
    """Record consent given or refused another way, with its evidence (admin and reviewer)."""
    customer_id = path_id(request, "customer_id")
    form = await read_form(request)
    wanted = {c: form.get(c) == "on" for c in CATEGORIES if form.get(c) in ("on", "off")}
    evidence = str(form.get("evidence", "")).strip()[:1000]
    conn = conn_of(request)
    if await rights_store.erased_at(conn, customer_id) is not None:
        raise web.HTTPNotFound(text="This customer was erased; nothing is held about them.")
    try:
        async with transaction(conn):
            change = await change_consent(
                conn, customer_id, wanted,
                Evidence(source="console", reference=evidence, actor=actor(request)))
            if change.found and (change.turned_on or change.turned_off):
                await users.audit(conn, actor(request), "recorded consent",
                                  f"customer {customer_id}: on {list(change.turned_on)}, "
                                  f"off {list(change.turned_off)}")
    except MissingEvidence:
        return await _customer_page(
            request, status=400, wanted=wanted, evidence=evidence,
            error="Say how the customer gave their consent (for example: phone call on "
                  "6 May, asked for offers)")
    if not change.found:
        raise web.HTTPNotFound(text="There is no such customer.")
    done = [f"{label(c)} on" for c in change.turned_on] + [
        f"{label(c)} off" for c in change.turned_off]
    raise redirect(request, f"/customers/{customer_id}",
                   ("Recorded: " + ", ".join(done)) if done else "Nothing changed")


_CONSENT = {"opted-in": True, "opted-out": False}


@allow("reviewer")
async def import_form(request: web.Request) -> web.StreamResponse:
    return render(request, "import.html", "customers", error="", error_field="", report=None,
                  filename="", consent="")


@allow("reviewer")
@upload
async def import_upload(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    upload = form.get("file")
    chosen = form.get("consent")
    consent = chosen if isinstance(chosen, str) and chosen in _CONSENT else ""

    def refuse(error: str, field: str = "file", **extra: object) -> web.StreamResponse:
        return render(request, "import.html", "customers", status=400, error=error,
                      error_field=field, consent=consent, **{"report": None, "filename": "",
                                                             **extra})

    if not isinstance(upload, web.FileField) or not upload.filename:
        return refuse("Choose a CSV file to upload")
    filename = upload.filename
    data = upload.file.read()
    conn = conn_of(request)
    try:
        report = await links.import_csv(
            conn, data, filename, consent=_CONSENT[consent] if consent else None,
            actor=session_of(request).user.name,
            suppression_key=request.app[APP_SETTINGS].privacy.key)
    except ConsentNotNamed as exc:
        return refuse(f"{exc}: choose below whether they opted in", "consent",
                      filename=filename)
    except BadInput as exc:
        return refuse(str(exc), filename=filename)
    if not report.ok:
        return refuse(f"{filename}: {plural(len(report.bad_rows), 'bad row')}; nothing was "
                      "imported", report=report, filename=filename)
    async with transaction(conn):
        await users.audit(conn, actor(request), "imported customers",
                          f"{filename}: {report.created} created, {report.updated} updated")
    log.info("console: import by user %s: %s created, %s updated",
             session_of(request).user.id,
             report.created, report.updated)
    summary = "; ".join(consent_summary(report))
    raise redirect(request, "/customers/import",
                   f"Imported {filename}: {report.created} created, {report.updated} "
                   f"updated, {report.unchanged} unchanged, "
                   f"{plural(len(report.kept_opt_outs), 'opt-out')} kept, "
                   f"{len(report.suppressed)} suppressed (erased before: opted out of "
                   "everything)" + (f". Consent: {summary}" if summary else ""))
