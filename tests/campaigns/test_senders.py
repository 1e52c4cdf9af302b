"""Several senders on one campaign (`mailer.campaigns.senders`), on both engines: two senders
share it with each recipient mailed once; a sender killed with SIGKILL leaves its in-flight
rows to the others, behind the fresh ones; a pause from another connection stops every sender;
the campaign's rate limit holds for all of them together."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.campaigns import service
from mailer.campaigns.pool import rate_share
from mailer.campaigns.sender import SendOutcome, send_campaign
from mailer.campaigns.senders import sender_lease
from mailer.clock import SYSTEM_CLOCK
from mailer.store import campaigns as store
from mailer.store import leases
from mailer.store.db import open_db, transaction
from mailer.store.leases import Holder, new_holder
from tests.campaigns.test_leases import dead_process
from tests.campaigns.world import ROOT, World
from tests.servers import SmtpSink
from tests.waiting import wait_for


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, smtp_sink, database)


async def send(world: World, campaign_id: int, *, stop: asyncio.Event | None = None,
               **config: object) -> SendOutcome:
    """One sender (a holder of its own), as one daemon would run it."""
    async with open_db(world.db) as conn:
        return await send_campaign(conn, world.config(**config), campaign_id,
                                   stop=stop or asyncio.Event(), on_stop="leave",
                                   holder=new_holder())


def duplicates(world: World) -> int:
    return sum(n - 1 for n in world.received().values())


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
        await send_campaign(conn, world.config(lease_ttl_s=60.0, batch_size=20),
                            args["campaign"], stop=asyncio.Event(), on_stop="leave")

asyncio.run(main())
"""


def start_sender_process(world: World, campaign_id: int) -> subprocess.Popen[bytes]:
    """A sender in a process of its own (with a 60 s lease: only its death, seen on this
    host, lets the others take its rows back at once)."""
    args = {"port": world.sink.port, "tmp": str(world.tmp), "campaign": campaign_id,
            "db": world.db if isinstance(world.db, str) else None}
    return subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(args)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


async def kill_after(world: World, child: subprocess.Popen[bytes], messages: int) -> None:
    """SIGKILL the sender once the sink has `messages` in all."""
    try:
        await wait_for(lambda: len(world.sink.messages) >= messages or child.poll() is not None,
                       what=f"{messages} messages sent or the sender gone")
        assert child.poll() is None, "the sender ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    await asyncio.sleep(0.2)  # the sink finishes the transactions it was in


async def test_two_senders_share_a_campaign_and_mail_each_recipient_once(world: World) -> None:
    await world.add_customers(120, offers_every=2)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.01
    one, two = await asyncio.gather(send(world, campaign_id, batch_size=10),
                                    send(world, campaign_id, batch_size=10))
    assert one.sent > 0 and two.sent > 0
    assert one.sent + two.sent == 60
    received = world.received()
    assert set(received) == world.opted_in() and set(received.values()) == {1}
    # Whichever ended last saw nothing left and wrote 'sent'.
    assert "sent" in {one.status, two.status}
    assert world.rows("SELECT status FROM campaigns") == [("sent",)]
    assert world.rows("SELECT count(*) FROM leases") == [(0,)]


async def test_a_sender_killed_mid_campaign_is_finished_by_the_other(world: World) -> None:
    await world.add_customers(150)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.02
    child = start_sender_process(world, campaign_id)
    await wait_for(lambda: len(world.sink.messages) >= 10, what="10 messages from the child")
    survivor = asyncio.create_task(send(world, campaign_id, batch_size=10))
    await kill_after(world, child, 40)
    world.sink.delay_s = 0.0
    outcome = await survivor
    assert outcome.status == "sent"
    received = world.received()
    assert set(received) == world.opted_in()
    assert duplicates(world) <= world.settings.smtp.max_connections
    assert set(world.ledger(campaign_id).values()) == {"sent"}


async def test_two_kills_in_turn_give_no_recipient_more_than_one_duplicate(
    world: World,
) -> None:
    await world.add_customers(200)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.03
    await kill_after(world, start_sender_process(world, campaign_id), 30)
    first_kill = len(world.sink.messages)
    # The next sender starts, and is killed as soon as its first message is through: the
    # messages it has in flight then are fresh recipients, since the rows in flight at the
    # first kill wait behind them (first in line, they would get a third copy here).
    await kill_after(world, start_sender_process(world, campaign_id), first_kill + 1)
    [(requeued,)] = world.rows("SELECT count(*) FROM campaign_recipients WHERE requeued > 0")
    assert requeued > 0
    world.sink.delay_s = 0.0
    outcome = await send(world, campaign_id)
    assert outcome.status == "sent"
    received = world.received()
    assert set(received) == world.opted_in()
    assert max(received.values()) <= 2
    assert duplicates(world) <= 2 * world.settings.smtp.max_connections


