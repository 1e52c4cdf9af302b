"""What every CLI command shares: one-line errors, settings loading, logging.

Exit codes come from the error's class (`mailer.errors`, where the tree and its codes are
drawn); `run` is the one place that turns an error into a line on stderr and an exit code.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mailer import logs
from mailer import settings as settings_module
from mailer.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, MailerError, SettingsError
from mailer.logs import LogFormat
from mailer.settings import Settings

T = TypeVar("T")


@dataclass
class CliState:
    settings_path: Path
    verbose: bool
    log_format: LogFormat | None = None  # --log-format; None: [log] format
    log_level: str | None = None  # --log-level; None: [log] level, then the default
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = settings_module.load(self.settings_path)
            except SettingsError as exc:
                fail(f"settings: {exc}", exc.exit_code)
        return self._settings


def command_settings(ctx: click.Context, *, quiet: bool = True) -> Settings:
    """The validated settings for a command (exit 2 on a bad file), with logging set up:
    -v (debug), else --log-level, else `[log] level`, else warnings only for one-shot
    commands (`quiet`) and info for the daemon; text or JSON by --log-format or `[log]`."""
    cli = state(ctx)
    settings = cli.settings()
    level = ("debug" if cli.verbose else cli.log_level or settings.log.level
             or ("warning" if quiet else "info"))
    logs.configure(level, cli.log_format or settings.log.format)
    return settings


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"mailer: {message}", err=True)
    sys.exit(code)


def state(ctx: click.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning the project's errors into one line and the exit
    code their class carries."""
    try:
        return asyncio.run(coro)
    except MailerError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)


def check_confirmation_template(settings: Settings) -> None:
    """Exit 2 with one line if the confirmation template cannot render or the DKIM key
    (`[dkim]`, loaded with the outbox's settings) is missing or unreadable."""
    from mailer.consent.confirmations import check_templates, confirmation_settings
    from mailer.errors import SettingsError, TemplateError

    try:
        check_templates(confirmation_settings(settings))
    except (TemplateError, SettingsError) as exc:
        fail(str(exc), EXIT_BAD_INPUT)
