"""Sending a campaign into a real SMTP server on loopback: exactly once, consent at the moment
of sending, retries, failures, pauses, two senders and a kill -9."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.backoff import Backoff
from mailer.campaigns import service
from mailer.campaigns.sender import SendOutcome, send_campaign
from mailer.consent import change
from mailer.errors import CampaignInvalid, CampaignRefused
from mailer.mail import tokens
from mailer.mail.outgoing import message_id
from mailer.store.db import open_db, transaction
from tests import dbrows
from tests.campaigns.world import ROOT, SECRET, UNSUBSCRIBE_ADDRESS, UNSUBSCRIBE_URL, World
from tests.servers import SmtpSink, free_port
from tests.waiting import wait_for


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, smtp_sink, database)


async def send(world: World, campaign_id: int, *, stop: asyncio.Event | None = None,
               **config: object) -> SendOutcome:
    async with open_db(world.db) as conn:
        return await send_campaign(conn, world.config(**config), campaign_id,
                                   stop=stop or asyncio.Event())


def each_once(world: World, expected: set[str]) -> None:
    received = world.received()
    assert set(received) == expected
    assert set(received.values()) == {1}


# --- the ordinary send ----------------------------------------------------------------------


async def test_every_opted_in_customer_gets_exactly_one_message_and_no_one_else(
    world: World,
) -> None:
    await world.add_customers(40, offers_every=3)
    campaign_id = await world.create_campaign(kind="offers")
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    each_once(world, world.opted_in("offers"))
    assert outcome.counts.sent == 14 and outcome.counts.pending == 0
    assert set(world.ledger(campaign_id).values()) == {"sent"}
    [(finished_at,)] = world.rows("SELECT finished_at FROM campaigns")
    assert finished_at


async def test_every_message_carries_the_one_click_link_the_mailto_and_the_footer(
    world: World,
) -> None:
    await world.add_customers(5)
    campaign_id = await world.create_campaign(kind="offers")
    await send(world, campaign_id)
    ids = dict(world.rows("SELECT email, id FROM customers"))
    assert len(world.sink.messages) == 5
    for message in world.parsed():
        address = message["To"].addresses[0].addr_spec
        link = tokens.unsubscribe_link(
            UNSUBSCRIBE_URL, tokens.campaign_token(SECRET, ids[address], campaign_id))
        assert link.startswith("https://")
        unsubscribe = " ".join(str(message["List-Unsubscribe"]).split())
        assert f"<mailto:{UNSUBSCRIBE_ADDRESS}?subject=" in unsubscribe
        assert f"<{link}>" in unsubscribe
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert tokens.verify_campaign_token([SECRET], link.rpartition("/")[2]) == (
            ids[address], campaign_id)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None and html is not None
        assert "To stop receiving these emails" in text.get_content()
        assert link in text.get_content() and UNSUBSCRIBE_ADDRESS in text.get_content()
        assert link in html.get_content()
        assert message["Subject"] == f"An offer for Customer {address[1:].split('@')[0]}"


async def test_crlf_in_a_customer_name_cannot_add_headers_or_recipients(world: World) -> None:
    await world.add_customers(2)
    world.rows("UPDATE customers SET name = ? WHERE email = 'c0@example.com'",
               ("Eve\r\nBcc: victim@evil.test\r\nSubject: pwned",))
    world.rows("UPDATE customers SET name = ? WHERE email = 'c1@example.com'",
               ('Mallory" <mallory@evil.test>, "x',))
    campaign_id = await world.create_campaign(subject="Hi {{ customer.name }}")
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    assert sorted(a for m in world.sink.messages for a in m.rcpt_tos) == [
        "c0@example.com", "c1@example.com"]
    for message in world.parsed():
        assert "Bcc" not in message
        assert len(message.get_all("Subject") or []) == 1
        assert len(message["To"].addresses) == 1
        assert message["To"].addresses[0].addr_spec in {"c0@example.com", "c1@example.com"}
        assert "evil.test" not in message["To"].addresses[0].addr_spec


async def test_sending_without_secret_or_https_link_is_refused_before_anything_goes_out(
    world: World,
) -> None:
    await world.add_customers(2)
    campaign_id = await world.create_campaign()
    with pytest.raises(CampaignInvalid, match=r"\[campaigns\] secret"):
        await send(world, campaign_id, secret="")
    with pytest.raises(CampaignInvalid, match=r"\[campaigns\] unsubscribe_url"):
        await send(world, campaign_id, unsubscribe_url="")
    with pytest.raises(CampaignInvalid, match="https"):
        await send(world, campaign_id, unsubscribe_url="http://imperial.test/u")
    assert world.sink.messages == []
    assert world.rows("SELECT status FROM campaigns") == [("draft",)]


@pytest.mark.parametrize("url", ["http://localhost.evil.test/u", "http://127.0.0.1.evil.test/u",
                                 "http://10.0.0.1/u", "ftp://127.0.0.1/u"])
async def test_plain_http_links_are_refused_unless_they_stay_on_this_machine(
    world: World, url: str,
) -> None:
    await world.add_customers(1)
    campaign_id = await world.create_campaign()
    with pytest.raises(CampaignInvalid, match="https"):
        await send(world, campaign_id, unsubscribe_url=url)
    assert world.sink.messages == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/unsubscribe", "http://[::1]/u",
                                 "http://localhost:9000/u"])
async def test_a_loopback_http_link_for_the_local_playground_is_sent_as_it_is(
    world: World, url: str,
) -> None:
    await world.add_customers(1)
    campaign_id = await world.create_campaign()
    outcome = await send(world, campaign_id, unsubscribe_url=url)
    assert outcome.status == "sent"
    [message] = world.parsed()
    assert f"<{url}/" in str(message["List-Unsubscribe"])


async def test_a_rate_limited_campaign_still_mails_everyone_once(world: World) -> None:
    # The spacing itself is the limiter's arithmetic, tested with a moved clock in test_model.
    await world.add_customers(11)
    campaign_id = await world.create_campaign()
    outcome = await send(world, campaign_id, rate_limit=200.0)
    assert outcome.status == "sent"
    each_once(world, world.opted_in())


# --- SMTP trouble ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [421, 451])
async def test_temporary_failures_are_retried_and_everyone_gets_one_copy(
    world: World, code: int
) -> None:
    await world.add_customers(12)
    campaign_id = await world.create_campaign()
    world.sink.fail_next(6, code)
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    each_once(world, world.opted_in())
    [(attempts,)] = world.rows("SELECT sum(attempts) FROM campaign_recipients")
    assert attempts == 12 + 6


async def test_each_message_id_is_keyed_recorded_in_the_ledger_and_kept_on_retry(
    world: World,
) -> None:
    await world.add_customers(6)
    campaign_id = await world.create_campaign()
    world.sink.fail_next(3, 451)  # three recipients are tried twice
    assert (await send(world, campaign_id)).status == "sent"
    sent = {str(m["To"].addresses[0].addr_spec): str(m["Message-ID"]) for m in world.parsed()}
    ledger = dict(world.rows(
        "SELECT c.email, r.message_id FROM campaign_recipients r JOIN customers c "
        "ON c.id = r.customer_id"))
    assert sent == ledger
    assert len(set(sent.values())) == 6
    for email, mid in sent.items():
        [(customer_id,)] = world.rows("SELECT id FROM customers WHERE email = ?", (email,))
        # Not built from the ids a forger could guess, and the same on every attempt: the
        # HMAC of campaign and customer under the campaign secret.
        assert mid == message_id("imperial.test", secret=SECRET,
                                 what=f"campaign:{campaign_id}:customer:{customer_id}")
        assert f"c{campaign_id}.r{customer_id}" not in mid


async def test_a_connection_dropped_mid_message_is_reopened_and_the_message_retried(
    world: World,
) -> None:
    await world.add_customers(10)
    campaign_id = await world.create_campaign()
    world.sink.drop_next(3)
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    each_once(world, world.opted_in())


async def test_a_rejected_recipient_fails_with_the_servers_reply_and_the_rest_are_sent(
    world: World,
) -> None:
    await world.add_customers(12)
    world.sink.reject_recipients = {"c3@example.com", "c7@example.com"}
    campaign_id = await world.create_campaign()
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    assert (outcome.counts.sent, outcome.counts.failed) == (10, 2)
    failed = world.rows(
        "SELECT c.email, r.attempts, r.last_reply FROM campaign_recipients r "
        "JOIN customers c ON c.id = r.customer_id WHERE r.status = 'failed' ORDER BY c.email")
    assert [(email, attempts) for email, attempts, _ in failed] == [
        ("c3@example.com", 1), ("c7@example.com", 1)]
    assert all("550 5.1.1" in reply for _, _, reply in failed)
    each_once(world, world.opted_in() - {"c3@example.com", "c7@example.com"})


async def test_a_campaign_failing_past_the_threshold_pauses_itself_and_says_why(
    world: World,
) -> None:
    await world.add_customers(30)
    world.sink.reject_recipients = {f"c{i}@example.com" for i in range(0, 30, 3)} | {
        f"c{i}@example.com" for i in range(1, 30, 3)}
    campaign_id = await world.create_campaign()
    outcome = await send(world, campaign_id, max_connections=1)
    assert outcome.status == "paused"
    assert outcome.reason.startswith("paused: ")
    assert "failure threshold of 50%" in outcome.reason and "550 5.1.1" in outcome.reason
    async with open_db(world.db) as conn:
        report = await service.show_campaign(conn, campaign_id)
    assert report.campaign.status_reason == outcome.reason
    assert report.counts.pending > 0
    assert world.rows("SELECT count(*) FROM campaign_recipients WHERE status = 'sending'") == [
        (0,)]


async def test_an_unreachable_server_pauses_the_campaign_without_failing_anyone(
    world: World,
) -> None:
    await world.add_customers(5)
    campaign_id = await world.create_campaign()
    config = world.config()
    unreachable = config.smtp.__class__(host="127.0.0.1", port=free_port(), security="none",
                                        timeout_s=2.0)
    async with open_db(world.db) as conn:
        outcome = await send_campaign(conn, world.config(smtp=unreachable, max_attempts=2),
                                      campaign_id, stop=asyncio.Event())
    assert outcome.status == "paused"
    assert "SMTP server unavailable" in outcome.reason
    assert outcome.counts.failed == 0 and outcome.counts.pending == 5


class _ConcurrencySink(SmtpSink):
    """The test sink, counting how many transactions it holds at the same moment."""

    def __init__(self) -> None:
        super().__init__()
        self.in_data = 0
        self.most_concurrent = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data += 1
        self.most_concurrent = max(self.most_concurrent, self.in_data)
        try:
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.in_data -= 1


async def test_a_slow_server_is_fed_over_all_connections_at_once(
    tmp_path: Path, database: Path | str,
) -> None:
    with _ConcurrencySink() as sink:
        world = World.build(tmp_path, sink, database)
        await _feed_slow_server(world, sink)


async def _feed_slow_server(world: World, sink: _ConcurrencySink) -> None:
    await world.add_customers(24)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.05
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    assert sink.most_concurrent == 4  # 4 connections at once, not one after another
    each_once(world, world.opted_in())


async def test_a_server_that_stops_answering_times_out_and_the_message_is_retried(
    world: World,
) -> None:
    await world.add_customers(3)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 1.0
    asyncio.get_running_loop().call_later(0.5, setattr, world.sink, "delay_s", 0.0)
    config = world.config()
    quick = dataclasses.replace(config.smtp, timeout_s=0.3)
    outcome = await send(world, campaign_id, smtp=quick, retry=Backoff(base_s=0.3, max_s=0.3))
    assert outcome.status == "sent"
    # A timed-out transaction may still complete on the server: at least once, then.
    assert set(world.received()) == world.opted_in()
    assert all(a >= 2 for (a,) in world.rows("SELECT attempts FROM campaign_recipients"))


# --- consent at the moment of sending -------------------------------------------------------


@pytest.mark.parametrize("batch_size", [5, 500])
async def test_a_customer_who_opts_out_mid_campaign_receives_nothing_after(
    world: World, batch_size: int
) -> None:
    """With batch 500 the opted-out row is already claimed ('sending'): only the check just
    before its send stops it. With batch 5 it is still pending: opt_out skips it."""
    await world.add_customers(40)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.02
    task = asyncio.create_task(send(world, campaign_id, batch_size=batch_size))
    await wait_for(lambda: len(world.sink.messages) >= 8, what="8 messages sent")
    [(last_id,)] = world.rows("SELECT id FROM customers WHERE email = 'c39@example.com'")
    async with open_db(world.db) as conn, transaction(conn):
        await change.opt_out(conn, [change.Refusal(
            (last_id,), reference="<request@example.com>",
            thread=change.Thread(message_id="<request@example.com>"))], ["offers"],
            source="email")
    outcome = await task
    assert outcome.status == "sent"
    assert "c39@example.com" not in world.received()
    each_once(world, {f"c{i}@example.com" for i in range(39)})
    assert world.ledger(campaign_id)["c39@example.com"] == "skipped"


async def test_an_opt_out_committed_while_the_server_reads_the_envelope_withdraws_the_message(
    world: World,
) -> None:
    """The message goes out once the previous commit is in, with the envelope accepted; if
    the decision is over FRESH_S old by then, consent is decided again. c5 opts out while the
    server reads c5's envelope (and takes 20 ms over it): c5's message is withdrawn, never
    delivered, and c5's row is skipped."""
    await world.add_customers(10)
    campaign_id = await world.create_campaign()

    def opt_out_c5(address: str) -> None:
        if address == "c5@example.com":
            dbrows.execute(world.db, "UPDATE customers SET offers = 0 "
                           "WHERE email = 'c5@example.com'")
            time.sleep(0.02)

    world.sink.on_rcpt = opt_out_c5
    outcome = await send(world, campaign_id, max_connections=1)
    assert outcome.status == "sent"
    each_once(world, {f"c{i}@example.com" for i in range(10)} - {"c5@example.com"})
    assert world.ledger(campaign_id)["c5@example.com"] == "skipped"


