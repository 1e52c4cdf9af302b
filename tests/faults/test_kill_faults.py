"""kill -9 of the daemon at 20 random moments under a mixed load, restarting it each time.

The load: a 3,000-recipient offers campaign sent by `mailer run`, 300 unsubscribe requests
(250 customers, 50 of them asking twice) arriving in the IMAP inbox while it goes out, and
`mailer inbox process` run over and over from a "cron" loop beside the daemon. Everything is
real: Dovecot, the aiosmtpd sink, the database (SQLite file or PostgreSQL), the `mailer`
processes.

The kill moments and the requests come from one seeded `random.Random`, so a failure can be
replayed (`KILL_SEED`). At the end, from the database and what the sink received:

- every request honoured with exactly one consent event per category it turned off;
- at most one confirmation per customer (one outbox row; a kill between its send and its
  mark re-sends that same message, at most once per kill);
- every customer still opted in got the campaign; no one who never wanted offers got it, and
  no one got it later than their opt-out was committed (consent event time against the time
  the sink accepted the message, with `RACE_S` for the message on the wire);
- duplicates of the campaign at most `[smtp] max_connections` per kill, each put down to the
  kill before its re-send;
- `mailer db check` ok (SQLite's integrity check; PostgreSQL's tables all readable).

It runs on both engines (the `database` fixture): on PostgreSQL the daemon and the cron's
`mailer inbox process` share the server as several hosts would.

The figures (duplicates per kill, restart to sending again) are printed (run with -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from mailer.categories import CATEGORIES
from tests.daemon_world import request, status
from tests.faults.load import (
    CAMPAIGNS,
    SECRET,
    TimedSink,
    campaign_status,
    create_offers_campaign,
    customer,
    customers_csv,
    knob,
)
from tests.helpers import ROOT, run_cli
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer
from tests.waiting import wait_for

KILL_SEED = int(knob("SEED", 20261202))
KILLS = int(knob("KILLS", 20))
CUSTOMERS = 3000
OFFERS_OFF_EVERY = 10  # c0000, c0010, ... never wanted offers
ASKERS = 250
ASKING_TWICE = 50
MAX_CONNECTIONS = 4
RATE_PER_S = 100  # [smtp] rate_limit: the campaign spans most of the kills
# A message whose consent was read just before an opt-out committed may reach the sink a
# little after the commit: rendering, the previous result's commit, the SMTP exchange.
RACE_S = 1.0

# About 70 s on a quiet 2-core machine; room for a busy CI machine and for the soak's sizes.
pytestmark = pytest.mark.timeout(300 + 10 * KILLS)


@pytest.fixture
def sink() -> Iterator[TimedSink]:
    with TimedSink() as sink:
        yield sink


def start_daemon(world: World, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), "run"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "MAILER_SECRET": SECRET})


async def cron(world: World, stop: asyncio.Event, log: Path) -> int:
    """`mailer inbox process` again and again until `stop`; how many runs went through."""
    runs = 0
    while not stop.is_set():
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailer", "--settings", str(world.settings_path),
                "inbox", "process", cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            code = await process.wait()
        assert code == 0, f"mailer inbox process exited {code}; see {log}"
        runs += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()
    return runs


async def feed(world: World, senders: list[str], every_s: float, batch: int) -> None:
    """Deliver a request from each of `senders`, `batch` at a time, every `every_s`."""
    for start in range(0, len(senders), batch):
        world.deliver(*(request(sender) for sender in senders[start:start + batch]))
        await asyncio.sleep(every_s)


def at_s(stamp: object) -> float:
    return datetime.fromisoformat(str(stamp)).timestamp()


# The sink may take in the last bytes of a message a moment after its sender was killed; no
# restarted daemon sends anything that soon (starting takes longer).
GRACE_S = 0.2


def kill_ending(kills: list[float], accepted: float) -> int:
    """The index of the kill that ended the daemon's life in which a message was accepted at
    `accepted`; len(kills) for the last life, which ended with SIGTERM."""
    return sum(1 for killed in kills if killed + GRACE_S < accepted)


def repeats_by_kill(receipts: dict[str, list[float]], kills: list[float]) -> dict[int, int]:
    """Copies of a message beyond the first, each counted against the kill that ended the
    life in which the copy before it went out: that copy was in flight, or sent but not yet
    recorded. A message in flight at two kills in a row (re-sent first thing after the first
    kill, and killed again before it was recorded) is counted once against each."""
    repeats: dict[int, int] = defaultdict(int)
    for times in receipts.values():
        for earlier in sorted(times)[:-1]:
            repeats[kill_ending(kills, earlier)] += 1
    return repeats


async def test_twenty_kill_9s_under_mixed_load_lose_nothing_and_duplicate_only_what_was_in_flight(
    tmp_path: Path, imap_server: ImapTestServer, sink: TimedSink, database: Path | str
) -> None:
    rng = random.Random(KILL_SEED)
    world = await make_world(
        tmp_path, imap_server, sink, database=database,
        csv_text=customers_csv(CUSTOMERS, offers_off_every=OFFERS_OFF_EVERY),
        smtp={"timeout_s": 5.0, "max_connections": MAX_CONNECTIONS, "rate_limit": RATE_PER_S},
        campaigns=CAMPAIGNS)
    campaign = create_offers_campaign(world)
    askers = rng.sample([customer(i) for i in range(CUSTOMERS)], ASKERS)
    requests = askers + rng.sample(askers, ASKING_TWICE)
    rng.shuffle(requests)
    pauses = [rng.uniform(0.3, 3.0) for _ in range(KILLS)]
    daemon_log, cron_log = tmp_path / "daemon.log", tmp_path / "cron.log"

    stop_cron = asyncio.Event()
    crons = asyncio.create_task(cron(world, stop_cron, cron_log))
    feeding = asyncio.create_task(feed(world, requests, every_s=0.5, batch=5))
    kills: list[float] = []
    starts: list[float] = []
    try:
        for pause in pauses:
            starts.append(time.time())
            process = start_daemon(world, daemon_log)
            await asyncio.sleep(pause)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            kills.append(time.time())
        await feeding
        starts.append(time.time())
        process = start_daemon(world, daemon_log)
        try:
            # Ready (its signal handlers installed) before anything else, so the SIGTERM
            # below is a clean stop even when the work was all done before this start.
            await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
            await wait_for(lambda: campaign_status(world, campaign) == "sent", timeout_s=300,
                           what="the campaign sent")
            await wait_for(lambda: world.folder_subjects("INBOX") == [], timeout_s=120,
                           what="the inbox emptied")
            await wait_for(
                lambda: world.query("SELECT count(*) FROM outbox WHERE status = 'pending'")
                == [(0,)], timeout_s=120, what="the outbox to be empty")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    finally:
        stop_cron.set()
        feeding.cancel()
        runs = await crons
    assert process.returncode == 0, daemon_log.read_text(errors="replace")[-3000:]
    assert runs >= 3  # the cron loop really ran beside the daemon

    # Every request honoured: each asker opted out of everything, with one consent event
    # (source email) for each category that was on, and none for one already off.
    asked = set(askers)
    assert asked <= world.opted_out()
    events = Counter((str(email), str(category)) for email, category in world.query(
        "SELECT c.email, e.category FROM consent_events e JOIN customers c "
        "ON c.id = e.customer_id WHERE e.source = 'email'"))
    expected = Counter({(address, category): 1 for address in asked for category in CATEGORIES
                        if category != "offers" or int(address[1:5]) % OFFERS_OFF_EVERY})
    assert events == expected

    # At most one confirmation per customer: one outbox row each, and at the sink one distinct
    # message each; a re-send of that same message only after a kill, at most one per kill.
    assert Counter(str(r[0]) for r in world.query(
        "SELECT c.email FROM outbox o JOIN customers c ON c.id = o.customer_id "
        "WHERE o.status IN ('pending', 'sent')")) == Counter({address: 1 for address in asked})
    confirmations = sink.confirmations()
    assert {address for address, _ in confirmations} == asked
    by_address: dict[str, list[float]] = defaultdict(list)
    for address, accepted in confirmations:
        by_address[address].append(accepted)
    confirmation_repeats = repeats_by_kill(by_address, kills)
    assert KILLS not in confirmation_repeats  # none from a life that ended without a kill
    assert max(confirmation_repeats.values(), default=0) <= 1, confirmation_repeats

    # The campaign: everyone still opted in got it; no one who never wanted offers did.
    received: dict[str, list[float]] = defaultdict(list)
    for address, accepted in sink.campaign_messages():
        received[address].append(accepted)
    still_in = {str(r[0]) for r in world.query("SELECT email FROM customers WHERE offers = 1")}
    assert still_in and still_in <= set(received)
    never = {customer(i) for i in range(0, CUSTOMERS, OFFERS_OFF_EVERY)}
    assert not never & set(received)
    # No one got it after their opt-out was committed.
    opted_out_at = {str(email): at_s(at) for email, at in world.query(
        "SELECT c.email, min(e.at) FROM consent_events e JOIN customers c "
        "ON c.id = e.customer_id WHERE e.source = 'email' AND e.category = 'offers' "
        "GROUP BY c.email")}
    late = {address: max(received[address]) - at for address, at in opted_out_at.items()
            if received.get(address) and max(received[address]) > at}
    assert all(seconds <= RACE_S for seconds in late.values()), late
    # Opt-outs did overtake the campaign: their pending mail was skipped.
    skipped = world.query("SELECT count(*) FROM campaign_recipients WHERE campaign_id = ? "
                          "AND status = 'skipped'", campaign)[0][0]
    assert isinstance(skipped, int) and skipped > 0
    # Duplicates: at most the messages in flight (one per connection) at each kill.
    repeats = repeats_by_kill(received, kills)
    assert KILLS not in repeats  # none from a life that ended without a kill
    assert max(repeats.values(), default=0) <= MAX_CONNECTIONS, dict(repeats)

    # SQLite's integrity check; on PostgreSQL, the version read and every table counted.
    checked = run_cli(world.settings_path, "db", "check")
    assert checked.code == 0, checked.stderr

    # How long a restarted daemon took to send again, from its start.
    resumed = []
    for started, until in zip(starts, [*kills, float("inf")], strict=True):
        first = [at for _, at in sink.campaign_messages(since=started) if at < until]
        if first:
            resumed.append(first[0] - started)
    print(f"\n{KILLS} kills (seed {KILL_SEED}): campaign duplicates per kill "
          f"{[repeats.get(k, 0) for k in range(KILLS)]} (max {max(repeats.values(), default=0)}, "
          f"limit {MAX_CONNECTIONS}); confirmation re-sends {sum(confirmation_repeats.values())}; "
          f"restart to sending again: median {sorted(resumed)[len(resumed) // 2]:.2f} s, "
          f"max {max(resumed):.2f} s; latest message after an opt-out "
          f"{max(late.values(), default=0.0):.3f} s; {skipped} skipped; cron runs {runs}")
