"""Fault injection against the SMTP server: it goes away for 30 s in the middle of a campaign.

A real `mailer run` sends a real campaign to the aiosmtpd sink through `OutageProxy`, which
takes the server away and counts every connection attempt. The campaign must wait (not give
up, not hammer the server) and finish by itself once the server is back. Recovery time and
attempts are printed (run with -s) for the closing note; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_world import daemon, daemon_log
from tests.faults.load import (
    CAMPAIGNS,
    TimedSink,
    campaign_status,
    create_offers_campaign,
    customer,
    customers_csv,
    knob,
)
from tests.faults.proxy import OutageProxy
from tests.inbox.world import make_world
from tests.servers import ImapTestServer
from tests.waiting import wait_for

OUTAGE_S = knob("OUTAGE_S", 30.0)
CUSTOMERS = 600
OFFERS_OFF_EVERY = 7  # some customers never wanted offers: they must get nothing
MAX_CONNECTIONS = 4
MAX_ATTEMPTS = 5

pytestmark = pytest.mark.timeout(240 + 2 * OUTAGE_S)


@pytest.fixture
def sink() -> Iterator[TimedSink]:
    with TimedSink() as sink:
        yield sink


async def test_an_smtp_outage_mid_campaign_is_waited_out_and_the_campaign_completes_by_itself(
    tmp_path: Path, imap_server: ImapTestServer, sink: TimedSink
) -> None:
    with OutageProxy(sink.port) as proxy:
        world = await make_world(
            tmp_path, imap_server, sink,
            csv_text=customers_csv(CUSTOMERS, offers_off_every=OFFERS_OFF_EVERY),
            smtp={"port": proxy.port, "timeout_s": 5.0, "max_connections": MAX_CONNECTIONS,
                  "max_attempts": MAX_ATTEMPTS},
            campaigns=CAMPAIGNS)
        opted_in = {customer(i) for i in range(CUSTOMERS) if i % OFFERS_OFF_EVERY}
        campaign = create_offers_campaign(world)
        sink.delay_s = 0.01  # a few seconds of sending over four connections

        with daemon(world):
            await wait_for(lambda: len(sink.campaign_messages()) >= len(opted_in) // 5,
                           what="a fifth of the campaign sent")
            proxy.down()
            down_at = time.time()
            before_outage = len(sink.campaign_messages())
            await asyncio.sleep(OUTAGE_S)
            attempts = proxy.attempts_while_down()
            # Only transactions already under way when it went down could still finish.
            during = len(sink.campaign_messages(since=down_at + 1.0))
            proxy.up()
            up_at = time.time()
            await wait_for(lambda: bool(sink.campaign_messages(since=up_at)), timeout_s=60,
                           what="a campaign message after the outage")
            resumed_s = sink.campaign_messages(since=up_at)[0][1] - up_at
            await wait_for(lambda: campaign_status(world, campaign) == "sent", timeout_s=120,
                           what="the campaign sent")
            done_s = time.time() - up_at

    print(f"\nSMTP outage of {OUTAGE_S:.0f} s mid-campaign: {attempts} connection attempts "
          f"while down; sending resumed {resumed_s:.1f} s after its return, campaign "
          f"finished {done_s:.1f} s after it")
    assert before_outage < len(opted_in)  # the outage came mid-campaign
    assert during == 0
    # Every opted-in customer got exactly one message, and no one else got any.
    assert sink.campaign_counts() == {address: 1 for address in opted_in}
    # Waiting, not hammering: beyond each connection's own retries, under one attempt a second.
    assert 0 < attempts <= MAX_CONNECTIONS * MAX_ATTEMPTS + OUTAGE_S, attempts
    assert "Traceback" not in daemon_log(world)
