"""The console's customer page shows each consent event's evidence, inert (aiohttp's test
client, SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from mailer.consent.change import Refusal, opt_out
from mailer.store.db import open_db, transaction
from mailer.store.evidence import EventEvidence
from tests.campaigns.world import World
from tests.console.world import add_users, login, query
from tests.servers import SmtpSink

Client = TestClient[object, object]


@pytest.fixture
async def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> World:
    world = World.build(tmp_path, smtp_sink, database)
    await world.import_csv("name,email,announcements,offers\nAnn Lee,ann@example.com,yes,yes\n")
    await add_users(world.settings)
    return world



async def test_the_customer_page_shows_each_events_evidence_as_text(
    client: Client, world: World
) -> None:
    (customer_id,) = query(world.db, "SELECT id FROM customers WHERE email = ?",
                           "ann@example.com")[0]
    async with open_db(world.db) as conn, transaction(conn):
        await opt_out(conn, [Refusal((customer_id,), "<r1@example.com>", evidence=EventEvidence(
            message_id="<r1@example.com>", message_from="Ann Lee <ann@example.com>",
            dkim="pass", spf="fail"))], ["offers"], source="email")
        await opt_out(conn, [Refusal((customer_id,), "campaign 1", evidence=EventEvidence(
            client_address="192.0.2.7", user_agent="<script>alert(1)</script>",
            wording="0123abcd"))], ["announcements"], source="one-click")

    assert await login(client, "reviewer") == 303
    page = await (await client.get(f"/customers/{customer_id}")).text()

    assert "DKIM: pass<br>SPF: fail" in page
    assert "From: Ann Lee &lt;ann@example.com&gt;" in page
    assert "client address: 192.0.2.7" in page and "wording: 0123abcd" in page
    assert "user agent: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