async def test_the_rows_a_dead_sender_left_in_flight_are_the_last_a_new_sender_sends(
    world: World,
) -> None:
    await world.add_customers(12)
    campaign_id = await world.create_campaign()
    # What a sender killed on this host leaves: its lease (60 s to go) and its rows of the
    # lowest ids in 'sending', some perhaps delivered already.
    killed = Holder(id="killed", host=new_holder().host, pid=dead_process())
    async with open_db(world.db) as conn:
        campaign = await store.get_campaign(conn, campaign_id)
        assert campaign is not None
        async with transaction(conn):
            await leases.acquire(conn, sender_lease(campaign_id, killed.id), killed,
                                 now_s=await leases.now_s(conn, SYSTEM_CLOCK), ttl_s=60.0)
            await store.snapshot_audience(conn, campaign)
            await store.mark_started(conn, campaign_id)
        in_flight = await store.claim_batch(conn, campaign_id, 3, killed.id)
    outcome = await send(world, campaign_id, max_connections=1, batch_size=4)
    assert outcome.status == "sent"
    ids = dict(world.rows("SELECT email, id FROM customers"))
    order = [ids[m.rcpt_tos[0]] for m in world.sink.messages]
    assert sorted(order) == sorted(ids.values())
    assert order[-3:] == in_flight and order[:-3] == sorted(set(order) - set(in_flight))


async def test_a_sender_whose_lease_was_broken_stops_and_its_rows_go_to_the_next(
    world: World,
) -> None:
    await world.add_customers(150)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.01
    slow = asyncio.create_task(send(world, campaign_id, lease_ttl_s=0.4, batch_size=10))
    await wait_for(lambda: len(world.sink.messages) >= 10, what="10 messages sent")
    # What another sender does once this one's lease has expired (it stalled, say). From a
    # thread: the sender may be inside a transaction on this loop that holds the lease's row.
    await asyncio.to_thread(world.rows, "DELETE FROM leases")
    outcome = await slow
    assert outcome.status == "sending" and "lease" in outcome.reason
    stopped_at = len(world.sink.messages)
    assert stopped_at < 150
    world.sink.delay_s = 0.0
    assert (await send(world, campaign_id)).status == "sent"
    assert set(world.received()) == world.opted_in()
    assert duplicates(world) <= world.settings.smtp.max_connections


async def test_a_pause_from_another_connection_stops_both_senders(world: World) -> None:
    await world.add_customers(200)
    campaign_id = await world.create_campaign()
    world.sink.delay_s = 0.01
    senders = asyncio.gather(send(world, campaign_id, batch_size=10),
                             send(world, campaign_id, batch_size=10))
    await wait_for(lambda: len(world.sink.messages) >= 20, what="20 messages sent")
    async with open_db(world.db) as conn:
        assert (await service.pause(conn, campaign_id)).status == "paused"
    one, two = await senders
    assert one.sent > 0 and two.sent > 0
    assert (one.status, two.status) == ("paused", "paused")
    stopped_at = len(world.sink.messages)
    assert stopped_at < 200
    await asyncio.sleep(0.2)
    assert len(world.sink.messages) == stopped_at
    assert world.rows("SELECT count(*) FROM campaign_recipients WHERE status = 'sending'") == [
        (0,)]
    assert world.rows("SELECT status FROM campaigns") == [("paused",)]


def test_each_live_sender_takes_an_equal_share_of_the_campaigns_rate() -> None:
    assert rate_share(100.0, 1) == 100.0
    assert rate_share(100.0, 2) == 50.0
    assert rate_share(90.0, 3) == 30.0
    assert rate_share(100.0, 0) == 100.0  # before its own lease is counted
    assert rate_share(0.0, 4) == 0.0  # no limit stays no limit


async def test_two_senders_keep_to_the_campaigns_rate_together(world: World) -> None:
    rate, messages, ttl_s = 100.0, 60, 0.4
    await world.add_customers(messages)
    campaign_id = await world.create_campaign()
    started = SYSTEM_CLOCK.monotonic()
    one, two = await asyncio.gather(
        send(world, campaign_id, rate_limit=rate, lease_ttl_s=ttl_s, batch_size=5),
        send(world, campaign_id, rate_limit=rate, lease_ttl_s=ttl_s, batch_size=5))
    elapsed = SYSTEM_CLOCK.monotonic() - started
    assert one.sent + two.sent == messages
    # Each limiter lets one message through at once (its burst), and the first sender may
    # send at the full rate until its first renewal (ttl/4) counts the second: by time T at
    # most 2 + rate*T + rate/2*(ttl/4) messages have gone out.
    assert elapsed >= (messages - 2 - rate / 2 * ttl_s / 4) / rate
    assert set(world.received().values()) == {1}
