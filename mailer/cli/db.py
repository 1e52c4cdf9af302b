"""`mailer db backup|check`: a consistent online copy of the database, and its integrity.

`mailer db check` exits 0 when the database is whole and not newer than the code, 3 otherwise
(`StoreError`).
"""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.support import command_settings, run
from mailer.errors import StoreError


@click.group("db")
def db() -> None:
    """The database: backups and checks."""


@db.command("backup")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def db_backup(ctx: click.Context, path: Path) -> None:
    """Copy the database to PATH, consistently, while the daemon runs."""
    settings = command_settings(ctx)
    from mailer.store.backup import backup

    size = run(backup(settings.database.path, path))
    click.echo(f"backed up {settings.database.path} to {path} ({size} bytes, integrity ok)")


@db.command("check")
@click.pass_context
def db_check(ctx: click.Context) -> None:
    """Check the database's integrity and schema version."""
    settings = command_settings(ctx)
    from mailer.store.backup import check

    report = run(check(settings.database.path))
    click.echo(f"{report.path}: integrity {report.integrity}; schema version "
               f"{report.schema_version} (this mailer: {report.code_version})")
    if report.schema_version > report.code_version:
        raise StoreError(f"database schema version {report.schema_version} is newer than this "
                         f"mailer ({report.code_version})")
    if report.integrity != "ok":
        raise StoreError(f"database {report.path} failed its integrity check")
