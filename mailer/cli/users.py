"""`mailer users …` (console accounts) and `mailer console` (the console on its own).

Passwords are read from the terminal without echo (asked twice), or from the first line of
stdin when it is not a terminal (for scripts), and never from the command line. One that is
too easy to guess (`store.users.password_problem`: zxcvbn) is refused with one line saying why.
"""

from __future__ import annotations

import sys

import click

from mailer.cli.support import command_settings, run
from mailer.errors import BadInput, NotFound
from mailer.store import users as store
from mailer.store.db import open_db, transaction


def _read_password(prompt: str, name: str) -> str:
    if sys.stdin.isatty():
        password = click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    problem = store.password_problem(str(password), name)
    if problem:
        raise BadInput(f"password: {problem}")
    return str(password)


@click.group()
def users() -> None:
    """Console accounts: admin, marketing (campaigns) or reviewer (review queue, customers)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(store.ROLES), required=True)
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str) -> None:
    """Create account NAME; the password is read from the terminal or stdin."""
    settings = command_settings(ctx)
    if not name.strip() or len(name) > 64 or any(c.isspace() for c in name):
        raise BadInput("NAME: one word of at most 64 characters")
    password_hash = store.hash_password(_read_password("Password", name))

    async def body() -> None:
        async with open_db(settings.database.location) as conn, transaction(conn):
            if not await store.add_user(conn, name, role, password_hash):
                raise BadInput(f"user {name} already exists")
            await store.audit(conn, "cli", f"added user ({role})", name)
        click.echo(f"user {name} added ({role})")

    run(body())


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List accounts."""
    settings = command_settings(ctx)

    async def body() -> None:
        async with open_db(settings.database.location) as conn:
            found = await store.list_users(conn)
        if not found:
            click.echo("no users")
        for user in found:
            click.echo(f"{user.name}\t{user.role}\tcreated {user.created_at[:19]}")

    run(body())


@users.command("passwd")
@click.argument("name")
@click.pass_context
def users_passwd(ctx: click.Context, name: str) -> None:
    """Set NAME's password (ends their sessions)."""
    settings = command_settings(ctx)
    password_hash = store.hash_password(_read_password("New password", name))

    async def body() -> None:
        async with open_db(settings.database.location) as conn, transaction(conn):
            if not await store.set_password(conn, name, password_hash):
                raise NotFound(f"no user {name}")
            await store.audit(conn, "cli", "changed password", name)
        click.echo(f"password of {name} changed")

    run(body())


@users.command("remove")
@click.argument("name")
@click.pass_context
def users_remove(ctx: click.Context, name: str) -> None:
    """Remove account NAME (ends their sessions)."""
    settings = command_settings(ctx)

    async def body() -> None:
        async with open_db(settings.database.location) as conn, transaction(conn):
            if not await store.remove_user(conn, name):
                raise NotFound(f"no user {name}")
            await store.audit(conn, "cli", "removed user", name)
        click.echo(f"user {name} removed")

    run(body())
