"""`mailer inbox process`: the daemon's burst mode (`mailer.daemon.burst`): one pass over each
mailbox, then the due confirmations, and exit."""

from __future__ import annotations

import json

import click

from mailer.cli import preflight
from mailer.cli.support import command_settings, run


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
        from mailer.daemon import burst

        done = await burst(settings)
        report, outbox = done.inbox, done.outbox
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
