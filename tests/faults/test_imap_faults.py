"""Fault injection against the real IMAP server: an outage during IDLE and a stuck connection.

The daemon runs as a real `mailer run` process; `mailer status` is asked as an operator would.
Recovery times are printed (run with -s) for the closing note; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import mailbox
import re
import time
from pathlib import Path

import pytest

from mailer.backoff import SERVER_RECONNECT
from tests.daemon_world import daemon, daemon_log, request, status
from tests.faults.load import knob
from tests.faults.proxy import FreezingProxy
from tests.helpers import dovecot_only
from tests.inbox.world import make_world
from tests.servers import DovecotServer, ImapTestServer, SmtpSink
from tests.waiting import wait_for

OUTAGE_S = knob("OUTAGE_S", 30.0)
CUSTOMERS = ("ann@example.com", "bob@example.com", "carol@example.com")


@dovecot_only
@pytest.mark.timeout(120 + 2 * OUTAGE_S)
async def test_requests_that_arrive_during_a_long_imap_outage_are_honoured_soon_after_its_return(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    with DovecotServer() as server:
        world = await make_world(tmp_path, server, smtp_sink, imap={"timeout_s": 2.0})
        with daemon(world):
            await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
            server.stop()
            down_at = time.monotonic()
            await wait_for(lambda: status(world)[0] == 1, what="mailer status to exit 1")
            code, data = status(world)
            assert code == 1
            assert data["parts"]["inbox"]["state"] == "reconnecting"
            assert data["parts"]["inbox"]["last_error"]
            assert any("inbox " in reason for reason in data["reasons"])
            # Mail keeps arriving while the IMAP server is down (delivered to the Maildir).
            inbox = mailbox.Maildir(server.maildir, create=False)
            for customer in CUSTOMERS:
                inbox.add(request(customer))
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            server.start()
            back_at = time.monotonic()
            await wait_for(lambda: world.opted_out() == set(CUSTOMERS),
                           what="every customer opted out")
            honoured_s = time.monotonic() - back_at
            print(f"\nIMAP outage of {back_at - down_at:.1f} s: requests honoured "
                  f"{honoured_s:.1f} s after its return")
            await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
            await wait_for(lambda: len(smtp_sink.messages) == len(CUSTOMERS),
                           what="every confirmation sent")
    assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [(6,)]
    log = daemon_log(world)
    assert "Traceback" not in log
    # However long the outage, the next attempt is never more than the policy's cap away, so
    # the server's return is noticed within seconds (the time measured above is printed).
    delays = [float(d) for d in re.findall(r"inbox: .*; retrying in ([\d.]+) s", log)]
    assert sum(delays) >= OUTAGE_S / 2  # the outage was retried through, not slept through
    assert max(delays) <= SERVER_RECONNECT.max_s
    assert SERVER_RECONNECT.max_s <= 4.0


async def test_a_stuck_imap_connection_is_detected_by_the_timeout_and_replaced(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    with FreezingProxy(imap_server.port) as proxy:
        world = await make_world(tmp_path, imap_server, smtp_sink, imap={
            "port": proxy.port, "timeout_s": 2.0, "idle_timeout_s": 1.0})
        with daemon(world):
            await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
            connections = proxy.connections
            proxy.freeze()  # the daemon's session hangs: no answer, no close
            world.deliver(request("dan@example.com"))
            await wait_for(lambda: world.opted_out() == {"dan@example.com"}, what="dan opted out")
            assert proxy.connections > connections  # a new session replaced the stuck one
            _, data = status(world)
            assert data["parts"]["inbox"]["failures"] >= 1
            assert "timed out" in data["parts"]["inbox"]["last_error"]
            await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
