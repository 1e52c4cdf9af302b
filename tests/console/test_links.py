"""The console hands out no link that could change a customer's consent: a preview carries the
sample link, a test copy (through the real SMTP sink) the test-copy link, and the public
listener (a real aiohttp server on loopback, the same SQLite file) answers both with a page
saying nothing was changed. Only a message really sent carries a link that works."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns.sender import send_campaign
from mailer.mail import tokens
from mailer.public import make_app
from mailer.store.db import open_db
from tests.campaigns.world import SECRET, UNSUBSCRIBE_URL, World
from tests.console.world import FakeClock, add_users, csrf, login, start_client
from tests.servers import SmtpSink

Client = TestClient[object, object]
LINK = re.compile(re.escape(UNSUBSCRIBE_URL) + r"/[A-Za-z0-9._~-]+")
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
async def world(tmp_path: Path, smtp_sink: SmtpSink) -> World:
    world = World.build(tmp_path, smtp_sink)
    await world.import_csv(
        "name,email,company,announcements,offers\n"
        "Ann Lee,ann@example.com,Lee Plumbing Ltd,yes,yes\n"
        "Olive Out,olive@example.com,,no,no\n")
    await add_users(world.settings)
    return world


@pytest.fixture
async def console(world: World) -> AsyncIterator[Client]:
    client = await start_client(world.settings, FakeClock())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def public(world: World) -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_app(world.settings))) as client:
        yield client


def path_of(link: str) -> str:
    """The path the TLS proxy in front forwards as it is."""
    return link.removeprefix(UNSUBSCRIBE_URL.rpartition("/")[0])


def consent_of(world: World, email: str) -> list[tuple[Any, ...]]:
    """The customer's preferences and whole consent history."""
    return world.rows(
        "SELECT c.announcements, c.offers, e.category, e.old_value, e.new_value, e.source, "
        "e.reference, e.actor FROM customers c LEFT JOIN consent_events e "
        "ON e.customer_id = c.id WHERE c.email = ? ORDER BY e.id", (email,))


def links_in(message: EmailMessage) -> set[str]:
    """Every unsubscribe link of a message: its List-Unsubscribe header and its bodies."""
    found = set(LINK.findall(" ".join(str(message["List-Unsubscribe"]).split())))
    for part in message.walk():
        if part.get_content_maintype() == "text":
            found.update(LINK.findall(str(part.get_content())))
    return found


async def test_the_harvested_preview_attack_fails_and_the_history_is_unchanged(
    console: Client, public: Client, world: World
) -> None:
    campaign_id = await world.create_campaign()
    before = consent_of(world, "olive@example.com")
    [(olive,)] = world.rows("SELECT id FROM customers WHERE email = 'olive@example.com'")
    assert await login(console, "marketing") == 303

    # A marketing user opens the preview for an opted-out customer and takes its links.
    page = await (await console.get(f"/campaigns/{campaign_id}?email=olive%40example.com")).text()
    html = await (await console.get(
        f"/campaigns/{campaign_id}/preview.html?email=olive%40example.com")).text()
    assert "Dear Olive Out" in page
    assert "The unsubscribe link in a preview is a sample that changes nothing" in page
    harvested = set(LINK.findall(page + html))
    assert harvested == {f"{UNSUBSCRIBE_URL}/{tokens.SAMPLE_TOKEN}"}
    [link] = harvested

    # Follows it and tries to opt Olive back in to everything.
    shown = await public.get(path_of(link))
    saved = await public.post(path_of(link), data={
        "nonce": "1.x", "action": "save", "categories": ["offers", "announcements"]})
    # The link the old preview showed (Olive's own token for this unsent draft) is no better.
    real = path_of(tokens.unsubscribe_link(UNSUBSCRIBE_URL,
                                           tokens.campaign_token(SECRET, olive, campaign_id)))
    refused = [(await public.get(real)).status,
               (await public.post(real, data={"nonce": "1.x", "action": "save",
                                              "categories": ["offers"]})).status]

    assert shown.status == saved.status == 200
    assert "This is a sample link in a preview; nothing was changed." in await shown.text()
    assert refused == [404, 404]
    assert consent_of(world, "olive@example.com") == before


async def test_a_test_copy_from_the_console_links_to_the_test_copy_page_which_changes_nothing(
    console: Client, public: Client, world: World, smtp_sink: SmtpSink
) -> None:
    campaign_id = await world.create_campaign()
    before = [consent_of(world, e) for e in ("ann@example.com", "olive@example.com")]
    assert await login(console, "marketing") == 303
    page = await (await console.get(f"/campaigns/{campaign_id}")).text()
    assert "Its unsubscribe link opens a page saying it is a test copy" in page
    token = await csrf(console, f"/campaigns/{campaign_id}")
    # One to an outside address, one to a customer's own: neither carries a customer's link.
    for address in ("me@imperial.test", "ann@example.com"):
        response = await console.post(f"/campaigns/{campaign_id}/test",
                                      data={"csrf": token, "address": address},
                                      allow_redirects=False)
        assert response.status == 303

    links = [links_in(message) for message in world.parsed()]
    test_link = tokens.unsubscribe_link(
        UNSUBSCRIBE_URL, tokens.token_for_test_copies(SECRET, campaign_id))
    assert links == [{test_link}, {test_link}]
    shown = await public.get(path_of(test_link))
    clicked = await public.post(path_of(test_link), data=ONE_CLICK)
    saved = await public.post(path_of(test_link), data={"nonce": "1.x", "action": "everything"})

    assert shown.status == clicked.status == saved.status == 200
    assert "<h1>This is a test copy</h1>" in await shown.text()
    assert await clicked.text() == ("This link came in a test copy of a campaign; nothing was "
                                    "changed.\n")
    assert [consent_of(world, e) for e in ("ann@example.com", "olive@example.com")] == before


async def test_the_link_of_a_message_really_sent_works_and_no_one_elses_does(
    public: Client, world: World
) -> None:
    campaign_id = await world.create_campaign()
    async with open_db(world.db) as conn:
        outcome = await send_campaign(conn, world.config(), campaign_id, stop=asyncio.Event())
    assert outcome.status == "sent" and world.received() == {"ann@example.com": 1}
    [sent] = [links_in(message) for message in world.parsed()]
    [ann_link] = sent
    [(olive,)] = world.rows("SELECT id FROM customers WHERE email = 'olive@example.com'")
    olive_link = tokens.unsubscribe_link(UNSUBSCRIBE_URL,
                                         tokens.campaign_token(SECRET, olive, campaign_id))

    assert (await public.get(path_of(ann_link))).status == 200
    # Olive was opted out, so the campaign never went to her: her token opens nothing.
    assert (await public.get(path_of(olive_link))).status == 404
    assert (await public.post(path_of(ann_link), data=ONE_CLICK)).status == 200
    assert world.rows("SELECT announcements, offers FROM customers WHERE email = ?",
                      ("ann@example.com",)) == [(0, 0)]