async def test_the_audience_is_taken_when_sending_starts_not_when_created(
    world: World,
) -> None:
    await world.add_customers(6)
    campaign_id = await world.create_campaign()
    world.rows("UPDATE customers SET offers = 0 WHERE email = 'c1@example.com'")
    await world.add_customers(2, start=50)
    await send(world, campaign_id)
    each_once(world, world.opted_in())
    assert "c1@example.com" not in world.received() and "c50@example.com" in world.received()


# --- pauses, stops, two senders -------------------------------------------------------------


async def test_pause_and_resume_mail_everyone_exactly_once(world: World) -> None:
    await world.add_customers(60)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.01
    task = asyncio.create_task(send(world, campaign_id))
    await wait_for(lambda: len(world.sink.messages) >= 10, what="10 messages sent")
    async with open_db(world.db) as conn:
        paused = await service.pause(conn, campaign_id)
    assert paused.status == "paused"
    outcome = await task
    assert outcome.status == "paused" and outcome.reason == "paused by operator"
    after_pause = len(world.sink.messages)
    assert after_pause < 60
    await asyncio.sleep(0.1)
    assert len(world.sink.messages) == after_pause
    assert world.rows("SELECT count(*) FROM campaign_recipients WHERE status = 'sending'") == [
        (0,)]
    async with open_db(world.db) as conn:
        resumed = await service.resume(conn, campaign_id)
    assert resumed.status == "scheduled"
    world.sink.delay_s = 0.0
    assert (await send(world, campaign_id)).status == "sent"
    each_once(world, world.opted_in())


