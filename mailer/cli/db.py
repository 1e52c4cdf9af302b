"""`mailer db backup|check|migrate|copy`: the database's upkeep, on either engine.

`mailer db check` exits 0 when the database is whole and not newer than the code, 3 otherwise
(`StoreError`). `mailer db copy --to postgresql://...` moves a SQLite installation into an empty
PostgreSQL database (see `mailer.store.copy`).
"""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.support import command_settings, run
from mailer.errors import StoreError


@click.group("db")
def db() -> None:
    """The database: backups, checks, migrations, moving to PostgreSQL."""


@db.command("backup")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def db_backup(ctx: click.Context, path: Path) -> None:
    """Copy the database to PATH, consistently, while the daemon runs (PostgreSQL: with
    pg_dump --format=custom; restore with pg_restore)."""
    settings = command_settings(ctx)
    from mailer.store.backup import backup
    from mailer.store.engine import where

    size = run(backup(settings.database.location, path))
    checked = "integrity ok" if settings.database.engine == "sqlite" else "pg_dump custom format"
    click.echo(f"backed up {where(settings.database.location)} to {path} ({size} bytes, "
               f"{checked})")


@db.command("check")
@click.pass_context
def db_check(ctx: click.Context) -> None:
    """Check the database's integrity and schema version (PostgreSQL: connect, read the
    version, count each table)."""
    settings = command_settings(ctx)
    from mailer.store.backup import check

    report = run(check(settings.database.location))
    click.echo(f"{report.place}: integrity {report.integrity}; schema version "
               f"{report.schema_version} (this mailer: {report.code_version})")
    for table, count in report.tables.items():
        click.echo(f"  {table:<28} {count:>12}")
    if report.schema_version > report.code_version:
        raise StoreError(f"database schema version {report.schema_version} is newer than this "
                         f"mailer ({report.code_version})")
    if report.integrity != "ok":
        raise StoreError(f"database {report.place} failed its integrity check")


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply the schema migrations this database lacks (every start does too); prints the
    versions from and to."""
    settings = command_settings(ctx)
    from mailer.store.backup import migrate

    done = run(migrate(settings.database.location))
    if done.before == done.after:
        click.echo(f"{done.place}: schema version {done.after}, up to date")
    else:
        click.echo(f"{done.place}: schema version {done.before} -> {done.after}")


@db.command("copy")
@click.option("--to", "target", required=True, metavar="URL",
              help="The empty PostgreSQL database to fill: postgresql://user@host:port/db.")
@click.pass_context
def db_copy(ctx: click.Context, target: str) -> None:
    """Copy this installation's SQLite database, every table, into an empty PostgreSQL
    database in one transaction, then verify row counts and the consent history."""
    settings = command_settings(ctx)
    from mailer.store.copy import copy_to_postgresql

    report = run(copy_to_postgresql(settings.database.path, target))
    click.echo(f"copied {report.source} to {report.target} in {report.seconds:.1f} s "
               f"({report.rows} rows, {report.rows_per_s:.0f} rows/s)")
    click.echo(f"  {'table':<28} {'sqlite':>10} {'postgresql':>10}")
    for table, (source_rows, target_rows) in report.counts.items():
        click.echo(f"  {table:<28} {source_rows:>10} {target_rows:>10}")
    click.echo(f"consent history checksum {report.checksum[:16]}: the same on both")
