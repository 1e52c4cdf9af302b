"""Failover: two hosts on one PostgreSQL, and every process of one of them killed at once.

Host A (`MAILER_INSTANCE=host-a`) and host B run `mailer run` against one PostgreSQL, one IMAP
inbox and one SMTP server. A 3,000-recipient campaign is sending from both and requests arrive
while host A holds the inbox; then every process of host A gets SIGKILL (its process group,
as a host losing power would). Host B must finish the campaign and take over the inbox within
the lease time, with every request honoured once and confirmed, every opted-in customer
mailed, at most host A's SMTP connections mailed twice, and nobody mailed after their opt-out
committed.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from mailer.campaigns import service
from mailer.store.db import open_db
from tests.daemon_world import request
from tests.helpers import DAEMON_SECRET, ROOT
from tests.inbox.world import World, make_world
from tests.postgres import PostgresServer
from tests.servers import ImapTestServer, SmtpSink
from tests.waiting import wait_for

CUSTOMERS = 3000
CONNECTIONS = 4
INBOX_LEASE_S = 3.0
REQUESTS_BEFORE, REQUESTS_AFTER = 8, 8


def customers_csv() -> str:
    lines = ["name,email,company,phone"]
    lines += [f"Customer {i},c{i}@example.com,,01632 96{i:04d}" for i in range(CUSTOMERS)]
    return "\n".join(lines) + "\n"


@contextmanager
def host(world: World, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """`mailer run` as host `name`, in a process group of its own (the whole host)."""
    log = (world.tmp_path / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), "run"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        env={**os.environ, "MAILER_SECRET": DAEMON_SECRET, "MAILER_INSTANCE": name})
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def inbox_holder(world: World) -> str | None:
    rows = world.query("SELECT host FROM leases WHERE name = 'inbox'")
    return str(rows[0][0]) if rows else None


def sent_by(world: World, pid: int | None = None) -> int:
    """Recipients sent so far, by the host whose daemon has `pid` (a holder id ends in it)."""
    [(count,)] = world.query(
        "SELECT count(*) FROM campaign_recipients WHERE status = 'sent' AND claimed_by LIKE ?",
        "%" if pid is None else f"%-pid{pid}")
    return int(count)


def campaign_status(world: World, campaign_id: int) -> str:
    return str(world.query("SELECT status FROM campaigns WHERE id = ?", campaign_id)[0][0])


async def test_host_b_finishes_the_campaign_and_takes_the_inbox_when_host_a_dies(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
        postgres_server: PostgresServer) -> None:
    world = await make_world(
        tmp_path, imap_server, smtp_sink, customers_csv(),
        database=postgres_server.create_database(),
        imap={"lease_ttl_s": INBOX_LEASE_S},
        smtp={"max_connections": CONNECTIONS, "rate_limit": 80.0},
        campaigns={"unsubscribe_url": "https://imperial.test/unsubscribe"})
    async with open_db(world.settings.database.location) as conn:
        campaign = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="An offer for {{ customer.name }}",
            at=(datetime.now().astimezone() + timedelta(seconds=3)).isoformat())
    requesters = [f"c{i}@example.com" for i in range(0, 2 * (REQUESTS_BEFORE + REQUESTS_AFTER),
                                                       2)]
    with host(world, "host-a") as a:
        await wait_for(lambda: inbox_holder(world) == "host-a", what="host A holding the inbox",
                       timeout_s=30, interval_s=0.2)
        with host(world, "host-b") as b:
            await wait_for(lambda: sent_by(world) >= 300 and sent_by(world, b.pid) > 0,
                           what="both hosts sending", timeout_s=60, interval_s=0.2)
            for address in requesters[:REQUESTS_BEFORE]:
                world.deliver(request(address))
            await wait_for(lambda: len(world.folder_subjects("Processed")) >= 2,
                           what="host A honouring requests", timeout_s=30, interval_s=0.2)
            assert inbox_holder(world) == "host-a"
            os.killpg(a.pid, signal.SIGKILL)  # every process of host A, at once
            a.wait(timeout=30)
            for address in requesters[REQUESTS_BEFORE:]:
                world.deliver(request(address))
            await wait_for(lambda: inbox_holder(world) == "host-b",
                           what="host B taking over the inbox", timeout_s=4 * INBOX_LEASE_S,
                           interval_s=0.2)
            await wait_for(lambda: campaign_status(world, campaign.id) == "sent",
                           what="host B finishing the campaign", timeout_s=180, interval_s=0.5)
            await wait_for(lambda: len(world.folder_subjects("Processed")) == len(requesters)
                           and not world.folder_subjects("INBOX"),
                           what="every request moved to Processed", timeout_s=60,
                           interval_s=0.5)
            await wait_for(lambda: world.query(
                "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0] == 0,
                what="every confirmation sent (one host A had claimed: once its heartbeat "
                     "has been silent for 30 s)", timeout_s=90, interval_s=0.5)
            assert b.poll() is None, "host B must still run"

    # Every request honoured once: one opt-out event each, one confirmation each, and each
    # message in Processed exactly once.
    assert len(world.folder_subjects("Processed")) == len(requesters)
    events = collections.Counter(str(r[0]) for r in world.query(
        "SELECT c.email FROM consent_events e JOIN customers c ON c.id = e.customer_id "
        "WHERE e.source = 'email' AND e.category = 'offers' AND e.new_value = 0"))
    assert events == collections.Counter(requesters)
    confirmations = collections.Counter(str(r[0]) for r in world.query(
        "SELECT to_address FROM outbox WHERE status = 'sent'"))
    assert confirmations == collections.Counter(requesters)

    # Every opted-in customer mailed (the requesters only until they opted out), at most
    # host A's connections twice, and nobody after their opt-out committed.
    received = collections.Counter()
    last_copy: dict[str, float] = {}
    campaign_copies = [m for m in smtp_sink.messages if b"An offer for" in m.content]
    for message in campaign_copies:
        for address in message.rcpt_tos:
            received[address.lower()] += 1
            last_copy[address.lower()] = max(last_copy.get(address.lower(), 0.0),
                                             message.received_at)
    everyone = {f"c{i}@example.com" for i in range(CUSTOMERS)}
    assert everyone - set(requesters) <= set(received)
    ledger = dict(world.query(
        "SELECT c.email, r.status FROM campaign_recipients r JOIN customers c "
        "ON c.id = r.customer_id WHERE r.campaign_id = ?", campaign.id))
    assert {status for status in ledger.values()} <= {"sent", "skipped"}
    assert {e for e, s in ledger.items() if s == "sent"} == set(received)
    twice = [address for address, n in received.items() if n > 1]
    assert len(twice) <= CONNECTIONS, twice
    assert max(received.values()) <= 2
    opted_out_at = {str(r[0]): datetime.fromisoformat(str(r[1])).timestamp() for r in world.query(
        "SELECT c.email, min(e.at) FROM consent_events e JOIN customers c "
        "ON c.id = e.customer_id WHERE e.source = 'email' GROUP BY c.email")}
    late = [address for address, at in opted_out_at.items()
            if last_copy.get(address, 0.0) > at + 1.0]
    assert late == []
