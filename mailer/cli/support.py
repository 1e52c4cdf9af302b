"""What every CLI command shares: the one place errors become exit codes, settings, logging.

`MailerGroup.invoke` (the `main` group's) is the only place an exception turns into a line on
stderr and an exit code: a `MailerError` prints `mailer: ` and its one line and exits with the
code its class carries (`mailer.errors` draws the tree and the codes); Ctrl-C exits 130. A
command never catches an error to print it; it raises one. Anything else is a bug and keeps
its traceback.

`mailer status` follows the monitoring-plugins convention instead (0 OK, 1 WARNING, 2
CRITICAL, 3 UNKNOWN): it is a `MonitoringCommand`, and any error there (bad settings, an
unreadable database) means UNKNOWN, exit 3.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mailer import logs
from mailer import settings as settings_module
from mailer.errors import EXIT_INTERRUPTED, EXIT_UNKNOWN, MailerError, SettingsError
from mailer.logs import LogFormat
from mailer.settings import Settings

T = TypeVar("T")


class MonitoringCommand(click.Command):
    """A command that answers monitoring (`mailer status`): an error is UNKNOWN, exit 3."""

    error_exit_code = EXIT_UNKNOWN


class MailerGroup(click.Group):
    """The `main` group: runs a command and turns what it raises into one line and a code.

    `lazy_commands` names each command as "module:attribute", imported when it is first asked
    for (click's documented lazy-loading group)."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy_commands.get(cmd_name)
        if where is not None and cmd_name not in self.commands:
            module_name, _, attribute = where.partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{where} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            command = self.get_command(ctx, ctx.invoked_subcommand or "")
            code = getattr(command, "error_exit_code", exc.exit_code)
            _exit(str(exc), code)
        except KeyboardInterrupt:
            _exit("interrupted", EXIT_INTERRUPTED)


def _exit(message: str, code: int) -> NoReturn:
    click.echo(f"mailer: {' '.join(message.split())}", err=True)
    sys.exit(code)


@dataclass
class CliState:
    settings_path: Path
    verbose: bool
    log_format: LogFormat | None = None  # --log-format; None: [log] format
    log_level: str | None = None  # --log-level; None: [log] level, then the default
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The validated settings; SettingsError (one line naming the key) if they are not."""
        if self._settings is None:
            try:
                self._settings = settings_module.load(self.settings_path)
            except SettingsError as exc:
                raise SettingsError(f"settings: {exc}") from exc
        return self._settings


def command_settings(ctx: click.Context, *, daemon: bool = False) -> Settings:
    """The validated settings for a command, with logging set up: -v (debug), else
    --log-level, else `[log] level`, else info for the long-running commands (`daemon`) and
    warnings only for one-shot ones; text or JSON by --log-format or `[log]`."""
    cli = state(ctx)
    settings = cli.settings()
    level = ("debug" if cli.verbose else cli.log_level or settings.log.level
             or ("info" if daemon else "warning"))
    logs.configure(level, cli.log_format or settings.log.format)
    return settings


def state(ctx: click.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; what it raises is `MailerGroup.invoke`'s to report."""
    return asyncio.run(coro)
