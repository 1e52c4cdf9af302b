"""Deliverability against a real SQLite file: what a report does, once, and only when it is ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.bounces import deliverability
from mailer.bounces.reports import Report, read_report
from mailer.categories import CATEGORIES
from mailer.importer import CustomerRow
from mailer.mail import verp
from mailer.mail.verp import Tag
from mailer.settings import BouncesSettings
from mailer.store import campaigns as campaign_store
from mailer.store import customers as customer_store
from mailer.store import deliverability as store
from mailer.store import imports
from mailer.store import outbox as outbox_store
from mailer.store.db import open_db, transaction
from mailer.store.deliverability import ReportCounts
from mailer.store.engine import Connection
from tests import dbrows
from tests.fixtures.reports import CORPUS, load

BOUNCES = BouncesSettings(address="bounces@imperialtelecom.co.uk")
SECRET = "campaign-secret"
VERIFIER = verp.Verifier(BOUNCES.address, SECRET)


class MovableClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def time(self) -> float:
        return self.at.timestamp()

    def monotonic(self) -> float:
        return self.at.timestamp()

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@dataclass
class World:
    conn: Connection
    path: Path | str
    ids: dict[str, int]  # customer ids by name
    campaigns: list[int]
    clock: MovableClock

    def message_id(self, campaign_id: int, customer: str) -> str:
        return f"<r{campaign_id}x{self.ids[customer]}.k9f2@imperialtelecom.co.uk>"

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        return dbrows.rows(self.path, sql)

    async def apply(self, report: Report) -> deliverability.Applied:
        return await deliverability.apply_report(self.conn, report, BOUNCES, clock=self.clock)


async def _rows(rows: list[CustomerRow]) -> AsyncIterator[CustomerRow]:
    for row in rows:
        yield row


@pytest.fixture
async def world(database: Path | str) -> AsyncIterator[World]:
    path = database
    async with open_db(path) as conn:
        people = ("ada", "bob", "cat")
        await imports.import_customers(conn, _rows([
            CustomerRow(line=i + 2, email=f"{name}@example.com", name=name.title(), company="",
                        phone="", name_key=name, company_key="", announcements=True,
                        offers=True)
            for i, name in enumerate(people)]), reference="test.csv")
        ids = {name: (await customer_store.get_by_email(conn, f"{name}@example.com")).id
               for name in people}
        world = World(conn, path, ids, [], MovableClock())
        # Four campaigns sent to ada and bob (cat is in none): the ledger says 'sent' and
        # records each message's Message-ID.
        for number in range(4):
            campaign_id = await campaign_store.insert_campaign(
                conn, kind="offers", template="t", subject=f"Offer {number}", scheduled_at=None)
            world.campaigns.append(campaign_id)
            async with transaction(conn):
                await conn.execute(
                    "INSERT INTO campaign_recipients (campaign_id, customer_id, status, "
                    "message_id) VALUES (?, ?, 'sent', ?), (?, ?, 'sent', ?)",
                    (campaign_id, ids["ada"], world.message_id(campaign_id, "ada"),
                     campaign_id, ids["bob"], world.message_id(campaign_id, "bob")))
        yield world


def bounce(kind: str = "hard", *, tag: Tag | None = None, ids: tuple[str, ...] = (),
           key: str = "mid:<r1@mx.example.net>", status: str = "5.1.1") -> Report:
    return Report(kind=kind, format="dsn", key=key, recipients=("someone@example.com",),
                  tag=tag, original_message_ids=ids, status=status,
                  diagnostic="550 5.1.1 user unknown")


async def test_hard_bounce_tied_by_verp_makes_the_address_undeliverable_at_once_consent_untouched(
    world: World,
) -> None:
    ada, campaign = world.ids["ada"], world.campaigns[0]
    applied = await world.apply(bounce(tag=Tag.campaign(campaign, ada)))
    assert (applied.outcome, applied.customer_id, applied.tied) == ("undeliverable", ada, True)
    assert await store.undeliverable_ids(world.conn, world.ids.values()) == {ada}
    reason = await store.undeliverable_reason(world.conn, ada)
    assert reason is not None and "5.1.1" in reason and "user unknown" in reason
    [event] = await store.delivery_history(world.conn, ada)
    assert (event.event, event.source, event.report_id) == ("undeliverable", "bounce",
                                                            applied.report_id)
    customer = (await customer_store.get_many(world.conn, [ada]))[0]
    assert customer.preferences == {c: True for c in CATEGORIES}


async def test_a_report_processed_twice_counts_once(world: World) -> None:
    report = bounce(tag=Tag.campaign(world.campaigns[0], world.ids["ada"]))
    first = await world.apply(report)
    second = await world.apply(report)
    assert second.duplicate and not first.duplicate
    assert second.report_id == first.report_id and second.outcome == "undeliverable"
    assert world.rows("SELECT count(*) FROM delivery_reports") == [(1,)]
    assert world.rows("SELECT count(*) FROM delivery_events") == [(1,)]


async def test_hard_bounce_tied_only_by_the_quoted_message_id_acts(world: World) -> None:
    campaign = world.campaigns[1]
    applied = await world.apply(bounce(ids=("<unrelated@x>", world.message_id(campaign, "bob"))))
    assert (applied.outcome, applied.customer_id) == ("undeliverable", world.ids["bob"])
    [stored] = await store.recent_reports(world.conn, "2026-01-01")
    assert (stored.tied_by, stored.campaign_id) == ("message-id", campaign)


@pytest.mark.parametrize("kind", ["hard", "soft", "complaint"])
async def test_untied_report_changes_nobody_and_is_recorded_as_ignored(
    world: World, kind: str
) -> None:
    applied = await world.apply(bounce(kind, ids=("<guessed@imperialtelecom.co.uk>",)))
    assert (applied.outcome, applied.customer_id, applied.tied) == ("ignored", None, False)
    assert await store.undeliverable_ids(world.conn, world.ids.values()) == set()
    assert world.rows("SELECT count(*) FROM consent_events WHERE source = 'complaint'") == [(0,)]
    [stored] = await store.recent_reports(world.conn, "2026-01-01")
    assert stored.reason == "not tied to a message we sent"


async def test_a_genuine_tag_for_a_message_never_sent_changes_nobody(world: World) -> None:
    # cat is in no campaign's ledger: a tag for her (made with the real secret) ties nothing.
    applied = await world.apply(bounce(tag=Tag.campaign(world.campaigns[0], world.ids["cat"])))
    assert applied.outcome == "ignored"
    assert await store.undeliverable_ids(world.conn, [world.ids["cat"]]) == set()


async def test_soft_bounces_from_three_different_messages_in_the_window_make_it_undeliverable(
    world: World,
) -> None:
    ada = world.ids["ada"]
    outcomes = []
    for number, campaign in enumerate(world.campaigns[:3]):
        applied = await world.apply(bounce("soft", tag=Tag.campaign(campaign, ada),
                                           key=f"mid:<s{number}@mx>", status="4.2.2"))
        outcomes.append(applied.outcome)
        world.clock.advance(days=5)
    assert outcomes == ["soft-counted", "soft-counted", "undeliverable"]
    [event] = await store.delivery_history(world.conn, ada)
    assert event.source == "soft bounces"
    assert event.reason.startswith("3 soft bounces within 30 days")


async def test_soft_bounces_of_the_same_message_count_once(world: World) -> None:
    ada, campaign = world.ids["ada"], world.campaigns[0]
    for number in range(5):
        applied = await world.apply(bounce("soft", tag=Tag.campaign(campaign, ada),
                                           key=f"mid:<delay{number}@mx>", status="4.4.7"))
        assert applied.outcome == "soft-counted"
    assert await store.undeliverable_ids(world.conn, [ada]) == set()


async def test_soft_bounces_older_than_the_window_do_not_count(world: World) -> None:
    ada = world.ids["ada"]
    for number, campaign in enumerate(world.campaigns[:3]):
        applied = await world.apply(bounce("soft", tag=Tag.campaign(campaign, ada),
                                           key=f"mid:<old{number}@mx>", status="4.2.2"))
        world.clock.advance(days=16)
    assert applied.outcome == "soft-counted"  # the first is 32 days old by the third


async def test_reactivate_records_who_and_earlier_soft_bounces_do_not_count_again(
    world: World,
) -> None:
    ada = world.ids["ada"]
    for number, campaign in enumerate(world.campaigns[:3]):
        await world.apply(bounce("soft", tag=Tag.campaign(campaign, ada),
                                 key=f"mid:<a{number}@mx>", status="4.2.2"))
        world.clock.advance(hours=1)
    assert await store.undeliverable_ids(world.conn, [ada]) == {ada}
    assert await deliverability.reactivate(world.conn, ada, actor="j.smith", clock=world.clock)
    assert not await deliverability.reactivate(world.conn, ada, actor="j.smith",
                                               clock=world.clock)
    assert await store.undeliverable_ids(world.conn, [ada]) == set()
    events = await store.delivery_history(world.conn, ada)
    assert [(e.event, e.actor) for e in events] == [("undeliverable", ""),
                                                    ("reactivated", "j.smith")]
    world.clock.advance(hours=1)
    applied = await world.apply(bounce("soft", tag=Tag.campaign(world.campaigns[3], ada),
                                       key="mid:<after@mx>", status="4.2.2"))
    assert applied.outcome == "soft-counted"


async def test_complaint_opts_out_of_every_category_with_source_complaint_and_no_confirmation(
    world: World,
) -> None:
    bob = world.ids["bob"]
    applied = await world.apply(bounce("complaint", tag=Tag.campaign(world.campaigns[2], bob),
                                       key="mid:<arf1@fbl>", status=""))
    assert (applied.outcome, applied.customer_id) == ("opted-out", bob)
    customer = (await customer_store.get_many(world.conn, [bob]))[0]
    assert customer.preferences == {c: False for c in CATEGORIES}
    history = await customer_store.history(world.conn, bob)
    assert {(e.category, e.source, e.reference) for e in history if e.source == "complaint"} == {
        (c, "complaint", "mid:<arf1@fbl>") for c in CATEGORIES}
    assert world.rows("SELECT count(*) FROM outbox") == [(0,)]
    assert await store.undeliverable_ids(world.conn, [bob]) == set()


async def test_bounce_and_complaint_for_a_confirmation_count_the_same_way(world: World) -> None:
    cat = world.ids["cat"]
    async with transaction(world.conn):
        await outbox_store.enqueue_confirmations(world.conn, [outbox_store.NewConfirmation(
            customer_id=cat, to_address="cat@example.com", to_name="Cat", categories=("offers",),
            request_subject="Unsubscribe", in_reply_to="", refs=())], interval_h=24,
            now=datetime.now(UTC))
    [(outbox_id,)] = world.rows("SELECT id FROM outbox")
    async with transaction(world.conn):
        await world.conn.execute(
            "UPDATE outbox SET status = 'sent', message_id = '<n1.zz@imperialtelecom.co.uk>'")
    by_tag = await world.apply(bounce(tag=Tag.confirmation(int(outbox_id))))
    assert (by_tag.outcome, by_tag.customer_id) == ("undeliverable", cat)
    by_id = await world.apply(bounce("complaint", ids=("<n1.zz@imperialtelecom.co.uk>",),
                                     key="mid:<arf2@fbl>"))
    assert (by_id.outcome, by_id.customer_id) == ("opted-out", cat)


async def test_real_fixture_reports_end_to_end_with_per_campaign_counts(world: World) -> None:
    campaign = world.campaigns[0]
    ada, bob = world.ids["ada"], world.ids["bob"]

    def report(name: str, customer: str) -> Report:
        address = verp.address(BOUNCES.address, Tag.campaign(campaign, world.ids[customer]),
                               SECRET)
        raw = load(name, verp=address, recipient=f"{customer}@example.com",
                   message_id=world.message_id(campaign, customer))
        parsed = read_report(raw, VERIFIER)
        assert parsed is not None
        return parsed

    assert (await world.apply(report("postfix-dsn-5.1.1", "ada"))).outcome == "undeliverable"
    assert (await world.apply(report("exim-plain", "ada"))).outcome == "undeliverable"
    assert (await world.apply(report("postfix-dsn-4.2.2-failed", "bob"))).outcome == \
        "soft-counted"
    assert (await world.apply(report("yahoo-arf", "bob"))).outcome == "opted-out"
    counts = await store.campaign_report_counts(world.conn, campaign)
    assert counts == ReportCounts(hard=1, soft=1, complaints=1)
    assert await store.undeliverable_ids(world.conn, [ada, bob]) == {ada}


async def test_recent_reports_lists_newest_first_from_a_date_with_outcome_and_reason(
    world: World,
) -> None:
    await world.apply(bounce(key="mid:<old@mx>", ids=("<nobody@x>",)))
    world.clock.advance(days=10)
    await world.apply(bounce(tag=Tag.campaign(world.campaigns[0], world.ids["ada"]),
                             key="mid:<new@mx>"))
    since = (world.clock.now() - timedelta(days=1)).isoformat()
    assert [r.report_key for r in await store.recent_reports(world.conn, since)] == [
        "mid:<new@mx>"]
    everything = await store.recent_reports(world.conn, "2026-01-01")
    assert [(r.report_key, r.outcome) for r in everything] == [
        ("mid:<new@mx>", "undeliverable"), ("mid:<old@mx>", "ignored")]


async def test_moved_flag_is_kept_per_report(world: World) -> None:
    applied = await world.apply(bounce(tag=Tag.campaign(world.campaigns[0], world.ids["ada"])))
    await store.mark_moved(world.conn, applied.report_id)
    stored = await store.report_by_key(world.conn, "mid:<r1@mx.example.net>")
    assert stored is not None and stored.moved


async def test_delivery_events_are_permanent(world: World) -> None:
    await world.apply(bounce(tag=Tag.campaign(world.campaigns[0], world.ids["ada"])))
    with pytest.raises(dbrows.INTEGRITY_ERRORS, match="permanent"):
        world.rows("DELETE FROM delivery_events")


# --- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "tied", "soft_messages", "outcome"), [
    ("hard", True, 0, "undeliverable"),
    ("soft", True, 1, "soft-counted"),
    ("soft", True, 2, "soft-counted"),
    ("soft", True, 3, "undeliverable"),
    ("complaint", True, 0, "opted-out"),
    ("hard", False, 0, "ignored"),
    ("soft", False, 9, "ignored"),
    ("complaint", False, 0, "ignored"),
])
def test_decide(kind: str, tied: bool, soft_messages: int, outcome: str) -> None:
    decision = deliverability.decide(kind, tied, soft_messages=soft_messages, soft_limit=3,
                                     soft_window_days=30)
    assert decision.outcome == outcome
    assert decision.opt_out == (outcome == "opted-out")
    assert decision.undeliverable == (outcome == "undeliverable")


@pytest.mark.parametrize(("counts", "sent", "expected"), [
    (ReportCounts(hard=10), 99, None),  # under the minimum sample
    (ReportCounts(hard=5), 100, None),  # 5% is not above 5%
    (ReportCounts(hard=6), 100, "hard-bounce rate 6.0% of 100 sent"),
    (ReportCounts(complaints=1), 1000, None),
    (ReportCounts(complaints=4), 1000, "complaint rate 0.40% of 1000 sent"),
])
def test_campaign_pauses_past_the_bounce_or_complaint_rate(
    counts: ReportCounts, sent: int, expected: str | None
) -> None:
    reason = deliverability.pause_reason(counts, sent, BOUNCES)
    assert reason == expected if expected is None else (reason or "").startswith(expected)


async def test_flufl_bounce_corpus_of_real_world_bounces_is_never_acted_on(world: World) -> None:
    applied = []
    for path in CORPUS:
        report = read_report(path.read_bytes(), VERIFIER)
        if report is not None:
            applied.append(await world.apply(report))
    assert len(applied) > 100
    assert {a.outcome for a in applied} == {"ignored"}
    assert await store.undeliverable_ids(world.conn, world.ids.values()) == set()
    assert world.rows("SELECT count(*) FROM consent_events WHERE source = 'complaint'") == [(0,)]
    assert world.rows("SELECT count(*) FROM delivery_events") == [(0,)]
