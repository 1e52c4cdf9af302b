"""`mailer campaign ...`: the campaign commands; thin wrappers over `campaigns.service`.

Exit codes (the error classes', see `mailer.errors`): 1 no such campaign or customer, or the
command does not apply to the campaign's status (or another process is sending it); 2 bad
input (kind, time, template, missing secret or unsubscribe URL, a missing or unreadable DKIM
key); 3 SMTP or the database unavailable, and a send that paused itself (`CampaignPaused`: SMTP
failures, or its bounce or complaint rate past `[bounces]`'s limits); 130 a send paused by
Ctrl-C (`Interrupted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import click

from mailer.campaigns import service
from mailer.campaigns.messages import SendConfig, send_config
from mailer.campaigns.model import KINDS, Campaign
from mailer.campaigns.sender import SendOutcome, SendProgress
from mailer.cli import preflight
from mailer.cli.support import command_settings, run
from mailer.errors import CampaignPaused, CampaignRefused, Interrupted
from mailer.lifecycle.signals import stop_on_signals
from mailer.settings import Settings
from mailer.store.db import Connection, open_db
from mailer.wording import plural

log = logging.getLogger(__name__)
T = TypeVar("T")
_PROGRESS_INTERVAL_S = 0.2
_LOG_INTERVAL_S = 5.0


def _run(settings: Settings, body: Callable[[Connection], Awaitable[T]]) -> T:
    """Open the database and run `body` (errors become one line and their class's code)."""

    async def main() -> T:
        async with open_db(settings.database.location) as conn:
            return await body(conn)

    return run(main())


def _sending_config(settings: Settings) -> SendConfig:
    """The send settings of a command that mails: its links are signed with the secret, so a
    weak one is refused as `mailer run` refuses it (exit 2, one line)."""
    preflight.check_secret(settings)
    return send_config(settings)


# The causes a send pauses itself for (not a person, not Ctrl-C): `campaign send` exits 3.
_SELF_PAUSED = ("smtp-refused", "smtp-unavailable", "failures", "reports")


@click.group()
def campaign() -> None:
    """Create, schedule, preview, send and control campaigns."""


@campaign.command("create")
@click.option("--kind", type=click.Choice(KINDS), required=True, help="Who may receive it.")
@click.option("--template", "template", required=True, help="Template name (campaigns/NAME).")
@click.option("--subject", required=True, help="Subject (a template: {{ customer.name }}).")
@click.option("--at", "at", default=None, help="When to send (ISO 8601; no zone = UTC).")
@click.pass_context
def create(ctx: click.Context, kind: str, template: str, subject: str, at: str | None) -> None:
    """Create a campaign and print its id: a draft, or scheduled with --at."""
    settings = command_settings(ctx)
    created = _run(settings, lambda conn: service.create_campaign(
        conn, settings.templates.dir, kind=kind, template=template, subject=subject, at=at))
    click.echo(created.id)


@campaign.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List campaigns with their counts."""
    settings = command_settings(ctx)
    reports = _run(settings, service.list_campaigns)
    if as_json:
        click.echo(json.dumps([service.report_json(r) for r in reports], indent=2,
                              ensure_ascii=False))
        return
    if not reports:
        click.echo("no campaigns")
    for r in reports:
        c, n = r.campaign, r.counts
        when = f" at {c.scheduled_at[:19]}" if c.status == "scheduled" and c.scheduled_at else ""
        click.echo(f"#{c.id} [{c.status}{when}] {c.kind}: {c.subject}  "
                   f"({n.sent} sent, {n.failed} failed, {n.skipped} skipped, "
                   f"{n.pending} pending of {n.audience})")


@campaign.command("show")
@click.argument("campaign_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, campaign_id: int, as_json: bool) -> None:
    """Show one campaign: status (and why), schedule, ledger counts, bounces and complaints."""
    settings = command_settings(ctx)
    report = _run(settings, lambda conn: service.show_campaign(conn, campaign_id))
    if as_json:
        click.echo(json.dumps(service.report_json(report), indent=2, ensure_ascii=False))
        return
    c, n = report.campaign, report.counts
    click.echo(f"campaign {c.id}: {c.subject}")
    click.echo(f"  kind:      {c.kind}")
    click.echo(f"  template:  {c.template}")
    click.echo(f"  status:    {c.status}" + (f" ({c.status_reason})" if c.status_reason else ""))
    if c.scheduled_at:
        click.echo(f"  scheduled: {c.scheduled_at}")
    for label, value in (("started", c.started_at), ("finished", c.finished_at)):
        if value:
            click.echo(f"  {label}:{' ' * (10 - len(label))}{value}")
    if report.opted_in_now is not None:
        click.echo(f"  audience:  not taken yet ({plural(report.opted_in_now, 'customer')} "
                   f"opted in to {c.kind} now)")
    else:
        click.echo(f"  audience:  {n.audience}: {n.sent} sent, {n.failed} failed, "
                   f"{n.skipped} skipped, {n.pending} pending")
    r = report.reports
    if r is not None and report.opted_in_now is None:
        click.echo(f"  bounced:   {r.hard} hard ({report.rate(r.hard):.2%}), "
                   f"{r.soft} soft ({report.rate(r.soft):.2%}) of {n.sent} sent")
        click.echo(f"  complaints: {r.complaints} ({report.rate(r.complaints):.2%})")


@campaign.command("preview")
@click.argument("campaign_id", type=int)
@click.option("--to", "email", required=True, help="The customer's email address.")
@click.pass_context
def preview(ctx: click.Context, campaign_id: int, email: str) -> None:
    """Print the complete message the customer with this email would get."""
    settings = command_settings(ctx)
    config = send_config(settings)
    message, opted_in = _run(settings, lambda conn: service.preview(conn, config, campaign_id,
                                                                     email))
    if not opted_in:
        click.echo(f"note: {email} is not opted in to this campaign's kind; they would not "
                   "receive it", err=True)
    sys.stdout.flush()
    sys.stdout.buffer.write(message)
    sys.stdout.buffer.flush()


@campaign.command("test")
@click.argument("campaign_id", type=int)
@click.option("--to", "address", required=True, help="Where to send the test copy.")
@click.pass_context
def test(ctx: click.Context, campaign_id: int, address: str) -> None:
    """Send one copy marked as a test to ADDRESS ([campaigns] test_copies_per_day a day)."""
    settings = command_settings(ctx)
    config = _sending_config(settings)
    reply = _run(settings, lambda conn: service.send_test(conn, config, campaign_id, address))
    click.echo(f"test copy of campaign {campaign_id} sent to {address}: {reply}")


@campaign.command("send")
@click.argument("campaign_id", type=int)
@click.pass_context
def send(ctx: click.Context, campaign_id: int) -> None:
    """Send now, in the foreground; Ctrl-C pauses cleanly."""
    terminal = sys.stderr.isatty()
    # Warnings only, as for every one-shot command: `--log-level info` adds a progress line
    # every few seconds when stderr is not a terminal (cron, a pipe).
    settings = command_settings(ctx)
    config = _sending_config(settings)

    async def body(conn: Connection) -> SendOutcome:
        stop = asyncio.Event()
        progress = SendProgress()
        display = _terminal_progress if terminal else _log_progress
        async with stop_on_signals(stop, announce=_pausing), display(campaign_id, progress):
            return await service.send_now(conn, config, campaign_id, stop=stop,
                                          progress=progress)

    outcome = _run(settings, body)
    n = outcome.counts
    summary = (f"campaign {campaign_id}: {outcome.status}; {n.sent} sent, {n.failed} failed, "
               f"{n.skipped} skipped, {n.pending} pending of {n.audience}")
    if outcome.status == "sent":
        click.echo(summary)
        return
    click.echo(summary + (f" ({outcome.reason})" if outcome.reason else ""))
    if outcome.status == "paused" and outcome.paused_by == "interrupted":
        raise Interrupted(f"campaign {campaign_id} paused; `mailer campaign send {campaign_id}` "
                          f"or `mailer campaign resume {campaign_id}` carries on")
    if outcome.status == "paused" and outcome.paused_by in _SELF_PAUSED:
        raise CampaignPaused(f"campaign {campaign_id} {outcome.reason}")
    raise CampaignRefused(f"campaign {campaign_id} is {outcome.status}"
                          + (f": {outcome.reason}" if outcome.reason else ""))


def _pausing(sig: signal.Signals) -> None:
    # The first SIGINT/SIGTERM asks for a clean pause; a second Ctrl-C interrupts at once
    # (what was claimed but not recorded is re-sent, as after a crash).
    click.echo(f"\n{sig.name}: finishing the messages in flight, then pausing "
               "(Ctrl-C again to stop at once)", err=True)


@contextlib.asynccontextmanager
async def _terminal_progress(campaign_id: int, progress: SendProgress) -> AsyncIterator[None]:
    """A rich progress bar on stderr: settled of audience, rate and time left."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("campaign {task.fields[campaign]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>7.0f} msg/s"), TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )
    task = bar.add_task("send", total=None, campaign=campaign_id, rate=0.0, detail="")

    def update() -> None:
        elapsed = max(time.monotonic() - progress.started_monotonic, 1e-6)
        done_now = progress.sent + progress.failed + progress.skipped
        bar.update(task, total=progress.audience or None, completed=progress.settled,
                   rate=done_now / elapsed,
                   detail=f"{progress.failed} failed, {progress.skipped} skipped")

    async def refresh() -> None:
        while True:
            update()
            await asyncio.sleep(_PROGRESS_INTERVAL_S)

    with bar:
        refresher = asyncio.create_task(refresh())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            update()


@contextlib.asynccontextmanager
async def _log_progress(campaign_id: int, progress: SendProgress) -> AsyncIterator[None]:
    """Not a terminal: a plain log line every few seconds."""

    async def report() -> None:
        while True:
            await asyncio.sleep(_LOG_INTERVAL_S)
            elapsed = max(time.monotonic() - progress.started_monotonic, 1e-6)
            done_now = progress.sent + progress.failed + progress.skipped
            rate = done_now / elapsed
            left = progress.audience - progress.settled
            eta = f"{left / rate:.0f} s" if rate > 0 else "?"
            log.info("campaign %s: %s of %s settled (%s sent, %s failed, %s skipped); "
                     "%.0f msg/s; ETA %s", campaign_id, progress.settled, progress.audience,
                     progress.sent, progress.failed, progress.skipped, rate, eta)

    reporter = asyncio.create_task(report())
    try:
        yield
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter


@campaign.command("schedule")
@click.argument("campaign_id", type=int)
@click.option("--at", "at", required=True, help="When to send (ISO 8601; no zone = UTC).")
@click.pass_context
def schedule(ctx: click.Context, campaign_id: int, at: str) -> None:
    """Schedule a draft, or move a scheduled or paused campaign, to --at."""
    settings = command_settings(ctx)
    _echo_state(_run(settings, lambda conn: service.schedule(conn, campaign_id, at)))


def _echo_state(changed: Campaign) -> None:
    click.echo(f"campaign {changed.id} is {changed.status}"
               + (f" (scheduled for {changed.scheduled_at})"
                  if changed.status == "scheduled" else ""))


def _state_command(name: str, action: Callable[[Connection, int],
                                               Awaitable[Campaign]], help_: str) -> None:
    @campaign.command(name, help=help_)
    @click.argument("campaign_id", type=int)
    @click.pass_context
    def command(ctx: click.Context, campaign_id: int) -> None:
        settings = command_settings(ctx)
        _echo_state(_run(settings, lambda conn: action(conn, campaign_id)))


_state_command("pause", service.pause,
               "Pause a scheduled or sending campaign (a running send stops before its next "
               "message).")
_state_command("resume", service.resume,
               "Resume a paused campaign: scheduled for now, for `mailer run` or "
               "`campaign send`.")
_state_command("cancel", service.cancel,
               "Cancel a campaign: nothing more goes out; unsent recipients stay pending.")
