"""`mailer customers ...`: import customers from CSV, show one (details, consent history,
deliverability), record consent given or refused another way (`consent`), make a bounced
address deliverable again, and the customer's data rights: `export` (everything held, as
JSON) and `erase` (with a suppression entry)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import click

from mailer.bounces import deliverability
from mailer.cli.support import command_settings, run
from mailer.consent import rights
from mailer.consent.change import Evidence, change_consent
from mailer.consent.imports import consent_summary, import_csv
from mailer.errors import BadInput, ConsentNotNamed, CsvError, ImapError, NotFound
from mailer.inbox.imap import ImapClient
from mailer.inbox.worker import imap_config
from mailer.store import customers as customer_store
from mailer.store import deliverability as deliverability_store
from mailer.store.db import Connection, open_db, transaction


@click.group()
def customers() -> None:
    """Import and inspect customers and their preferences."""


_CONSENT = {"opted-in": True, "opted-out": False}


@customers.command("import")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--consent", type=click.Choice(sorted(_CONSENT)), default=None,
              help="The consent of rows the file does not state (a missing announcements or "
                   "offers column, an empty cell); required when a column is missing.")
@click.option("--by", "actor", default=None,
              help="Who is importing, for the consent history [default: the OS user].")
@click.pass_context
def customers_import(ctx: click.Context, csv_file: Path, consent: str | None,
                     actor: str | None) -> None:
    """Upsert customers from CSV_FILE; all rows or none."""
    settings = command_settings(ctx)
    who = (actor or os_user()).strip() or "unknown"

    async def body() -> None:
        try:
            handle = csv_file.open("rb")
        except OSError as exc:
            raise CsvError(f"{csv_file}: {exc.strerror}") from exc
        with handle:
            async with open_db(settings.database.location) as conn:
                try:
                    report = await import_csv(
                        conn, handle, name=str(csv_file), reference=csv_file.name,
                        consent=None if consent is None else _CONSENT[consent], actor=who,
                        suppression_key=settings.privacy.key)
                except ConsentNotNamed as exc:
                    raise ConsentNotNamed(
                        f"{exc}: name it with --consent opted-in or --consent opted-out") from exc
        if not report.ok:
            for bad in report.bad_rows:
                click.echo(f"{csv_file}: line {bad.line}: {bad.reason}", err=True)
            raise BadInput(f"{csv_file}: {len(report.bad_rows)} bad row(s); nothing was imported")
        for line, email, category in report.kept_opt_outs:
            click.echo(f"{csv_file}: line {line}: kept {email} opted out of {category} "
                       "(the opt-out was made by request)", err=True)
        for line, email in report.suppressed:
            click.echo(f"{csv_file}: line {line}: {email} is on the suppression list (erased "
                       "before): opted out of everything", err=True)
        click.echo(f"imported {csv_file}: {report.created} created, {report.updated} updated, "
                   f"{report.unchanged} unchanged, {len(report.kept_opt_outs)} opt-out(s) kept, "
                   f"{len(report.suppressed)} suppressed")
        for summary in consent_summary(report):
            click.echo(f"  {summary}")

    run(body())


@customers.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def customers_show(ctx: click.Context, email: str, as_json: bool) -> None:
    """Show one customer's details, preferences and consent history."""
    settings = command_settings(ctx)

    async def body() -> None:
        from mailer.store import customers as store

        async with open_db(settings.database.location) as conn:
            customer = await store.get_by_email(conn, email)
            if customer is None:
                await rights.raise_if_erased(conn, email, settings.privacy.key)
                raise NotFound(f"no customer with email {email}")
            events = await store.history(conn, customer.id)
            delivery = await delivery_view(conn, customer.id)
        data: dict[str, Any] = {
            "email": customer.email, "name": customer.name, "company": customer.company,
            "phone": customer.phone, "preferences": customer.preferences,
            "history": [
                {"at": e.at, "category": e.category, "old": e.old_value, "new": e.new_value,
                 "source": e.source, "reference": e.reference, "actor": e.actor,
                 "evidence": dict(e.evidence.shown())}
                for e in events
            ],
            **delivery,
        }
        if as_json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        click.echo(f"{customer.name} <{customer.email}>"
                   + (f", {customer.company}" if customer.company else ""))
        for category, value in customer.preferences.items():
            click.echo(f"  {category}: {'opted in' if value else 'opted out'}")
        click.echo("  history:")
        for e in events:
            old = "-" if e.old_value is None else ("in" if e.old_value else "out")
            click.echo(f"    {e.at}  {e.category}: {old} -> {'in' if e.new_value else 'out'}"
                       f"  ({e.source}{': ' + e.reference if e.reference else ''}"
                       f"{', by ' + e.actor if e.actor else ''})")
            if e.evidence.shown():
                click.echo("      evidence: " + "; ".join(
                    f"{name} {value}" for name, value in e.evidence.shown()))
        echo_delivery(delivery)

    run(body())


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container), no LOGNAME
        return "unknown"


@customers.command("reactivate")
@click.argument("email")
@click.option("--by", "actor", default=None,
              help="Who is doing this, for the history [default: the OS user].")
@click.pass_context
def customers_reactivate(ctx: click.Context, email: str, actor: str | None) -> None:
    """Make EMAIL deliverable again (after a bounce), recorded with who did it."""
    settings = command_settings(ctx)
    who = (actor or os_user()).strip() or "unknown"

    async def body() -> None:
        async with open_db(settings.database.location) as conn:
            customer = await customer_store.get_by_email(conn, email)
            if customer is None:
                raise NotFound(f"no customer with email {email}")
            changed = await deliverability.reactivate(conn, customer.id, actor=who)
        if changed:
            click.echo(f"{email} is deliverable again (reactivated by {who})")
        else:
            click.echo(f"{email} was deliverable already; nothing changed")

    run(body())


