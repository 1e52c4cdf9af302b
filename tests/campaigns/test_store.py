"""Campaign SQL and the pure campaign model: ledger claims, leases, audience, transitions."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest

from mailer.campaigns.audience import ConsentGate
from mailer.campaigns.model import (
    Campaign,
    CampaignInvalid,
    CampaignRefused,
    Counts,
    backoff_s,
    failure_threshold_passed,
    next_status,
    parse_schedule,
)
from mailer.store import campaigns as store
from mailer.store import customers
from mailer.store.campaigns import RecipientResult
from mailer.store.db import open_db, transaction
from tests.campaigns.world import World
from tests.servers import SmtpSink


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # The store needs no SMTP; a sink that is never started just lends its port.
    yield World.build(tmp_path, SmtpSink())


@pytest.fixture
async def conn(world: World) -> AsyncIterator[aiosqlite.Connection]:
    async with open_db(world.db) as connection:
        yield connection


async def started(conn: aiosqlite.Connection, campaign_id: int) -> Campaign:
    campaign = await store.get_campaign(conn, campaign_id)
    assert campaign is not None
    async with transaction(conn):
        await store.snapshot_audience(conn, campaign)
        await store.mark_started(conn, campaign_id)
    campaign = await store.get_campaign(conn, campaign_id)
    assert campaign is not None
    return campaign


def campaign_with(status: str) -> Campaign:
    return Campaign(id=7, kind="offers", template="t", subject="s", status=status,
                    scheduled_at=None, created_at="", started_at=None, finished_at=None,
                    status_reason="", audience_at=None)


# --- the audience ---------------------------------------------------------------------------


async def test_audience_is_the_customers_opted_in_to_the_kind_taken_once(
    world: World, conn: aiosqlite.Connection
) -> None:
    await world.add_customers(10, offers_every=2)
    campaign_id = await world.create_campaign(kind="offers")
    campaign = await started(conn, campaign_id)
    assert set(world.ledger(campaign_id)) == world.opted_in("offers")
    assert len(world.ledger(campaign_id)) == 5
    await world.add_customers(4, start=100)
    async with transaction(conn):
        assert await store.snapshot_audience(conn, campaign) == 0
    assert len(world.ledger(campaign_id)) == 5


async def test_counts_report_claimed_rows_as_pending(
    world: World, conn: aiosqlite.Connection
) -> None:
    await world.add_customers(6)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    claimed = await store.claim_batch(conn, campaign_id, 4)
    await store.record_results(conn, campaign_id, [
        RecipientResult(claimed[0], "sent", 1, "250 OK"),
        RecipientResult(claimed[1], "failed", 1, "550 no"),
        RecipientResult(claimed[2], "skipped", 0, "opted out"),
    ])
    assert await store.counts(conn, campaign_id) == Counts(
        audience=6, sent=1, failed=1, skipped=1, pending=3)


# --- claims and results ---------------------------------------------------------------------


async def test_claims_take_the_lowest_pending_ids_and_never_the_same_row_twice(
    world: World, conn: aiosqlite.Connection
) -> None:
    await world.add_customers(7)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    first = await store.claim_batch(conn, campaign_id, 3)
    second = await store.claim_batch(conn, campaign_id, 3)
    third = await store.claim_batch(conn, campaign_id, 3)
    assert first == sorted(first) and max(first) < min(second)
    assert len(first) == 3 and len(second) == 3 and len(third) == 1
    assert await store.claim_batch(conn, campaign_id, 3) == []
    assert set(world.ledger(campaign_id).values()) == {"sending"}


async def test_results_settle_only_claimed_rows_and_keep_the_reply(
    world: World, conn: aiosqlite.Connection
) -> None:
    await world.add_customers(3)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    claimed = await store.claim_batch(conn, campaign_id, 2)
    pending = [r[0] for r in world.rows(
        "SELECT customer_id FROM campaign_recipients WHERE status = 'pending'")]
    await store.record_results(conn, campaign_id, [
        RecipientResult(claimed[0], "failed", 2, "SMTP to <x>: 550 5.1.1 unknown user"),
        RecipientResult(pending[0], "sent", 1, "250 OK"),  # never claimed: ignored
    ])
    rows = dict((r[0], r[1:]) for r in world.rows(
        "SELECT customer_id, status, attempts, last_reply FROM campaign_recipients"))
    assert rows[claimed[0]] == ("failed", 2, "SMTP to <x>: 550 5.1.1 unknown user")
    assert rows[pending[0]] == ("pending", 0, "")


async def test_requeue_returns_in_flight_rows_to_pending(
    world: World, conn: aiosqlite.Connection
) -> None:
    await world.add_customers(4)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    await store.claim_batch(conn, campaign_id, 3)
    assert await store.requeue_in_flight(conn, campaign_id) == 3
    assert set(world.ledger(campaign_id).values()) == {"pending"}


async def test_an_opt_out_skips_pending_rows_but_leaves_claimed_ones_to_the_consent_check(
    world: World, conn: aiosqlite.Connection
) -> None:
    await world.add_customers(2)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    [claimed] = await store.claim_batch(conn, campaign_id, 1)
    ids = [r[0] for r in world.rows("SELECT id FROM customers ORDER BY id")]
    async with transaction(conn):
        await customers.opt_out(conn, ids, ["offers"], source="email", reference="<m@x>")
    ledger = dict(world.rows("SELECT customer_id, status FROM campaign_recipients"))
    assert ledger[claimed] == "sending"
    assert [v for k, v in ledger.items() if k != claimed] == ["skipped"]
    campaign = await store.get_campaign(conn, campaign_id)
    assert campaign is not None
    with ConsentGate(world.db, campaign) as gate:
        verdict = gate.check(claimed)
    assert verdict.recipient is None and "opted out" in verdict.skip_reason


async def test_consent_gate_sees_a_commit_made_a_moment_earlier_on_another_connection(
    world: World, conn: aiosqlite.Connection
) -> None:
    await world.add_customers(1)
    campaign_id = await world.create_campaign()
    campaign = await started(conn, campaign_id)
    [customer_id] = [r[0] for r in world.rows("SELECT id FROM customers")]
    with ConsentGate(world.db, campaign) as gate:
        first = gate.check(customer_id)
        assert first.recipient is not None and first.recipient.email == "c0@example.com"
        with sqlite3.connect(world.db) as other:
            other.execute("UPDATE customers SET offers = 0 WHERE id = ?", (customer_id,))
        assert gate.check(customer_id).recipient is None
        with sqlite3.connect(world.db) as other:
            other.execute("UPDATE campaigns SET status = 'paused' WHERE id = ?", (campaign_id,))
        assert gate.check(customer_id).stop_reason == "campaign is now paused"


# --- leases ---------------------------------------------------------------------------------


async def test_a_lease_has_one_holder_until_it_expires(
    world: World, conn: aiosqlite.Connection
) -> None:
    name = "campaign:1"
    async with transaction(conn):
        assert await store.acquire_lease(conn, name, "a", now_s=1000.0, ttl_s=10.0)
    async with transaction(conn):
        assert not await store.acquire_lease(conn, name, "b", now_s=1005.0, ttl_s=10.0)
    async with transaction(conn):
        assert await store.acquire_lease(conn, name, "a", now_s=1005.0, ttl_s=10.0)
    assert await store.renew_lease(conn, name, "a", now_s=1010.0, ttl_s=10.0)
    async with transaction(conn):
        assert not await store.acquire_lease(conn, name, "b", now_s=1019.0, ttl_s=10.0)
    async with transaction(conn):
        assert await store.acquire_lease(conn, name, "b", now_s=1020.0, ttl_s=10.0)
    assert not await store.renew_lease(conn, name, "a", now_s=1021.0, ttl_s=10.0)
    assert not await store.holds_lease(conn, name, "a")
    assert await store.holds_lease(conn, name, "b")
    await store.release_lease(conn, name, "a")  # not the holder: no effect
    assert await store.lease_of(conn, name) == ("b", 1030.0)
    await store.release_lease(conn, name, "b")
    assert await store.lease_of(conn, name) is None


async def test_two_connections_racing_for_a_free_lease_get_one_winner(world: World) -> None:
    async with open_db(world.db) as one, open_db(world.db) as two:
        results = []
        for conn, holder in ((one, "one"), (two, "two")):
            async with transaction(conn):
                results.append(await store.acquire_lease(conn, "campaign:9", holder,
                                                         now_s=50.0, ttl_s=30.0))
    assert results == [True, False]


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "action", "expected"), [
    ("draft", "send", "sending"), ("scheduled", "send", "sending"),
    ("paused", "send", "sending"), ("sending", "send", "sending"),
    ("scheduled", "pause", "paused"), ("sending", "pause", "paused"),
    ("paused", "resume", "scheduled"),
    ("draft", "cancel", "cancelled"), ("sending", "cancel", "cancelled"),
    ("paused", "cancel", "cancelled"),
])
def test_operator_actions_lead_to_their_status(status: str, action: str, expected: str) -> None:
    assert next_status(campaign_with(status), action) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "action"), [
    ("sent", "send"), ("cancelled", "send"), ("draft", "pause"), ("sent", "pause"),
    ("scheduled", "resume"), ("sending", "resume"), ("sent", "cancel"),
    ("cancelled", "cancel"),
])
def test_actions_that_do_not_apply_are_refused_in_one_line(status: str, action: str) -> None:
    with pytest.raises(CampaignRefused) as excinfo:
        next_status(campaign_with(status), action)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "\n" not in message and f"campaign 7 is {status}" in message


def test_schedule_times_without_a_zone_are_utc_and_others_are_converted() -> None:
    assert parse_schedule("2030-01-02T09:30") == "2030-01-02T09:30:00.000000+00:00"
    assert parse_schedule("2030-01-02T09:30+02:00") == "2030-01-02T07:30:00.000000+00:00"
    with pytest.raises(CampaignInvalid, match="ISO 8601"):
        parse_schedule("next tuesday")


def test_failure_threshold_waits_for_the_minimum_sample() -> None:
    assert not failure_threshold_passed(Counts(sent=0, failed=9), threshold=0.2, min_sample=10)
    assert failure_threshold_passed(Counts(sent=7, failed=3), threshold=0.2, min_sample=10)
    assert not failure_threshold_passed(Counts(sent=8, failed=2), threshold=0.2, min_sample=10)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, base_s=1.0, max_s=5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
