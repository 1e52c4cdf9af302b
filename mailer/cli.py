"""The `mailer` command line: parse arguments, load settings, call one async function, map
errors to exit codes (see `cli_support` for the codes). No business logic lives here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from mailer import cli_console, cli_ops, cli_support
from mailer.campaigns.cli import campaign
from mailer.cli_deliverability import (
    bounces,
    customers_reactivate,
    delivery_view,
    dkim_group,
    echo_delivery,
)
from mailer.cli_init import init
from mailer.cli_support import CliState, command_settings, run
from mailer.cli_web import web
from mailer.errors import EXIT_BAD_INPUT, BadInput, CsvError, NotFound
from mailer.importer import BadRow, CustomerRow, HeaderError, read_rows
from mailer.logs import LEVELS, LogFormat
from mailer.settings import Settings, default_path
from mailer.store.db import open_db


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--settings", "settings_path", type=click.Path(path_type=Path), default=None,
    help="Settings file [default: $MAILER_SETTINGS or ./settings.toml].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or JSON [default: [log] format, else text].")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
              help="Least level logged [default: [log] level, else info for run, "
                   "warning otherwise].")
@click.pass_context
def main(ctx: click.Context, settings_path: Path | None, verbose: bool,
         log_format: LogFormat | None, log_level: str | None) -> None:
    """Honour 'Unsubscribe special offers' emails and send consent-aware campaigns."""
    ctx.obj = CliState(settings_path=settings_path or default_path(), verbose=verbose,
                       log_format=log_format, log_level=log_level and log_level.lower())


# --- customers ------------------------------------------------------------------------------


@main.group()
def customers() -> None:
    """Import and inspect customers and their preferences."""


@customers.command("import")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def customers_import(ctx: click.Context, csv_file: Path) -> None:
    """Upsert customers from CSV_FILE; all rows or none."""
    settings = command_settings(ctx)

    async def body() -> None:
        try:
            handle = csv_file.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise CsvError(f"{csv_file}: {exc.strerror}") from exc
        with handle:
            try:
                rows = read_rows(handle)
                first = next(rows, None)
            except HeaderError as exc:
                raise CsvError(f"{csv_file}: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise CsvError(f"{csv_file}: not valid UTF-8") from exc

            async def stream() -> AsyncIterator[CustomerRow | BadRow]:
                if first is not None:
                    yield first
                for row in rows:
                    yield row

            from mailer.store.customers import import_customers_atomically

            async with open_db(settings.database.path) as conn:
                report = await import_customers_atomically(
                    conn, stream(), reference=csv_file.name)
        if not report.ok:
            for bad in report.bad_rows:
                click.echo(f"{csv_file}: line {bad.line}: {bad.reason}", err=True)
            raise BadInput(f"{csv_file}: {len(report.bad_rows)} bad row(s); nothing was imported")
        for line, email, category in report.kept_opt_outs:
            click.echo(f"{csv_file}: line {line}: kept {email} opted out of {category} "
                       "(the opt-out was made by request)", err=True)
        click.echo(f"imported {csv_file}: {report.created} created, {report.updated} updated, "
                   f"{report.unchanged} unchanged, {len(report.kept_opt_outs)} opt-out(s) kept")

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

        async with open_db(settings.database.path) as conn:
            customer = await store.get_by_email(conn, email)
            if customer is None:
                raise NotFound(f"no customer with email {email}")
            events = await store.history(conn, customer.id)
            delivery = await delivery_view(conn, customer.id)
        data: dict[str, Any] = {
            "email": customer.email, "name": customer.name, "company": customer.company,
            "phone": customer.phone, "preferences": customer.preferences,
            "history": [
                {"at": e.at, "category": e.category, "old": e.old_value, "new": e.new_value,
                 "source": e.source, "reference": e.reference}
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
                       f"  ({e.source}{': ' + e.reference if e.reference else ''})")
        echo_delivery(delivery)

    run(body())


# --- inbox and review -----------------------------------------------------------------------


@main.group()
def inbox() -> None:
    """The unsubscribe inbox."""


@inbox.command("process")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def inbox_process(ctx: click.Context, as_json: bool) -> None:
    """Make one pass over the inbox, send due confirmations, and exit."""
    settings = command_settings(ctx)

    async def body() -> None:
        from mailer.inbox.worker import process_settings_once
        from mailer.outbox import confirmation_settings, send_due

        check_confirmation_template(settings)
        async with open_db(settings.database.path) as conn:
            report = await process_settings_once(conn, settings)
            outbox = await send_due(conn, confirmation_settings(settings))
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


@main.group()
def review() -> None:
    """The review queue: requests the worker would not decide alone."""


@review.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "include_settled", is_flag=True, help="Include settled items.")
@click.pass_context
def review_list(ctx: click.Context, as_json: bool, include_settled: bool) -> None:
    """List open review items."""
    settings = command_settings(ctx)

    async def body() -> None:
        from mailer.store import inbox as store

        async with open_db(settings.database.path) as conn:
            items = await store.review_items(conn, include_settled=include_settled)
        if as_json:
            click.echo(json.dumps([
                {"id": i.id, "message_id": i.message_id, "sender": i.sender,
                 "subject": i.subject, "reason": i.reason, "status": i.status,
                 "created_at": i.created_at, "settlement": i.settlement}
                for i in items
            ], indent=2, ensure_ascii=False))
            return
        if not items:
            click.echo("the review queue is empty")
        for i in items:
            click.echo(f"#{i.id} [{i.status}] {i.created_at[:19]} from {i.sender or '?'}: "
                       f"{i.reason}")

    run(body())


@review.command("resolve")
@click.argument("item_id", type=int)
@click.option("--customer", "customer_email", help="Unsubscribe this customer.")
@click.option("--dismiss", is_flag=True, help="Close the item without changing anyone.")
@click.pass_context
def review_resolve(
    ctx: click.Context, item_id: int, customer_email: str | None, dismiss: bool
) -> None:
    """Settle review item ITEM_ID: name the customer, or dismiss it."""
    if bool(customer_email) == dismiss:
        cli_support.fail("review resolve: give exactly one of --customer EMAIL or --dismiss",
                         EXIT_BAD_INPUT)
    settings = command_settings(ctx)

    async def body() -> None:
        from mailer.inbox import review as review_ops
        from mailer.inbox.imap import ImapClient, ImapError
        from mailer.inbox.worker import imap_config, inbox_rules

        rules = inbox_rules(settings)
        async with open_db(settings.database.path) as conn:
            if dismiss:
                item = await review_ops.dismiss(conn, item_id)
                click.echo(f"review item {item_id} dismissed")
            else:
                assert customer_email is not None
                item = await review_ops.resolve(conn, rules, item_id, customer_email)
                click.echo(f"review item {item_id} resolved: {customer_email} unsubscribed "
                           f"from {', '.join(rules.categories)}; confirmation queued")
        if not item.message_id:
            return
        try:
            client = await ImapClient.connect(imap_config(settings))
            try:
                await review_ops.file_settled(client, rules, item.message_id)
            finally:
                await client.close()
        except ImapError as exc:
            click.echo(f"mailer: the message stays in {rules.review_folder} for now: {exc}",
                       err=True)

    run(body())


# --- daemon ---------------------------------------------------------------------------------


@main.command("run")
@click.pass_context
def run_daemon(ctx: click.Context) -> None:
    """Run the daemon: inbox (IMAP IDLE), confirmations and scheduled campaigns."""
    settings = command_settings(ctx, quiet=False)
    from mailer.daemon import run as daemon_run

    check_confirmation_template(settings)
    run(daemon_run(settings))


main.add_command(campaign)
main.add_command(init)
main.add_command(cli_ops.status)
main.add_command(cli_ops.db)
main.add_command(web)
customers.add_command(customers_reactivate)
main.add_command(bounces)
main.add_command(dkim_group)
main.add_command(cli_console.users)
main.add_command(cli_console.console)


def check_confirmation_template(settings: Settings) -> None:
    """Exit 2 with one line if the confirmation template cannot render or the DKIM key
    (`[dkim]`, loaded with the outbox's settings) is missing or unreadable."""
    from mailer.campaigns.templates import TemplateError
    from mailer.errors import SettingsError
    from mailer.outbox import check_templates, confirmation_settings

    try:
        check_templates(confirmation_settings(settings))
    except (TemplateError, SettingsError) as exc:
        cli_support.fail(str(exc), EXIT_BAD_INPUT)
