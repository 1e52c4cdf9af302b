"""What every CLI command shares: one-line errors, settings loading, logging.

Exit codes come from the error's class (`mailer.errors`, where the tree and its codes are
drawn); `run` is the one place that turns an error into a line on stderr and an exit code.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mailer import settings as settings_module
from mailer.errors import EXIT_INTERRUPTED, MailerError, SettingsError
from mailer.settings import Settings

T = TypeVar("T")


@dataclass
class CliState:
    settings_path: Path
    verbose: bool
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
    warnings only for one-shot commands (`quiet`), info for the daemon, debug with -v."""
    cli = state(ctx)
    settings = cli.settings()
    configure_logging(cli.verbose, quiet=quiet)
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


def configure_logging(verbose: bool, *, quiet: bool) -> None:
    """Log to stderr: debug with -v, warnings only for one-shot commands, info for `run`."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aioimaplib", "aiosqlite", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