async def test_stop_pauses_cleanly_and_a_second_send_finishes_exactly_once(
    world: World,
) -> None:
    await world.add_customers(50)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.01
    stop = asyncio.Event()
    task = asyncio.create_task(send(world, campaign_id, stop=stop))
    await wait_for(lambda: len(world.sink.messages) >= 10, what="10 messages sent")
    stop.set()
    outcome = await task
    assert (outcome.status, outcome.reason) == ("paused", "paused: interrupted")
    assert outcome.counts.sent == len(world.sink.messages) < 50
    world.sink.delay_s = 0.0
    assert (await send(world, campaign_id)).status == "sent"
    each_once(world, world.opted_in())


async def test_cancel_stops_the_sender_and_leaves_the_rest_pending(world: World) -> None:
    await world.add_customers(50)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.01
    task = asyncio.create_task(send(world, campaign_id))
    await wait_for(lambda: len(world.sink.messages) >= 5, what="5 messages sent")
    async with open_db(world.db) as conn:
        await service.cancel(conn, campaign_id)
    outcome = await task
    assert outcome.status == "cancelled"
    delivered = len(world.sink.messages)
    assert outcome.counts.pending == 50 - delivered > 0
    assert set(world.ledger(campaign_id).values()) == {"sent", "pending"}
    with pytest.raises(CampaignRefused, match="is cancelled"):
        await send(world, campaign_id)
    assert len(world.sink.messages) == delivered


