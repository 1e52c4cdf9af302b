"""The `mailer` command line: one module per noun, each thin (parse arguments, load settings,
call one async function, print). The `main` group (`mailer.cli.support.MailerGroup`) is the
one place an error becomes a line on stderr and an exit code; `mailer.cli.preflight` holds the
start-up checks of the long-running commands.

    customers  import, show, reactivate,         review    list, resolve
               export, erase                     retention run (--dry-run)
    campaign   create ... send, pause, cancel    inbox     process (one burst pass)
    bounces    list;  dkim dns                   users     console accounts
    db         backup, check                     serve     run, web, console, status
    init       a new installation's files        doctor    will providers accept our mail?
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import click

from mailer.cli import bounces, campaigns, customers, db, doctor, inbox, init, review, serve, users
from mailer.cli import retention as retention_cli
from mailer.cli.support import CliState, MailerGroup
from mailer.logs import LEVELS, LogFormat
from mailer.settings import default_path


def _version() -> str:
    try:
        return importlib.metadata.version("mailer")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


@click.group(cls=MailerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="mailer",
                      message="%(prog)s %(version)s")
@click.option(
    "--settings", "settings_path", type=click.Path(path_type=Path), default=None,
    help="Settings file [default: $MAILER_SETTINGS or ./settings.toml].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or JSON [default: [log] format, else text].")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
              help="Least level logged [default: [log] level, else info for run, web and "
                   "console, warning otherwise].")
@click.pass_context
def main(ctx: click.Context, settings_path: Path | None, verbose: bool,
         log_format: LogFormat | None, log_level: str | None) -> None:
    """Honour 'Unsubscribe special offers' emails and send consent-aware campaigns."""
    ctx.obj = CliState(settings_path=settings_path or default_path(), verbose=verbose,
                       log_format=log_format, log_level=log_level and log_level.lower())


for command in (
    customers.customers, campaigns.campaign, review.review, inbox.inbox, bounces.bounces,
    bounces.dkim_group, users.users, db.db, init.init,
    serve.run_daemon, serve.web, serve.console, serve.status, doctor.doctor,
    retention_cli.retention_group,
):
    main.add_command(command)
