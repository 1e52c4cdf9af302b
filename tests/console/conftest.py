"""What the console tests share: a client of the console app, served on loopback over the
settings of the module's own `world` fixture (each module builds the world it needs), on a
clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.console.world import FakeClock, start_client


@pytest.fixture
def clock() -> FakeClock:
    """The console's clock, moved by hand (sessions, throttling, schedule times)."""
    return FakeClock()


@pytest.fixture
async def client(world: Any, clock: FakeClock) -> AsyncIterator[TestClient[object, object]]:
    client = await start_client(world.settings, clock)
    try:
        yield client
    finally:
        await client.close()
