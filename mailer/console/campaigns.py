"""Campaign pages: the list (subjects as a sample customer reads them), the create form, one
campaign (progress, outcome, preview, test, pause / resume, cancel after a confirmation page)
and the HTML preview, a page of its own at the message's full height. The same service functions as
`mailer campaign …`, through `links`."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp.web as web

from mailer.categories import CATEGORIES, label
from mailer.console import forms, links
from mailer.console.page import APP_SETTINGS, redirect, render
from mailer.console.security import CLOCK, actor, allow, conn_of, path_id, session_of
from mailer.errors import BadInput, CampaignInvalid, MailerError, NotFound
from mailer.http.forms import read_form
from mailer.store import console as console_store
from mailer.store import users
from mailer.store.db import transaction

log = logging.getLogger(__name__)

# The preview's own policy: the email's inline styles and embedded images, nothing else; CSP3
# `sandbox` makes it an opaque origin with no script and no form. It is a page of its own (not
# a frame of fixed height, which cut the footer off), so it is as tall as the message.
PREVIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
               "frame-ancestors 'self'; sandbox")


@allow("marketing")
async def campaign_list(request: web.Request) -> web.StreamResponse:
    reports = list(reversed(await links.list_campaigns(conn_of(request))))
    # Subjects as a customer reads them, not as templates: a sample customer's copy.
    subjects = links.sample_subjects(request.app[APP_SETTINGS],
                                     [r.campaign.subject for r in reports])
    return render(request, "campaigns.html", "campaigns",
                  rows=list(zip(reports, subjects, strict=True)),
                  sending=any(r.campaign.status == "sending" for r in reports),
                  sample_name=links.SAMPLE_CUSTOMER_NAME, local=forms.utc_to_local)


class Errors(dict[str, str]):
    """Field errors; a field without one reads as '' in the template."""

    def __missing__(self, key: str) -> str:
        return ""


async def _form_page(request: web.Request, values: dict[str, str], errors: dict[str, str],
                     *, checked: bool = False, status: int = 200) -> web.Response:
    settings = request.app[APP_SETTINGS]
    counts = await console_store.opted_in_counts(conn_of(request))
    return render(request, "campaign_new.html", "campaigns", status=status, values=values,
                  errors=Errors(errors), counts=counts, kinds=[(k, label(k)) for k in CATEGORIES],
                  templates=links.campaign_templates(settings), zones=forms.zone_names(),
                  checked=checked)


@allow("marketing")
async def campaign_new(request: web.Request) -> web.StreamResponse:
    settings = request.app[APP_SETTINGS]
    values = {"kind": "", "template": "", "subject": "", "when": "draft", "at": "",
              "zone": settings.console.timezone}
    return await _form_page(request, values, {})


@allow("marketing")
async def campaign_create(request: web.Request) -> web.StreamResponse:
    settings = request.app[APP_SETTINGS]
    form = await read_form(request)
    values = {key: str(form.get(key, "")).strip()
              for key in ("kind", "template", "subject", "when", "at", "zone")}
    errors: dict[str, str] = {}
    if values["kind"] not in CATEGORIES:
        errors["kind"] = "Choose what kind of campaign this is"
    if values["template"] not in links.campaign_templates(settings):
        errors["template"] = "Choose a template"
    if not values["subject"]:
        errors["subject"] = "Enter a subject line"
    at_utc: str | None = None
    if values["when"] == "schedule":
        when, problem = forms.local_to_utc(values["at"], values["zone"],
                                           now=request.app[CLOCK].now())
        if when is None:
            errors["at"] = problem
        else:
            at_utc = when.isoformat()
    elif values["when"] != "draft":
        errors["when"] = "Choose to save a draft or to schedule the campaign"
    if errors:
        return await _form_page(request, values, errors, status=400)
    if form.get("action") == "check":
        return await _form_page(request, values, {}, checked=True)
    conn = conn_of(request)
    try:
        campaign = await links.create_campaign(conn, settings, kind=values["kind"],
                                               template=values["template"],
                                               subject=values["subject"], at_utc=at_utc,
                                               clock=request.app[CLOCK])
    except BadInput as exc:
        # The template's file and line, exactly as the CLI says it, beside the input at fault.
        field = exc.field if isinstance(exc, CampaignInvalid) and exc.field else "template"
        return await _form_page(request, values, {field: str(exc)}, status=400)
    async with transaction(conn):
        await users.audit(conn, actor(request), f"created campaign ({campaign.status})",
                          f"campaign {campaign.id}")
    log.info("console: campaign %s created by user %s", campaign.id,
             session_of(request).user.id)
    raise redirect(request, f"/campaigns/{campaign.id}", f"Campaign {campaign.id} saved as "
                   f"{campaign.status}")


@allow("marketing")
async def campaign_page(request: web.Request) -> web.StreamResponse:
    return await _show(request)


async def _show(request: web.Request, *, status: int = 200, test_error: str = "",
                test_address: str = "", schedule_error: str = "", schedule_at: str | None = None,
                schedule_zone: str = "") -> web.Response:
    settings = request.app[APP_SETTINGS]
    conn = conn_of(request)
    campaign_id = path_id(request, "campaign_id")
    try:
        report = await links.show_campaign(conn, campaign_id)
    except NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    preview_for = request.query.get("email", "").strip()
    preview: links.Preview | None = None
    preview_error = ""
    if preview_for:
        try:
            preview = await links.preview(conn, settings, campaign_id, preview_for)
        except MailerError as exc:
            preview_error = str(exc)
    zone = schedule_zone or settings.console.timezone
    [subject] = links.sample_subjects(settings, [report.campaign.subject])
    context: dict[str, Any] = {
        "report": report, "c": report.campaign, "n": report.counts, "kind_label": label,
        "sample_subject": subject, "sample_name": links.SAMPLE_CUSTOMER_NAME,
        "local": forms.utc_to_local, "preview_for": preview_for, "preview": preview,
        "preview_error": preview_error, "test_error": test_error,
        "test_address": test_address, "schedule_error": schedule_error,
        "zones": forms.zone_names(), "schedule_zone": zone,
        "schedule_at": (schedule_at if schedule_at is not None
                        else forms.utc_to_input(report.campaign.scheduled_at, zone)),
    }
    return render(request, "campaign.html", "campaigns", status=status, **context)


@allow("marketing")
async def campaign_preview_html(request: web.Request) -> web.StreamResponse:
    """The campaign's HTML for one customer, as that customer's mail program shows it."""
    settings = request.app[APP_SETTINGS]
    try:
        preview = await links.preview(conn_of(request), settings, path_id(request, "campaign_id"),
                                      request.query.get("email", ""))
    except MailerError as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    if preview.html is None:
        raise web.HTTPNotFound(text="this campaign has no HTML part")
    response = web.Response(text=preview.html, content_type="text/html")
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@allow("marketing")
async def campaign_test(request: web.Request) -> web.StreamResponse:
    settings = request.app[APP_SETTINGS]
    form = await read_form(request)
    address = str(form.get("address", "")).strip()
    campaign_id = path_id(request, "campaign_id")
    if "@" not in address:
        return await _show(request, status=400, test_address=address,
                           test_error="Enter an email address to send the test to")
    conn = conn_of(request)
    try:
        await links.send_test(conn, settings, campaign_id, address)
    except MailerError as exc:
        return await _show(request, status=400, test_address=address, test_error=str(exc))
    async with transaction(conn):
        await users.audit(conn, actor(request), "sent a test copy", f"campaign {campaign_id}")
    raise redirect(request, f"/campaigns/{campaign_id}", f"Test copy sent to {address}")


@allow("marketing")
async def campaign_schedule(request: web.Request) -> web.StreamResponse:
    """Schedule a draft, or move a scheduled or paused campaign, to a local time."""
    settings = request.app[APP_SETTINGS]
    form = await read_form(request)
    at = str(form.get("at", "")).strip()
    zone = str(form.get("zone", "")).strip() or settings.console.timezone
    campaign_id = path_id(request, "campaign_id")
    when, problem = forms.local_to_utc(at, zone, now=request.app[CLOCK].now())
    if when is None:
        return await _show(request, status=400, schedule_error=problem, schedule_at=at,
                           schedule_zone=zone)
    conn = conn_of(request)
    try:
        campaign = await links.schedule(conn, campaign_id, when.isoformat(),
                                        clock=request.app[CLOCK])
    except NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    except MailerError as exc:
        raise redirect(request, f"/campaigns/{campaign_id}", str(exc)) from exc
    async with transaction(conn):
        await users.audit(conn, actor(request), "scheduled campaign",
                          f"campaign {campaign_id} for {campaign.scheduled_at}")
    raise redirect(request, f"/campaigns/{campaign_id}", f"Campaign {campaign_id} is scheduled "
                   f"for {forms.utc_to_local(campaign.scheduled_at, zone)}")


_ACTIONS = {"pause": links.pause, "resume": links.resume, "cancel": links.cancel}


@allow("marketing")
async def cancel_confirm(request: web.Request) -> web.StreamResponse:
    """Cancelling cannot be undone: a page that says what it means and asks first."""
    campaign_id = path_id(request, "campaign_id")
    try:
        report = await links.show_campaign(conn_of(request), campaign_id)
    except NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    if report.campaign.status not in ("draft", "scheduled", "sending", "paused"):
        raise redirect(request, f"/campaigns/{campaign_id}",
                       f"Campaign {campaign_id} is {report.campaign.status}: there is nothing "
                       "to cancel")
    [subject] = links.sample_subjects(request.app[APP_SETTINGS], [report.campaign.subject])
    return render(request, "campaign_cancel.html", "campaigns", report=report,
                  c=report.campaign, n=report.counts, sample_subject=subject,
                  local=forms.utc_to_local)


@allow("marketing")
async def campaign_action(request: web.Request) -> web.StreamResponse:
    campaign_id = path_id(request, "campaign_id")
    action = request.match_info["action"]
    change = _ACTIONS.get(action)
    if change is None:
        raise web.HTTPNotFound()
    if action == "cancel" and (await read_form(request)).get("confirm") != "yes":
        # Only the confirmation page's button cancels: it cannot be undone.
        raise web.HTTPSeeOther(f"/campaigns/{campaign_id}/cancel")
    conn = conn_of(request)
    try:
        campaign = await change(conn, campaign_id)
    except NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    except MailerError as exc:
        raise redirect(request, f"/campaigns/{campaign_id}", str(exc)) from exc
    async with transaction(conn):
        await users.audit(conn, actor(request), f"{action} campaign", f"campaign {campaign_id}")
    raise redirect(request, f"/campaigns/{campaign_id}", f"Campaign {campaign_id} is now "
                   f"{campaign.status}")
