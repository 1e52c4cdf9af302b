"""The long-running commands and the one that watches them.

- `mailer run`: the daemon (inbox, confirmations, campaigns, and the listeners it is set up for).
- `mailer web`: the unsubscribe link (one-click and the preference page) on its own, for a
  separate front-end host; `mailer run` serves the same app when `[http] host` is set.
- `mailer console`: the marketing console on its own.
- `mailer status`: the daemon's health from its heartbeat in the database, as a monitoring
  plugin (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; see `mailer.health.status`); it never
  talks to the process.

Each long-running command first runs its start-up checks (`mailer.cli.preflight`): what
cannot succeed by waiting exits 2 with one line naming the key, before anything starts.
SIGINT/SIGTERM close the listeners and let the work in hand finish.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import click

from mailer.cli import preflight
from mailer.cli.support import MonitoringCommand, command_settings, run
from mailer.settings import Settings


@click.command("web")
@click.pass_context
def web(ctx: click.Context) -> None:
    """Serve the unsubscribe link on [http] host:port until SIGINT/SIGTERM."""
    settings = command_settings(ctx, daemon=True)
    preflight.web(settings)
    run(_serve_until_signalled(settings))


async def _serve_until_signalled(settings: Settings) -> None:
    from mailer.public import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve(settings, stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


@click.command("run")
@click.pass_context
def run_daemon(ctx: click.Context) -> None:
    """Run the daemon: inbox (IMAP IDLE), confirmations and scheduled campaigns."""
    settings = command_settings(ctx, daemon=True)
    preflight.daemon(settings)
    from mailer.daemon import run as daemon_run

    run(daemon_run(settings))


@click.command("console")
@click.pass_context
def console(ctx: click.Context) -> None:
    """Serve the console on [console] host:port until SIGINT or SIGTERM."""
    settings = command_settings(ctx, daemon=True)
    preflight.console(settings)
    from mailer.console.app import serve

    async def body() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    run(body())


@click.command("status", cls=MonitoringCommand)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Is a daemon running, how are its parts, and which holds the inbox? Every daemon on
    the database is shown (several hosts may share one). As a monitoring plugin: exit 0 OK,
    1 WARNING (a part reconnecting, a campaign paused by its settings, one of several hosts
    down), 2 CRITICAL (none running, or only stale heartbeats), 3 UNKNOWN (bad settings, an
    unreadable database)."""
    settings = command_settings(ctx)
    from mailer.health.status import gather, render_text

    result = run(gather(settings.database.location))
    click.echo(json.dumps(result.as_json(), indent=2) if as_json else render_text(result))
    sys.exit(result.code)
