"""`mailer retention run [--dry-run]`: apply `[retention]` now, one round of the daemon's
housekeeping part (`mailer.inbox.housekeeping`, which does it daily): request emails in the
processed folder and reports in the bounces folder older than their windows are deleted, web
evidence cleared; then any erasure's pending IMAP clean-up is finished. `--dry-run` counts and
changes nothing."""

from __future__ import annotations

import click

from mailer.cli.support import command_settings, run
from mailer.inbox.housekeeping import Housekeeping, housekeeping_config


@click.group("retention")
def retention_group() -> None:
    """Delete what is kept only for a while ([retention] in the settings)."""


@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.pass_context
def retention_run(ctx: click.Context, dry_run: bool) -> None:
    """Apply the retention windows now."""
    settings = command_settings(ctx)
    housekeeping = Housekeeping(housekeeping_config(settings))

    async def body() -> None:
        done = await housekeeping.run_once(dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        for window in done.windows:
            where = f"from {window.folder}" if window.folder else "(web evidence)"
            click.echo(f"{window.what}: {verb} {done.deleted[window.what]} {where}, older than "
                       f"{window.first_kept.isoformat()}")
        if done.erasures_finished:
            click.echo(f"erasures: finished {done.erasures_finished} pending IMAP clean-up(s)")

    run(body())
