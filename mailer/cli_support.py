"""What every CLI command shares: exit codes, one-line errors, settings loading, logging.

Exit codes (documented in the README):
    0  success
    1  the thing asked for does not exist, or the request was refused in its current state
    2  bad input: arguments, settings, a CSV file, a template, a campaign definition
    3  a server or the database could not be used (IMAP, SMTP, SQLite)
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
from mailer.settings import Settings, SettingsError

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3

T = TypeVar("T")


class CommandFailed(Exception):
    """Raised by command bodies: a one-line message and the exit code to leave with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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
                fail(f"settings: {exc}", EXIT_BAD_INPUT)
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
    """Run a command's coroutine, turning the project's errors into one line and an exit code."""
    from mailer.inbox.imap import ImapError
    from mailer.smtp import SmtpError
    from mailer.store.db import StoreError

    try:
        return asyncio.run(coro)
    except CommandFailed as exc:
        fail(str(exc), exc.code)
    except (ImapError, SmtpError, StoreError) as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def configure_logging(verbose: bool, *, quiet: bool) -> None:
    """Log to stderr: debug with -v, warnings only for one-shot commands, info for `run`."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aioimaplib", "aiosqlite", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