@customers.command("export")
@click.argument("email")
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the JSON here [default: standard output].")
@click.pass_context
def customers_export(ctx: click.Context, email: str, out: Path | None) -> None:
    """Everything held about EMAIL as one JSON document (UK GDPR art. 15 and 20): the record,
    preferences, consent history, deliveries, bounces, review items and request emails."""
    settings = command_settings(ctx)

    async def body() -> str:
        folders = (settings.imap.processed_folder, settings.imap.review_folder)
        async with (open_db(settings.database.location) as conn,
                    await ImapClient.connect(imap_config(settings)) as mailbox):
            document = await rights.export(conn, email, mailbox=mailbox, folders=folders,
                                           key=settings.privacy.key)
        return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"

    text = run(body())
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"--out {out}: {exc.strerror}") from exc
    click.echo(f"exported {email} to {out}")


@customers.command("erase")
@click.argument("email")
@click.option("--reason", required=True, help="Why (recorded with the erasure).")
@click.option("--by", "actor", default=None,
              help="Who is doing this, for the record [default: the OS user].")
@click.pass_context
def customers_erase(ctx: click.Context, email: str, reason: str, actor: str | None) -> None:
    """Erase EMAIL's personal data (UK GDPR art. 17), keeping a suppression entry so no
    import mails it again, then delete their request emails from the IMAP folders."""
    settings = command_settings(ctx)
    who = (actor or os_user()).strip() or "unknown"

    async def body() -> None:
        folders = (settings.imap.processed_folder, settings.imap.review_folder)
        async with open_db(settings.database.location) as conn:
            erased = await rights.erase(conn, email, key=settings.privacy.key, reason=reason,
                                        actor=who)
            click.echo(f"erased {email} (erasure {erased.erasure_id}, by {who})")
            if not erased.checkpointed and conn.engine == "postgresql":
                click.echo("the database role does not own every table, so VACUUM could not "
                           "remove the old row versions: run VACUUM as their owner", err=True)
            elif not erased.checkpointed:
                click.echo("the write-ahead log is in use by another process (the daemon?): "
                           "the old pages leave it at its next checkpoint", err=True)
            try:
                async with await ImapClient.connect(imap_config(settings)) as mailbox:
                    await rights.run_pending_erasures(conn, mailbox, folders)
            except ImapError as exc:
                raise ImapError(f"erased from the database; the IMAP clean-up is pending and "
                                f"retried by `mailer retention run`: {exc}") from exc
        click.echo(f"removed the request emails from {' and '.join(folders)}")

    run(body())


_SWITCH = {"on": True, "off": False}


@customers.command("consent")
@click.argument("email")
@click.option("--offers", type=click.Choice(["on", "off"]), default=None)
@click.option("--announcements", type=click.Choice(["on", "off"]), default=None)
@click.option("--evidence", default="",
              help="How the customer gave or refused consent (a phone call, a signed form); "
                   "required to opt anyone in.")
@click.option("--by", "actor", default=None,
              help="Who is recording this, for the history [default: the OS user].")
@click.pass_context
def customers_consent(ctx: click.Context, email: str, offers: str | None,
                      announcements: str | None, evidence: str, actor: str | None) -> None:
    """Record consent EMAIL gave or refused another way (by phone, in a shop)."""
    settings = command_settings(ctx)
    who = (actor or os_user()).strip() or "unknown"
    wanted = {c: _SWITCH[v] for c, v in (("announcements", announcements), ("offers", offers))
              if v is not None}

    async def body() -> None:
        if not wanted:
            raise BadInput("nothing to record: give --offers on|off or --announcements on|off")
        async with open_db(settings.database.location) as conn:
            customer = await customer_store.get_by_email(conn, email)
            if customer is None:
                raise NotFound(f"no customer with email {email}")
            async with transaction(conn):
                change = await change_consent(
                    conn, customer.id, wanted,
                    Evidence(source="operator", reference=evidence.strip(), actor=who))
        done = [f"{c} on" for c in change.turned_on] + [f"{c} off" for c in change.turned_off]
        if done:
            click.echo(f"{email}: {', '.join(done)} (recorded by {who})")
        else:
            click.echo(f"{email}: already as asked; nothing changed")

    run(body())


async def delivery_view(conn: Connection, customer_id: int) -> dict[str, Any]:
    """Deliverable or not, why, and the history of that: `customers show`'s part."""
    reason = await deliverability_store.undeliverable_reason(conn, customer_id)
    events = await deliverability_store.delivery_history(conn, customer_id)
    return {
        "deliverable": reason is None,
        "undeliverable_reason": reason,
        "delivery_history": [
            {"at": e.at, "event": e.event, "source": e.source, "reason": e.reason,
             "actor": e.actor, "report_id": e.report_id}
            for e in events
        ],
    }


def echo_delivery(view: dict[str, Any]) -> None:
    if view["deliverable"]:
        click.echo("  deliverable: yes")
    else:
        click.echo(f"  deliverable: no ({view['undeliverable_reason']})")
    if view["delivery_history"]:
        click.echo("  delivery history:")
    for e in view["delivery_history"]:
        by = f", by {e['actor']}" if e["actor"] else ""
        click.echo(f"    {e['at']}  {e['event']}  ({e['source']}{by})"
                   + (f": {e['reason']}" if e["reason"] else ""))


