"""A link is evidence of a message we sent: the public listener (a real aiohttp server on
loopback, a real SQLite file) opens a token's page only when the ledger shows its message sent
to that customer; a preview's sample link and a test copy's link open a page saying nothing was
changed; a link only ever changes its own customer's consent."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.mail import tokens
from mailer.public import make_app
from mailer.store import links as link_store
from mailer.store import outbox
from mailer.store.db import open_db, transaction
from tests.campaigns.world import SECRET
from tests.public.world import OLD_SECRET, FakeClock, Site, seed, web_settings

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@contextlib.asynccontextmanager
async def open_site(tmp_path: Path, database: Path | str | None = None) -> AsyncIterator[Site]:
    settings = web_settings(tmp_path, 1, database)
    ids, campaign_id = await seed(settings)
    clock = FakeClock()
    async with TestClient(TestServer(make_app(settings, clock=clock))) as client:
        yield Site(client, settings, clock, ids, campaign_id)


@pytest.fixture
async def site(tmp_path: Path, database: Path | str) -> AsyncIterator[Site]:
    async with open_site(tmp_path, database) as s:
        yield s


def draft_id(site: Site) -> int:
    """The seeded campaign whose mail is still pending: nothing of it was sent."""
    [(campaign_id,)] = site.rows("SELECT max(id) FROM campaigns")
    return int(campaign_id)


async def nonce_of(site: Site, path: str) -> str:
    page = await site.client.get(path)
    assert page.status == 200
    match = re.search(r'name="nonce" value="([^"]+)"', await page.text())
    assert match
    return match.group(1)


async def every_request(site: Site, path: str, nonce: str) -> list[tuple[int, str]]:
    """GET, HEAD, one-click and both forms of the page at `path`: (status, body) each."""
    answers = []
    for method, data in (("GET", None), ("HEAD", None), ("POST", ONE_CLICK),
                         ("POST", {"nonce": nonce, "action": "save",
                                   "categories": ["offers", "announcements"]}),
                         ("POST", {"nonce": nonce, "action": "everything"})):
        response = await site.client.request(method, path, data=data, allow_redirects=False)
        answers.append((response.status, await response.text()))
    return answers


# --- a token whose message was never sent --------------------------------------------------


async def test_a_drafts_token_answers_the_same_404_as_a_bad_token_and_changes_nothing(
    site: Site,
) -> None:
    ann = site.ids["ann@example.com"]
    nonce = await nonce_of(site, site.url())  # a real nonce for Ann, from her real link
    before = site.snapshot()
    draft = f"{site.prefix}/{tokens.campaign_token(SECRET, ann, draft_id(site))}"
    bad = f"{site.prefix}/{tokens.campaign_token('not-our-secret', ann, draft_id(site))}"

    drafts = await every_request(site, draft, nonce)
    bads = await every_request(site, bad, nonce)

    assert [status for status, _ in drafts] == [404] * 5
    assert drafts == bads  # the page tells no one which tokens we have made
    assert site.snapshot() == before


async def test_one_clicks_arriving_together_are_each_checked_against_the_ledger(
    site: Site,
) -> None:
    bob = site.ids["bob@example.com"]
    draft = f"{site.prefix}/{tokens.campaign_token(SECRET, bob, draft_id(site))}"
    bob_before = (site.preferences("bob@example.com"), site.events("bob@example.com"))

    answers = await asyncio.gather(*(site.client.post(path, data=ONE_CLICK)
                                     for path in (site.url(), draft) * 5))

    assert [a.status for a in answers] == [200, 404] * 5
    assert site.preferences() == {"announcements": 0, "offers": 0}
    assert (site.preferences("bob@example.com"), site.events("bob@example.com")) == bob_before


async def test_a_token_for_a_campaign_never_created_is_refused_even_though_it_is_signed(
    site: Site,
) -> None:
    token = tokens.campaign_token(SECRET, site.ids["ann@example.com"], 999)
    before = site.snapshot()

    assert (await site.client.get(f"{site.prefix}/{token}")).status == 404
    assert (await site.client.post(f"{site.prefix}/{token}", data=ONE_CLICK)).status == 404
    assert site.snapshot() == before


async def test_a_campaign_message_that_failed_or_was_skipped_gives_no_working_link(
    site: Site,
) -> None:
    bob = site.ids["bob@example.com"]
    site.rows("UPDATE campaign_recipients SET status = 'failed' WHERE customer_id = ? "
              "AND campaign_id = ?", (bob, site.campaign_id))
    before = site.snapshot()

    assert (await site.client.get(site.url("bob@example.com"))).status == 404
    assert (await site.client.post(site.url("bob@example.com"), data=ONE_CLICK)).status == 404
    assert site.snapshot() == before


# --- links minted before this change --------------------------------------------------------


async def test_links_in_mail_already_sent_keep_working_under_either_secret(site: Site) -> None:
    old = site.url(secret=OLD_SECRET)

    assert (await site.client.get(site.url())).status == 200
    assert (await site.client.get(old)).status == 200
    assert (await site.client.post(old, data=ONE_CLICK)).status == 200
    assert site.preferences() == {"announcements": 0, "offers": 0}
    assert {(source, reference) for *_, source, reference in site.events()} == {
        ("one-click", f"campaign {site.campaign_id}")}


async def test_a_category_token_works_only_for_a_customer_we_sent_a_campaign_message_to(
    site: Site,
) -> None:
    ann, bob = site.ids["ann@example.com"], site.ids["bob@example.com"]
    site.rows("DELETE FROM campaign_recipients WHERE customer_id = ? AND campaign_id = ?",
              (bob, site.campaign_id))
    ann_link = f"{site.prefix}/{tokens.unsubscribe_token(SECRET, ann, 'offers')}"
    bob_link = f"{site.prefix}/{tokens.unsubscribe_token(SECRET, bob, 'offers')}"

    assert (await site.client.post(ann_link, data=ONE_CLICK)).status == 200
    assert (await site.client.post(bob_link, data=ONE_CLICK)).status == 404
    assert site.preferences("bob@example.com") == {"announcements": 1, "offers": 1}


async def test_a_confirmation_link_opens_once_its_outbox_row_was_sent_to_that_customer(
    site: Site,
) -> None:
    ann, bob = site.ids["ann@example.com"], site.ids["bob@example.com"]
    now = datetime.now(UTC)
    async with open_db(site.settings.database.location) as conn, transaction(conn):
        await outbox.enqueue_confirmations(conn, [outbox.NewConfirmation(
            customer_id=ann, to_address="ann@example.com", to_name="Ann",
            categories=("offers",), request_subject="Unsubscribe", in_reply_to="",
            refs=())], interval_h=0, now=now)
    [(outbox_id,)] = site.rows("SELECT id FROM outbox")
    ann_link = f"{site.prefix}/{tokens.confirmation_token(SECRET, ann, outbox_id)}"
    # Signed for Bob, naming Ann's confirmation: it was never sent to him.
    bob_link = f"{site.prefix}/{tokens.confirmation_token(SECRET, bob, outbox_id)}"

    while_pending = (await site.client.get(ann_link)).status
    async with open_db(site.settings.database.location) as conn, transaction(conn):
        await outbox.mark_sent(conn, outbox_id, now=now)
    before = site.snapshot()
    refused = [(await site.client.get(bob_link)).status,
               (await site.client.post(bob_link, data=ONE_CLICK)).status]
    unchanged = site.snapshot() == before
    once_sent = (await site.client.get(ann_link)).status

    assert (while_pending, refused, unchanged, once_sent) == (404, [404, 404], True, 200)
    async with open_db(site.settings.database.location) as conn:
        assert await link_store.confirmation_sent(conn, ann, outbox_id)
        assert not await link_store.confirmation_sent(conn, bob, outbox_id)


# --- a link changes only its own customer's consent ----------------------------------------


async def test_a_link_for_ann_can_never_change_bob(site: Site) -> None:
    ann, bob = site.ids["ann@example.com"], site.ids["bob@example.com"]
    bob_before = (site.preferences("bob@example.com"), site.events("bob@example.com"))
    ann_nonce = await nonce_of(site, site.url())
    _, _, ann_sig = site.token().split(".")
    # Ann's signature on Bob's id, and Ann's page nonce posted to Bob's link.
    forged = f"{site.prefix}/{bob}.{site.campaign_id}.{ann_sig}"

    assert (await site.client.post(forged, data=ONE_CLICK)).status == 404
    stale = await site.client.post(site.url("bob@example.com"),
                                   data={"nonce": ann_nonce, "action": "everything"})
    saved = await site.client.post(site.url(), allow_redirects=False, data={
        "nonce": ann_nonce, "action": "everything"})

    assert stale.status == 400 and saved.status == 303
    assert (site.preferences("bob@example.com"), site.events("bob@example.com")) == bob_before
    assert {row[0] for row in site.rows(
        "SELECT DISTINCT customer_id FROM consent_events WHERE source != 'import'")} == {ann}


# --- links that change nothing ---------------------------------------------------------------


async def test_the_preview_sample_link_says_so_and_changes_nothing(site: Site) -> None:
    nonce = await nonce_of(site, site.url())
    before = site.snapshot()

    answers = await every_request(site, f"{site.prefix}/{tokens.SAMPLE_TOKEN}", nonce)

    assert [status for status, _ in answers] == [200] * 5
    assert "This is a sample link in a preview; nothing was changed." in answers[0][1]
    assert "<h1>This is a sample link</h1>" in answers[0][1]
    assert answers[2][1] == "This is a sample link in a preview; nothing was changed.\n"
    assert site.snapshot() == before


async def test_a_test_copys_link_says_so_and_changes_nothing(site: Site) -> None:
    nonce = await nonce_of(site, site.url())
    before = site.snapshot()
    link = f"{site.prefix}/{tokens.token_for_test_copies(SECRET, site.campaign_id)}"
    old = f"{site.prefix}/{tokens.token_for_test_copies(OLD_SECRET, draft_id(site))}"

    answers = await every_request(site, link, nonce)
    old_answers = await every_request(site, old, nonce)

    assert [status for status, _ in answers + old_answers] == [200] * 10
    assert "<h1>This is a test copy</h1>" in answers[0][1]
    assert "This link came in a test copy of a campaign; nothing was changed." in answers[0][1]
    assert site.snapshot() == before


async def test_a_forged_test_copy_link_is_a_plain_404(site: Site) -> None:
    forged = tokens.token_for_test_copies("not-our-secret", site.campaign_id)
    before = site.snapshot()

    response = await site.client.get(f"{site.prefix}/{forged}")

    assert response.status == 404 and "Page not found" in await response.text()
    assert site.snapshot() == before
