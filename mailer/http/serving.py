"""Serving an aiohttp app on host:port until `stop` is set, the same way for both listeners.

The listener closes first, then requests in flight may finish (at most `shutdown_timeout_s`).
Signals are the caller's (`mailer.lifecycle.signals`, or the CLI command's own handlers), never
aiohttp's. aiohttp's access log is off: the public listener's paths hold customers' tokens, and
each app writes its own line. `SO_REUSEADDR` lets a restarted listener bind at once while the
last one's connections sit in TIME_WAIT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from mailer.errors import Unavailable

log = logging.getLogger(__name__)


async def serve(
    app: web.Application, stop: asyncio.Event, *, name: str, section: str, host: str,
    port: int, shutdown_timeout_s: float,
    on_listening: Callable[[str], None] = lambda where: None,
) -> None:
    """Serve `app` until `stop` is set; `name` starts the log lines ("web", "console") and
    `section` names the settings of the address ("[http]"). Raises Unavailable, naming the
    address, when it cannot be listened on."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise Unavailable(f"{section} {host}:{port}: cannot listen: "
                              f"{exc.strerror or exc}") from exc
        log.info("%s: listening on http://%s:%d", name, host, port)
        on_listening(f"{host}:{port}")
        await stop.wait()
        log.info("%s: stopping (finishing requests in flight)", name)
    finally:
        await runner.cleanup()
    log.info("%s: stopped", name)
