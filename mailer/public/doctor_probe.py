"""The GET `mailer doctor` sends to prove the unsubscribe URL reaches this listener over a
certificate that verifies; it reads nothing and changes nothing."""

from __future__ import annotations

from aiohttp import web

from mailer.doctor.probe import PROBE_BODY, probe_path


def add_route(app: web.Application, prefix: str) -> None:
    """Register the probe before the `{token}` routes, which would otherwise take its path."""
    app.router.add_get(probe_path(prefix), probe, name="doctor-probe")


async def probe(request: web.Request) -> web.StreamResponse:
    return web.Response(text=PROBE_BODY, headers={"Cache-Control": "no-store"})
