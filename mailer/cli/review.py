"""`mailer review list|resolve|opt-in`: the requests the worker would not decide alone."""

from __future__ import annotations

import json

import click

from mailer.cli.support import command_settings, run
from mailer.errors import BadInput
from mailer.store.db import open_db


@click.group()
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

        async with open_db(settings.database.location) as conn:
            items = await store.review_items(conn, include_settled=include_settled)
        if as_json:
            click.echo(json.dumps([
                {"id": i.id, "message_id": i.message_id, "sender": i.sender,
                 "subject": i.subject, "reason": i.reason, "status": i.status,
                 "created_at": i.created_at, "settlement": i.settlement, "marked": i.marked}
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
        raise BadInput("review resolve: give exactly one of --customer EMAIL or --dismiss")
    settings = command_settings(ctx)

    async def body() -> None:
        from mailer.inbox import review as review_ops
        from mailer.inbox.worker import imap_config, inbox_config

        config = inbox_config(settings)
        async with open_db(settings.database.location) as conn:
            if dismiss:
                item = await review_ops.dismiss(conn, item_id)
                click.echo(f"review item {item_id} dismissed")
            else:
                assert customer_email is not None
                item = await review_ops.resolve(conn, config, item_id, customer_email)
                click.echo(f"review item {item_id} resolved: {customer_email} unsubscribed "
                           f"from {', '.join(config.categories)}; confirmation queued")
        problem = await review_ops.file_settled(imap_config(settings), config, item.message_id)
        if problem:
            click.echo(f"mailer: {problem}", err=True)

    run(body())


@review.command("opt-in")
@click.argument("item_id", type=int)
@click.argument("email")
@click.option("--offers", is_flag=True, help="Turn special offers back on.")
@click.option("--announcements", is_flag=True, help="Turn announcements back on.")
@click.option("--by", "actor", default=None,
              help="Who checked the request, for the history [default: the OS user].")
@click.pass_context
def review_opt_in(ctx: click.Context, item_id: int, email: str, offers: bool,
                  announcements: bool, actor: str | None) -> None:
    """Record the opt-in review item ITEM_ID (marked "opt back in") asks for, for EMAIL, with
    the request as the evidence."""
    from mailer.cli.customers import os_user

    settings = command_settings(ctx)
    who = (actor or os_user()).strip() or "unknown"
    categories = [c for c, on in (("announcements", announcements), ("offers", offers)) if on]

    async def body() -> None:
        from mailer.inbox import review as review_ops
        from mailer.inbox.worker import imap_config, inbox_config

        config = inbox_config(settings)
        async with open_db(settings.database.location) as conn:
            item = await review_ops.record_opt_in(conn, item_id, email, categories, actor=who)
        click.echo(f"review item {item_id} resolved: {email} opted in to "
                   f"{', '.join(categories)} (recorded by {who})")
        problem = await review_ops.file_settled(imap_config(settings), config, item.message_id)
        if problem:
            click.echo(f"mailer: {problem}", err=True)

    run(body())
