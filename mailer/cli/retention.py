"""`mailer retention run [--dry-run]`: apply `[retention]` now (the daemon does it daily):
request emails in the processed folder and reports in the bounces folder older than their
windows are deleted, web evidence cleared; then any erasure's pending IMAP clean-up is
finished. `--dry-run` counts and changes nothing."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import click

from mailer.cli.support import command_settings, run
from mailer.consent import retention, rights
from mailer.inbox.imap import ImapClient
from mailer.inbox.worker import bounces_imap_config, imap_config
from mailer.store.db import open_db


@click.group("retention")
def retention_group() -> None:
    """Delete what is kept only for a while ([retention] in the settings)."""


@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.pass_context
def retention_run(ctx: click.Context, dry_run: bool) -> None:
    """Apply the retention windows now."""
    settings = command_settings(ctx)
    keep = settings.retention
    chosen = retention.windows(
        today=datetime.now(UTC).date(), processed_folder=settings.imap.processed_folder,
        processed_mail_days=keep.processed_mail_days, reports_folder=settings.bounces.folder,
        reports_days=keep.reports_days, web_evidence_days=keep.web_evidence_days)

    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            conn = await stack.enter_async_context(open_db(settings.database.path))
            mailbox = await stack.enter_async_context(
                await ImapClient.connect(imap_config(settings)))
            reports_config = bounces_imap_config(settings)
            reports = mailbox if reports_config is None else await stack.enter_async_context(
                await ImapClient.connect(reports_config))
            done = await retention.apply_all(conn, mailbox, reports, chosen, dry_run=dry_run)
            finished = 0
            if not dry_run:
                finished = await rights.run_pending_erasures(
                    conn, mailbox, (settings.imap.processed_folder, settings.imap.review_folder))
        verb = "would delete" if dry_run else "deleted"
        for window in chosen:
            where = f"from {window.folder}" if window.folder else "(web evidence)"
            click.echo(f"{window.what}: {verb} {done[window.what]} {where}, older than "
                       f"{window.first_kept.isoformat()}")
        if finished:
            click.echo(f"erasures: finished {finished} pending IMAP clean-up(s)")

    run(body())