_CHILD = """
import asyncio, json, sys
from pathlib import Path
from mailer.campaigns.sender import send_campaign
from mailer.store.db import open_db
from tests.campaigns.world import World
from tests.servers import SmtpSink

args = json.loads(sys.argv[1])
sink = SmtpSink.__new__(SmtpSink)
sink.port = args["port"]
world = World.build(Path(args["tmp"]), sink, args["db"])

async def main():
    async with open_db(world.db) as conn:
        await send_campaign(conn, world.config(lease_ttl_s=60.0), args["campaign"],
                            stop=asyncio.Event())

asyncio.run(main())
"""


async def test_kill_9_mid_campaign_then_send_again_takes_over_at_once_missing_no_one(
    world: World,
) -> None:
    await world.add_customers(120)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.03
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD,
         json.dumps({"port": world.sink.port, "tmp": str(world.tmp), "campaign": campaign_id,
                     "db": world.db if isinstance(world.db, str) else None})],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await wait_for(lambda: len(world.sink.messages) >= 30 or child.poll() is not None,
                       what="30 messages sent or the sender gone")
        assert child.poll() is None, "the sender ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    await asyncio.sleep(0.2)  # the sink finishes the transactions it was in
    before = len(world.sink.messages)
    assert before < 120
    [(left_sending,)] = world.rows(
        "SELECT count(*) FROM campaign_recipients WHERE status = 'sending'")
    assert left_sending > 0
    # Its lease (60 s) has not expired, but its holder is a dead process of this host: the
    # next send takes over at once.
    world.sink.delay_s = 0.0
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    received = world.received()
    assert set(received) == world.opted_in()
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= world.settings.smtp.max_connections
    assert set(world.ledger(campaign_id).values()) == {"sent"}
