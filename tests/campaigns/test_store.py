"""Campaign SQL, the ledger writer and the consent gate: audience, claims, results, consent."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailer.consent import change
from mailer.store import campaigns as store
from mailer.store.campaigns import Campaign, Counts, RecipientResult
from mailer.store.consent import REUSE_S, ConsentGate
from mailer.store.db import MIGRATIONS, Connection, open_db, transaction
from mailer.store.ledger import find_message, record_results
from mailer.store.migrations import POSTGRESQL_BASELINE, POSTGRESQL_MIGRATIONS
from tests import dbrows
from tests.campaigns.world import World
from tests.postgres import PostgresServer
from tests.servers import SmtpSink


@pytest.fixture
def world(tmp_path: Path, database: Path | str) -> Iterator[World]:
    # The store needs no SMTP; a sink that is never started just lends its port.
    yield World.build(tmp_path, SmtpSink(), database)


@pytest.fixture
async def conn(world: World) -> AsyncIterator[Connection]:
    async with open_db(world.db) as connection:
        yield connection


async def started(conn: Connection, campaign_id: int) -> Campaign:
    campaign = await store.get_campaign(conn, campaign_id)
    assert campaign is not None
    async with transaction(conn):
        await store.snapshot_audience(conn, campaign)
        await store.mark_started(conn, campaign_id)
    campaign = await store.get_campaign(conn, campaign_id)
    assert campaign is not None
    return campaign


async def sending_to(world: World, conn: Connection, customers: int) -> tuple[Campaign, list[int]]:
    """An offers campaign started to `customers` new customers; their ids in order."""
    await world.add_customers(customers)
    campaign = await started(conn, await world.create_campaign())
    return campaign, [int(r[0]) for r in world.rows("SELECT id FROM customers ORDER BY id")]


# --- the audience ---------------------------------------------------------------------------


async def test_audience_is_the_customers_opted_in_to_the_kind_taken_once(
    world: World, conn: Connection
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
    world: World, conn: Connection
) -> None:
    await world.add_customers(6)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    claimed = await store.claim_batch(conn, campaign_id, 4, "a")
    await record_results(conn, campaign_id, [
        RecipientResult(claimed[0], "sent", 1, "250 OK"),
        RecipientResult(claimed[1], "failed", 1, "550 no"),
        RecipientResult(claimed[2], "skipped", 0, "opted out"),
    ])
    assert await store.counts(conn, campaign_id) == Counts(
        audience=6, sent=1, failed=1, skipped=1, pending=3)


# --- claims and results ---------------------------------------------------------------------


async def test_claims_take_the_lowest_pending_ids_and_never_the_same_row_twice(
    world: World, conn: Connection
) -> None:
    await world.add_customers(7)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    first = await store.claim_batch(conn, campaign_id, 3, "a")
    second = await store.claim_batch(conn, campaign_id, 3, "a")
    third = await store.claim_batch(conn, campaign_id, 3, "a")
    assert first == sorted(first) and max(first) < min(second)
    assert len(first) == 3 and len(second) == 3 and len(third) == 1
    assert await store.claim_batch(conn, campaign_id, 3, "a") == []
    assert set(world.ledger(campaign_id).values()) == {"sending"}


async def test_results_settle_only_claimed_rows_and_keep_the_reply(
    world: World, conn: Connection
) -> None:
    await world.add_customers(3)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    claimed = await store.claim_batch(conn, campaign_id, 2, "a")
    pending = [r[0] for r in world.rows(
        "SELECT customer_id FROM campaign_recipients WHERE status = 'pending'")]
    await record_results(conn, campaign_id, [
        RecipientResult(claimed[0], "failed", 2, "SMTP to <x>: 550 5.1.1 unknown user"),
        RecipientResult(pending[0], "sent", 1, "250 OK"),  # never claimed: ignored
    ])
    rows = dict((r[0], r[1:]) for r in world.rows(
        "SELECT customer_id, status, attempts, last_reply FROM campaign_recipients"))
    assert rows[claimed[0]] == ("failed", 2, "SMTP to <x>: 550 5.1.1 unknown user")
    assert rows[pending[0]] == ("pending", 0, "")


async def test_a_settled_row_keeps_its_message_id_so_it_can_be_traced_back(
    world: World, conn: Connection
) -> None:
    await world.add_customers(2)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    first, second = await store.claim_batch(conn, campaign_id, 2, "a")
    await record_results(conn, campaign_id, [
        RecipientResult(first, "pending", 1, "451 later", "<abc@imperial.test>")])
    assert await store.claim_batch(conn, campaign_id, 1, "a") == [first]
    await record_results(conn, campaign_id, [
        RecipientResult(first, "sent", 1, "250 OK"),  # no id given: the recorded one stays
        RecipientResult(second, "sent", 1, "250 OK", "<def@imperial.test>"),
    ])
    assert await find_message(conn, "<abc@imperial.test>") == (campaign_id, first)
    assert await find_message(conn, "<def@imperial.test>") == (campaign_id, second)
    assert await find_message(conn, "<c1.r1@imperial.test>") is None
    assert await find_message(conn, "") is None


async def test_a_senders_rows_go_back_to_pending_and_only_its_own(
    world: World, conn: Connection
) -> None:
    await world.add_customers(6)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    await store.claim_batch(conn, campaign_id, 2, "a")
    await store.claim_batch(conn, campaign_id, 2, "b")
    await store.claim_batch(conn, campaign_id, 2, "c")
    assert await store.claimants(conn, campaign_id) == ["a", "b", "c"]
    assert await store.requeue_own(conn, campaign_id, "a") == 2
    assert await store.requeue_claims_of(conn, campaign_id, "b") == 2
    by_status = world.rows("SELECT status, claimed_by, requeued, count(*) FROM "
                           "campaign_recipients GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    # A clean stop keeps the rows' place; a dead sender's rows are marked requeued.
    assert by_status == [("pending", "", 0, 2), ("pending", "", 1, 2), ("sending", "c", 0, 2)]
    assert await store.claimants(conn, campaign_id) == ["c"]


async def test_rows_requeued_after_a_dead_sender_are_claimed_after_the_fresh_ones(
    world: World, conn: Connection
) -> None:
    await world.add_customers(8)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    in_flight = await store.claim_batch(conn, campaign_id, 2, "killed")
    await store.requeue_claims_of(conn, campaign_id, "killed")
    fresh = sorted(r[0] for r in world.rows(
        "SELECT customer_id FROM campaign_recipients WHERE requeued = 0"))
    assert await store.claim_batch(conn, campaign_id, 4, "next") == fresh[:4]
    # A batch that reaches them takes the fresh rows first, then the requeued ones.
    assert await store.claim_batch(conn, campaign_id, 4, "next") == fresh[4:] + in_flight


async def test_results_of_rows_taken_back_from_a_sender_are_not_recorded_as_its(
    world: World, conn: Connection
) -> None:
    await world.add_customers(1)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    [row] = await store.claim_batch(conn, campaign_id, 1, "slow")
    await store.requeue_claims_of(conn, campaign_id, "slow")
    assert await store.claim_batch(conn, campaign_id, 1, "other") == [row]
    await record_results(conn, campaign_id, [RecipientResult(row, "failed", 1, "550")],
                         claimed_by="slow")
    assert world.rows("SELECT status, claimed_by FROM campaign_recipients") == [
        ("sending", "other")]
    await record_results(conn, campaign_id, [RecipientResult(row, "sent", 1, "250")],
                         claimed_by="other")
    assert world.rows("SELECT status FROM campaign_recipients") == [("sent",)]


async def test_progress_counters_follow_claims_results_and_requeues(
    world: World, conn: Connection
) -> None:
    await world.add_customers(5)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    claimed = await store.claim_batch(conn, campaign_id, 3, "a")
    await record_results(conn, campaign_id, [RecipientResult(claimed[0], "sent", 1, "250"),
                                             RecipientResult(claimed[1], "pending", 1, "451")])
    assert await store.requeue_claims_of(conn, campaign_id, "a") == 1
    progress = dict(world.rows("SELECT status, n FROM campaign_progress WHERE campaign_id = ? "
                               "AND n != 0", (campaign_id,)))
    assert progress == {"pending": 4, "sent": 1}


async def test_an_opt_out_skips_pending_rows_but_leaves_claimed_ones_to_the_consent_check(
    world: World, conn: Connection
) -> None:
    await world.add_customers(2)
    campaign_id = await world.create_campaign()
    await started(conn, campaign_id)
    [claimed] = await store.claim_batch(conn, campaign_id, 1, "a")
    ids = [r[0] for r in world.rows("SELECT id FROM customers ORDER BY id")]
    async with transaction(conn):
        await change.opt_out(conn, [change.Refusal(tuple(ids), reference="<m@x>",
                                                   thread=change.Thread(message_id="<m@x>"))],
                             ["offers"], source="email")
    ledger = dict(world.rows("SELECT customer_id, status FROM campaign_recipients"))
    assert ledger[claimed] == "sending"
    assert [v for k, v in ledger.items() if k != claimed] == ["skipped"]
    campaign = await store.get_campaign(conn, campaign_id)
    assert campaign is not None
    async with ConsentGate(world.db, campaign.id, campaign.kind) as gate:
        verdict = await gate.check(claimed)
    assert verdict.recipient is None and "opted out" in verdict.skip_reason


async def test_consent_gate_sees_a_commit_made_a_moment_earlier_on_another_connection(
    world: World, conn: Connection
) -> None:
    campaign, [customer_id] = await sending_to(world, conn, 1)
    campaign_id = campaign.id
    async with ConsentGate(world.db, campaign.id, campaign.kind) as gate:
        first = await gate.check(customer_id)
        assert first.recipient is not None and first.recipient.email == "c0@example.com"
        dbrows.execute(world.db, "UPDATE customers SET offers = 0 WHERE id = ?", (customer_id,))
        assert (await gate.check(customer_id)).recipient is None
        dbrows.execute(world.db, "UPDATE campaigns SET status = 'paused' WHERE id = ?",
                       (campaign_id,))
        assert (await gate.check(customer_id)).stop_reason == "campaign is now paused"


# --- why a campaign is paused -----------------------------------------------------------------


async def test_paused_by_is_set_with_a_pause_and_cleared_by_any_other_status(
    conn: Connection,
) -> None:
    campaign_id = await store.insert_campaign(conn, kind="offers", template="t", subject="s",
                                              scheduled_at=None)
    assert await store.set_status(conn, campaign_id, "paused", reason="paused: x",
                                  expected=("draft",), paused_by="smtp-unavailable")
    paused = await store.get_campaign(conn, campaign_id)
    assert paused is not None and paused.paused_by == "smtp-unavailable"
    assert await store.set_status(conn, campaign_id, "scheduled", reason="",
                                  expected=("paused",), paused_by="operator")
    scheduled = await store.get_campaign(conn, campaign_id)
    assert scheduled is not None and scheduled.paused_by == ""


async def test_campaigns_paused_before_the_cause_was_recorded_get_it_from_their_reason(
    tmp_path: Path,
) -> None:
    # A database as the release before this one left it (migrations 1 to 8), with a campaign
    # of each kind of pause: the daemon must still resume the one the SMTP outage paused.
    db = tmp_path / "old.db"
    reasons = {
        "paused by operator": "operator",
        "paused: interrupted": "interrupted",
        "paused: cannot send: [campaigns] secret: missing": "settings",
        "paused: SMTP server unavailable: SMTP 127.0.0.1:25: connection refused":
            "smtp-unavailable",
        "paused: SMTP server refused us: 554 no": "smtp-refused",
        "paused: 60 of 100 attempted recipients failed (60%, above the failure threshold of "
        "20%)": "failures",
        "paused: hard-bounce rate 6.0% above [bounces] pause_bounce_rate 5.0%": "reports",
    }
    with sqlite3.connect(db) as old:
        for number, script in enumerate(MIGRATIONS[:8], start=1):
            old.executescript(script)
            old.execute(f"PRAGMA user_version = {number}")
        for reason in reasons:
            old.execute("INSERT INTO campaigns (kind, template, subject, status, created_at, "
                        "status_reason) VALUES ('offers', 't', 's', 'paused', '2026', ?)",
                        (reason,))
        old.execute("INSERT INTO campaigns (kind, template, subject, status, created_at, "
                    "status_reason) VALUES ('offers', 't', 's', 'sent', '2026', '')")
    async with open_db(db) as conn:  # the upgrade: the remaining migrations run
        found = {c.status_reason: c.paused_by for c in await store.list_campaigns(conn)}
    assert found == {**reasons, "": ""}


async def test_rows_a_sender_of_the_old_single_lease_left_in_flight_go_back_after_upgrade(
    tmp_path: Path,
) -> None:
    # Migration 15: 'sending' rows from before it name no sender; the next sender requeues
    # them (there is no lease of theirs to wait for) and sends them after the fresh ones.
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as old:
        for number, script in enumerate(MIGRATIONS[:14], start=1):
            old.executescript(script)
            old.execute(f"PRAGMA user_version = {number}")
        old.execute("INSERT INTO customers (email, name, created_at, updated_at) "
                    "VALUES ('a@x.test', 'A', '2026', '2026'), ('b@x.test', 'B', '2026', '2026')")
        old.execute("INSERT INTO campaigns (kind, template, subject, status, created_at) "
                    "VALUES ('offers', 't', 's', 'sending', '2026')")
        old.execute("INSERT INTO campaign_recipients (campaign_id, customer_id, status) "
                    "VALUES (1, 1, 'sending'), (1, 2, 'pending')")
    async with open_db(db) as conn:
        assert await store.claimants(conn, 1) == [""]
        assert await store.requeue_claims_of(conn, 1, "") == 1
        assert await store.claim_batch(conn, 1, 2, "new") == [2, 1]


async def test_claims_on_postgresql_skip_rows_another_claim_has_locked_without_waiting(
    tmp_path: Path, postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    try:
        world = World.build(tmp_path, SmtpSink(), url)
        await world.add_customers(6)
        campaign_id = await world.create_campaign()
        async with open_db(url) as one, open_db(url) as two:
            await started(one, campaign_id)
            async with transaction(one, "claim", exclusive=False):
                # What a claim on another host holds while its statement runs: row locks on
                # the rows it picked. A plain FOR UPDATE would wait here until `one` ends.
                locked = [r[0] for r in await one.execute_fetchall(
                    "SELECT customer_id FROM campaign_recipients WHERE campaign_id = ? "
                    "ORDER BY customer_id LIMIT 3 FOR UPDATE", (campaign_id,))]
                async with asyncio.timeout(10), transaction(two, "claim", exclusive=False):
                    second = await store.claim_batch(two, campaign_id, 6, "two")
        assert len(locked) == 3 and len(second) == 3 and not set(locked) & set(second)
        assert claimed_by(world) == [("two", 3)]
    finally:
        postgres_server.drop_database(url.rsplit("/", 1)[1])


async def test_consent_gate_decisions_are_never_older_than_reuse_s_when_they_answer(
    world: World, conn: Connection
) -> None:
    # The sender queues a, b and c. On PostgreSQL the query for a also reads b and c ahead;
    # such a read answers b's check while it is at most REUSE_S old, and c's check, later,
    # reads again and sees c's opt-out. On SQLite every check reads (microseconds).
    campaign, (a, b, c) = await sending_to(world, conn, 3)
    now = [100.0]
    async with ConsentGate(world.db, campaign.id, campaign.kind,
                           monotonic=lambda: now[0]) as gate:
        gate.expect([a, b, c])
        first = await gate.check(a)
        assert first.recipient is not None and first.read_at == 100.0
        dbrows.execute(world.db, "UPDATE customers SET offers = 0 WHERE id IN (?, ?)", (b, c))
        now[0] += REUSE_S / 2
        second = await gate.check(b)
        if isinstance(world.db, str):
            assert second.recipient is not None and second.read_at == 100.0
        else:
            assert second.recipient is None and second.read_at == now[0]
        now[0] += REUSE_S
        third = await gate.check(c)
        assert third.recipient is None and "opted out" in third.skip_reason
        assert third.read_at == now[0]


def claimed_by(world: World) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1])) for r in world.rows(
        "SELECT claimed_by, count(*) FROM campaign_recipients WHERE status = 'sending' "
        "GROUP BY claimed_by")]


def test_every_migration_after_the_postgresql_baseline_has_its_postgresql_script() -> None:
    assert sorted(POSTGRESQL_MIGRATIONS) == list(
        range(POSTGRESQL_BASELINE + 1, len(MIGRATIONS) + 1))


async def test_consent_gate_reads_asked_together_each_get_their_own_customer(
    world: World, conn: Connection
) -> None:
    # Many checks at once (one per SMTP connection, and more): on PostgreSQL they share a
    # query; each must still get its own customer's row and consent.
    await world.add_customers(12, offers_every=3)
    campaign_id = await world.create_campaign(kind="announcements")
    campaign = await started(conn, campaign_id)
    ids = {str(r[1]): int(r[0]) for r in world.rows("SELECT id, email FROM customers")}
    dbrows.execute(world.db, "UPDATE customers SET announcements = 0 WHERE email = ?",
                   ("c4@example.com",))
    async with ConsentGate(world.db, campaign.id, campaign.kind) as gate:
        verdicts = await asyncio.gather(*(gate.check(i) for i in ids.values()),
                                        gate.check(10**9))
    by_email = dict(zip(ids, verdicts, strict=False))
    for email, verdict in by_email.items():
        if email == "c4@example.com":
            assert verdict.recipient is None and "opted out" in verdict.skip_reason
        else:
            assert verdict.recipient is not None and verdict.recipient.email == email
    assert verdicts[-1].skip_reason == "customer no longer exists"
