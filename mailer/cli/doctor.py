"""`mailer doctor [--json]`: will the big mailbox providers accept our campaigns? Exit 0 when
every check passes, 1 with warnings, 2 with a failure (`mailer.doctor`)."""

from __future__ import annotations

import sys

import click

from mailer.cli.support import command_settings, run
from mailer.doctor.report import as_json, table
from mailer.doctor.run import diagnose


@click.command("doctor")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json_output: bool) -> None:
    """Will the big mailbox providers accept our campaigns?

    Checks DNS (SPF, DKIM, DMARC, MX), the SMTP and IMAP servers and the unsubscribe URL, a
    sample message, and the complaint and bounce rates; prints each finding with its fix.
    Exit 0 when all pass, 1 with warnings, 2 with a failure.
    """
    settings = command_settings(ctx)
    report = run(diagnose(settings))
    click.echo(as_json(report) if as_json_output else table(report))
    sys.exit(report.exit_code)
