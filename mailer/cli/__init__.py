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

from mailer.cli.support import CliState, MailerGroup
from mailer.logs import LEVELS, LogFormat
from mailer.settings import default_path


def _version() -> str:
    try:
        return importlib.metadata.version("mailer")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


# Each command's module is imported only when that command runs (or --help lists them all), so
# a one-shot command does not pay for every other noun's imports (the doctor's DNS and HTTP
# clients, the console's password checks) at start-up.
COMMANDS = {
    "customers": "mailer.cli.customers:customers",
    "campaign": "mailer.cli.campaigns:campaign",
    "review": "mailer.cli.review:review",
    "inbox": "mailer.cli.inbox:inbox",
    "bounces": "mailer.cli.bounces:bounces",
    "dkim": "mailer.cli.bounces:dkim_group",
    "users": "mailer.cli.users:users",
    "db": "mailer.cli.db:db",
    "init": "mailer.cli.init:init",
    "run": "mailer.cli.serve:run_daemon",
    "web": "mailer.cli.serve:web",
    "console": "mailer.cli.serve:console",
    "status": "mailer.cli.serve:status",
    "doctor": "mailer.cli.doctor:doctor",
    "retention": "mailer.cli.retention:retention_group",
}


@click.group(cls=MailerGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
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
