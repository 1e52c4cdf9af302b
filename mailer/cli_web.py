"""`mailer web`: serve the unsubscribe link (one-click and the preference page) on its own, for
a separate front-end host. `mailer run` serves the same app next to the inbox and campaigns
when `[http] host` is set. SIGINT/SIGTERM close the listener and let requests in flight finish.
"""

from __future__ import annotations

import asyncio
import signal

import click

from mailer.cli_support import command_settings, run
from mailer.errors import SettingsError
from mailer.settings import Settings


@click.command("web")
@click.pass_context
def web(ctx: click.Context) -> None:
    """Serve the unsubscribe link on [http] host:port until SIGINT/SIGTERM."""
    settings = command_settings(ctx, quiet=False)
    run(_serve_until_signalled(settings))


async def _serve_until_signalled(settings: Settings) -> None:
    from mailer.web import serve

    if not settings.http.host:
        raise SettingsError("[http] host: missing value (`mailer web` needs [http] host and "
                            "port)")
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
