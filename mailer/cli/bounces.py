"""`mailer bounces list` (the reports and complaints received) and `mailer dkim dns` (the DKIM
record to publish): what decides whether our mail is delivered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from mailer.cli.support import command_settings, run
from mailer.errors import SettingsError
from mailer.store import deliverability as store
from mailer.store.db import open_db

DEFAULT_SINCE_DAYS = 30


@click.group("bounces")
def bounces() -> None:
    """Delivery reports and complaints received."""


@bounces.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--since", "since", default=None, metavar="DATE",
              help=f"Reports received on or after DATE (YYYY-MM-DD or ISO 8601) "
                   f"[default: {DEFAULT_SINCE_DAYS} days ago].")
@click.pass_context
def bounces_list(ctx: click.Context, as_json: bool, since: str | None) -> None:
    """Recent reports with their outcome: acted on, or ignored and why."""
    settings = command_settings(ctx)
    start = _since(since)

    async def body() -> None:
        async with open_db(settings.database.location) as conn:
            reports = await store.recent_reports(conn, start.isoformat(timespec="microseconds"))
        rows: list[dict[str, Any]] = [
            {"id": r.id, "received_at": r.received_at, "kind": r.kind, "format": r.format,
             "status": r.status, "diagnostic": r.diagnostic, "outcome": r.outcome,
             "reason": r.reason, "customer_id": r.customer_id, "campaign_id": r.campaign_id,
             "outbox_id": r.outbox_id, "tied_by": r.tied_by, "moved": r.moved}
            for r in reports
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
            return
        if not rows:
            click.echo(f"no reports since {start.date().isoformat()}")
        for r in rows:
            about = (f"campaign {r['campaign_id']}" if r["campaign_id"] is not None
                     else f"confirmation {r['outbox_id']}" if r["outbox_id"] is not None
                     else "not ours")
            customer = f"customer {r['customer_id']}" if r["customer_id"] is not None else "-"
            click.echo(f"#{r['id']} {r['received_at'][:19]} {r['kind']} {r['status'] or '-'} "
                       f"{r['outcome']}: {customer}, {about}; {r['reason']}")

    run(body())


def _since(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC) - timedelta(days=DEFAULT_SINCE_DAYS)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)",
                                 param_hint="--since") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.group("dkim")
def dkim_group() -> None:
    """DKIM signing."""


@dkim_group.command("dns")
@click.pass_context
def dkim_dns(ctx: click.Context) -> None:
    """Print the DNS TXT record to publish for `[dkim]`."""
    settings = command_settings(ctx)

    async def body() -> None:
        from mailer.mail.dkim import load_signer

        signer = load_signer(settings.dkim)
        if signer is None:
            raise SettingsError("[dkim] domain: missing value (DKIM signing is off)")
        click.echo(signer.dns_record())

    run(body())
