"""Reputation we can see: complaint rates from real ARF reports read from Dovecot by the real
inbox pass, the daemon's pause decision on them, hard bounces, opt-outs waiting in review; and
the thresholds (warn 0.1%, fail 0.3%) on plain numbers."""

from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailer.campaigns import service
from mailer.campaigns.messages import send_config
from mailer.campaigns.sender import send_campaign
from mailer.doctor.reputation import (
    judge_bounces,
    judge_complaints,
    judge_opt_outs,
    pause_campaigns,
    pause_decision,
    reputation_checks,
    reputation_pause_check,
)
from mailer.store import reputation as store
from mailer.store.db import open_db, transaction
from mailer.store.inbox import NewReview, add_reviews
from mailer.store.reputation import CampaignBounces, ComplaintWindow
from tests.fixtures.reports import load
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, Received, SmtpSink

SECRET = "reputation-test-secret"
BOUNCE_ADDRESS = "bounces@imperial.test"


def customers_csv(count: int) -> str:
    rows = [f"Customer {i},c{i}@example.com,,yes,yes" for i in range(count)]
    return "\n".join(["name,email,company,announcements,offers", *rows]) + "\n"


def complaint(received: Received, number: int) -> bytes:
    """Yahoo's ARF report (RFC 5965) about a message the sink received, to its VERP address."""
    [recipient] = received.rcpt_tos
    message = email.message_from_bytes(received.content, policy=email.policy.default)
    raw = load("yahoo-arf", verp=received.mail_from, recipient=recipient,
               message_id=str(message["Message-ID"]))
    return raw.replace(b"Message-ID: <", f"Message-ID: <arf{number}-".encode(), 1)


async def sent_campaign(tmp_path: Path, imap_server: ImapTestServer, sink: SmtpSink,
                        audience: int) -> World:
    world = await make_world(
        tmp_path, imap_server, sink, customers_csv(audience),
        bounces={"address": BOUNCE_ADDRESS},
        campaigns={"secret": SECRET, "unsubscribe_url": "https://imperial.test/unsubscribe"})
    async with open_db(world.db_path) as conn:
        created = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="An offer")
        outcome = await send_campaign(conn, send_config(world.settings), created.id,
                                      stop=asyncio.Event())
    assert outcome.counts.sent == audience
    return world


