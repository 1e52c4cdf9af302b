"""`mailer inbox process`: one burst pass over the inbox, then the due confirmations."""

from __future__ import annotations

import json

import click

from mailer.cli import preflight
from mailer.cli.support import command_settings, run
from mailer.store.db import open_db


@click.group()
def inbox() -> None:
    """The unsubscribe inbox."""


@inbox.command("process")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def inbox_process(ctx: click.Context, as_json: bool) -> None:
    """Make one pass over the inbox, send due confirmations, and exit."""
    settings = command_settings(ctx)
    preflight.outbox(settings)

    async def body() -> None:
        from mailer.consent.confirmations import outbox_config, send_due_confirmations
        from mailer.inbox.worker import process_settings_once

        async with open_db(settings.database.path) as conn:
            report = await process_settings_once(conn, settings)
            outbox = await send_due_confirmations(conn, outbox_config(settings))
        if as_json:
            click.echo(json.dumps(report.as_json()))
            return
        click.echo(
            f"{report.seen} new message(s): {report.requests} request(s), "
            f"{report.ignored} ignored; {report.unsubscribed} customer(s) unsubscribed, "
            f"{report.review} to review, {report.failed} failed; "
            f"reports: {report.reports} read, {report.bounces} bounce(s), "
            f"{report.complaints} complaint(s); confirmations: {outbox.sent} sent, "
            f"{outbox.retrying} to retry, {outbox.failed} failed")

    run(body())