async def test_complaints_read_from_the_inbox_set_the_rates_and_the_pause(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world = await sent_campaign(tmp_path, imap_server, smtp_sink, audience=40)
    world.deliver(complaint(smtp_sink.messages[0], 1), complaint(smtp_sink.messages[1], 2))
    assert (await world.process()).complaints == 2
    now = datetime.now(UTC)

    async with open_db(world.db_path) as conn:
        decision = await reputation_pause_check(conn, now=now, min_sample=20)
        too_few = await reputation_pause_check(conn, now=now, min_sample=100)
    checks = await reputation_checks(world.db_path, "imperial.test", now=now)

    assert (decision.pause, decision.window.sent, decision.window.complaints) == (True, 40, 2)
    assert decision.reason == ("sender-wide complaint rate 5.00% over the last day "
                               "(2 complaints / 40 sent): providers refuse mail at 0.30%")
    assert (too_few.pause, too_few.warning) == (False, False)
    by_name = {c.name: c for c in checks}
    assert [by_name[f"Complaints {d}d"].result for d in (1, 7, 30)] == ["fail"] * 3
    assert by_name["Complaints 1d"].found == (
        "2 complaints / 40 sent = 5.00% (providers refuse mail at 0.30%)")
    assert by_name["Hard bounces"].result == "pass"
    assert by_name["Gmail Postmaster Tools"].result == "info"


async def test_a_pause_decision_pauses_every_campaign_in_progress_saying_why(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world = await sent_campaign(tmp_path, imap_server, smtp_sink, audience=20)
    world.deliver(complaint(smtp_sink.messages[0], 1))
    await world.process()
    async with open_db(world.db_path) as conn:
        later = await service.create_campaign(conn, world.settings.templates.dir, kind="offers",
                                              template="welcome-offer", subject="Later")
        await service.schedule(conn, later.id, "2099-01-01T09:00:00")
        draft = await service.create_campaign(conn, world.settings.templates.dir,
                                              kind="offers", template="welcome-offer",
                                              subject="Draft")
        quiet = await reputation_pause_check(conn, now=datetime.now(UTC), min_sample=100)
        assert await pause_campaigns(conn, quiet) == []
        decision = await reputation_pause_check(conn, now=datetime.now(UTC), min_sample=10)
        paused = await pause_campaigns(conn, decision)
        shown = await service.get(conn, later.id)
        untouched = await service.get(conn, draft.id)

    assert paused == [later.id]
    assert (shown.status, shown.status_reason) == (
        "paused", "paused: sender-wide complaint rate 5.00% over the last day (1 complaint / "
                  "20 sent): providers refuse mail at 0.30%")
    assert untouched.status == "draft"


async def test_complaints_older_than_a_window_leave_it(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world = await sent_campaign(tmp_path, imap_server, smtp_sink, audience=10)
    world.deliver(complaint(smtp_sink.messages[0], 1))
    await world.process()
    later = datetime.now(UTC) + timedelta(days=2)

    async with open_db(world.db_path) as conn:
        day = await store.complaint_window(conn, (later - timedelta(days=1)).isoformat())
        week = await store.complaint_window(conn, (later - timedelta(days=7)).isoformat())

    assert (day.sent, day.complaints) == (0, 0)
    assert (week.sent, week.complaints) == (10, 1)


async def test_the_oldest_open_review_item_is_what_waits(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink)
    async with open_db(world.db_path) as conn:
        assert await store.oldest_open_review(conn) is None
        async with transaction(conn):
            await add_reviews(conn, [NewReview(message_key="k1", message_id="<r1@x>",
                                               sender="ann@example.com", subject="Unsubscribe",
                                               reason="no customer matches")])
        oldest = await store.oldest_open_review(conn)

    assert oldest is not None
    check = judge_opt_outs(oldest, datetime.fromisoformat(oldest) + timedelta(hours=50))
    assert (check.result, check.found) == (
        "fail", "the oldest request in review has waited 50 h (providers ask for 48 h at most)")


def window(sent: int, complaints: int) -> ComplaintWindow:
    return ComplaintWindow(since="2026-12-05T00:00:00+00:00", sent=sent, complaints=complaints)


def test_complaint_rates_pass_under_a_tenth_of_a_percent_warn_from_it_fail_from_three() -> None:
    results = [judge_complaints(7, window(10_000, n)).result for n in (9, 10, 29, 30)]

    assert results == ["pass", "warn", "warn", "fail"]
    assert judge_complaints(1, window(0, 0)).found == "no mail sent in the last day"


def test_the_pause_needs_the_sample_and_the_rate() -> None:
    assert pause_decision(window(1000, 3), min_sample=100).pause is True
    assert pause_decision(window(1000, 2), min_sample=100).pause is False
    assert pause_decision(window(1000, 1), min_sample=100).warning is True
    assert pause_decision(window(50, 10), min_sample=100).pause is False


def test_the_worst_of_the_recent_campaigns_decides_hard_bounces() -> None:
    check = judge_bounces([CampaignBounces(7, 1000, 10), CampaignBounces(6, 200, 12)])

    assert (check.result, check.found) == (
        "fail", "worst of the last 2 campaigns: campaign 6, 12 / 200 = 6.00%")
    assert judge_bounces([CampaignBounces(7, 1000, 25)]).result == "warn"
    assert judge_bounces([]).found == "no campaign sent yet"


def test_opt_outs_waiting_a_day_warn() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)

    assert judge_opt_outs((now - timedelta(hours=2)).isoformat(), now).result == "pass"
    assert judge_opt_outs((now - timedelta(hours=30)).isoformat(), now).result == "warn"
    assert judge_opt_outs(None, now).found == "no request waits in review"
