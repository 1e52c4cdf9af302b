"""/metrics tells the truth across processes: the review queue, the outbox and each campaign
in progress are read from the database at every scrape, so what a `mailer` command in another
process did shows on the daemon's endpoint. Real daemon, real CLI, real HTTP scrapes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from mailer.health.metrics import Metrics, add_metrics
from tests.daemon_world import daemon, request, status
from tests.helpers import DAEMON_SECRET, run_cli
from tests.inbox.world import CUSTOMERS_CSV, World, make_world
from tests.servers import ImapTestServer, SmtpSink, free_port
from tests.waiting import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
ENV = {"MAILER_SECRET": DAEMON_SECRET}  # the daemon's (tests.daemon_world)


def scrape(url: str) -> Samples:
    """Every sample of a Prometheus text answer, by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def campaign_samples(samples: Samples, campaign_id: int) -> dict[str, float]:
    """`mailer_campaign_recipients` of one campaign, by state."""
    found = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "mailer_campaign_recipients" and label["campaign"] == str(campaign_id):
            assert label["kind"] == "offers"
            found[label["state"]] = value
    return found


async def test_a_campaign_the_cli_sends_and_a_review_it_settles_show_on_the_daemons_metrics(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    port = free_port()
    world = await make_world(
        tmp_path, imap_server, smtp_sink, http={"host": "127.0.0.1", "port": port},
        campaigns={"unsubscribe_url": "https://imperial.test/unsubscribe",
                   "failure_threshold": 0.5, "failure_min_sample": 3})
    url = f"http://127.0.0.1:{port}/metrics"
    with daemon(world):
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
        first = await asyncio.to_thread(scrape, url)
        assert first[("mailer_database_readable", ())] == 1
        assert first[("mailer_review_open_items", ())] == 0
        assert first[("mailer_outbox_depth", ())] == 0

        # A request nobody can be matched to waits for a person; the CLI settles it.
        world.deliver(request("stranger@example.net"))
        await wait_for(lambda: scrape(url)[("mailer_review_open_items", ())] == 1,
                       what="one open review item in /metrics")
        listed = run_cli(world.settings_path, "review", "list", "--json")
        [item] = json.loads(listed.stdout)
        settled = run_cli(world.settings_path, "review", "resolve", str(item["id"]),
                          "--dismiss")
        assert settled.code == 0, settled.stderr
        assert (await asyncio.to_thread(scrape, url))[("mailer_review_open_items", ())] == 0

        # Another process sends a campaign; the first six addresses are refused, so it pauses
        # itself part way and stays in progress.
        created = run_cli(world.settings_path, "campaign", "create", "--kind", "offers",
                          "--template", "welcome-offer", "--subject", "An offer", env=ENV)
        assert created.code == 0, created.stderr
        campaign_id = int(created.stdout)
        smtp_sink.reject_recipients = {line.split(",")[1]
                                       for line in CUSTOMERS_CSV.splitlines()[1:7]}
        sent = await asyncio.to_thread(
            run_cli, world.settings_path, "campaign", "send", str(campaign_id), env=ENV)
        assert sent.code != 0 and "paused" in sent.stderr
        shown = json.loads(run_cli(world.settings_path, "campaign", "show", str(campaign_id),
                                   "--json", env=ENV).stdout)
        assert shown["status"] == "paused"

        samples = await asyncio.to_thread(scrape, url)
        counts = shown["counts"]
        assert campaign_samples(samples, campaign_id) == {
            "sent": counts["sent"], "pending": counts["pending"], "failed": counts["failed"],
            "skipped": counts["skipped"]}
        assert counts["failed"] >= 3 and sum(campaign_samples(samples, campaign_id).values()) == 10
        labels = (("campaign", str(campaign_id)), ("kind", "offers"))
        assert samples[("mailer_campaign_paused", labels)] == 1
        # The daemon's own counters know nothing of it: it did not send it.
        assert ("mailer_campaign_messages_sent_total", (("kind", "offers"),)) not in samples

        cancelled = run_cli(world.settings_path, "campaign", "cancel", str(campaign_id),
                            env=ENV)
        assert cancelled.code == 0, cancelled.stderr
        after = await asyncio.to_thread(scrape, url)
        assert campaign_samples(after, campaign_id) == {}


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[str]:
    """/metrics of `Metrics(tmp_path / "mailer.db")` on a real server on loopback."""
    db_path = tmp_path / "mailer.db"
    app = web.Application()
    add_metrics(app, Metrics(db_path))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        await runner.cleanup()


async def test_before_there_is_a_database_nothing_waits_and_none_is_created(
    tmp_path: Path, endpoint: str
) -> None:
    samples = await asyncio.to_thread(scrape, endpoint)
    assert samples[("mailer_database_readable", ())] == 1
    assert samples[("mailer_outbox_depth", ())] == 0
    assert samples[("mailer_review_open_items", ())] == 0
    assert not (tmp_path / "mailer.db").exists()


async def test_a_confirmation_queued_by_the_cli_while_smtp_is_down_counts_in_the_outbox(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink, endpoint: str
) -> None:
    world: World = await make_world(tmp_path, imap_server, smtp_sink,
                                    smtp={"port": free_port(), "timeout_s": 2.0})
    world.deliver(request("bob@example.com"))
    processed = await asyncio.to_thread(run_cli, world.settings_path, "inbox", "process")
    assert world.opted_out() == {"bob@example.com"}, processed.stderr

    samples = await asyncio.to_thread(scrape, endpoint)

    assert samples[("mailer_outbox_depth", ())] == 1
    assert samples[("mailer_database_readable", ())] == 1


async def test_a_database_that_cannot_be_read_is_said_so_and_no_stale_gauge_is_shown(
    tmp_path: Path, endpoint: str
) -> None:
    with sqlite3.connect(tmp_path / "mailer.db") as conn:
        conn.execute("PRAGMA user_version = 999")  # newer than this mailer

    samples = await asyncio.to_thread(scrape, endpoint)

    assert samples[("mailer_database_readable", ())] == 0
    assert ("mailer_outbox_depth", ()) not in samples
    assert samples[("mailer_imap_reconnects_total", ())] == 0  # the counters still answer


async def test_each_campaign_in_progress_is_counted_by_state_and_finished_ones_drop_out(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink, endpoint: str
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink)
    ids = []
    for _ in range(3):
        created = run_cli(world.settings_path, "campaign", "create", "--kind", "offers",
                          "--template", "welcome-offer", "--subject", "An offer", env=ENV)
        assert created.code == 0, created.stderr
        ids.append(int(created.stdout))
    sending, paused, finished = ids
    # The ledger as a sender leaves it part way: rows in every state, one in flight.
    states = ("CASE id % 5 WHEN 0 THEN 'pending' WHEN 1 THEN 'sending' WHEN 2 THEN 'sent' "
              "WHEN 3 THEN 'failed' ELSE 'skipped' END")
    with sqlite3.connect(world.db_path) as conn:
        for campaign_id, status_ in ((sending, "sending"), (paused, "paused"),
                                     (finished, "sent")):
            conn.execute("UPDATE campaigns SET status = ? WHERE id = ?", (status_, campaign_id))
            conn.execute("INSERT INTO campaign_recipients (campaign_id, customer_id, status) "
                         f"SELECT ?, id, {states} FROM customers", (campaign_id,))

    samples = await asyncio.to_thread(scrape, endpoint)

    # Customers 1..10: ids 5 and 10 pending, 1 and 6 being sent (counted as pending), ...
    expected = {"pending": 4, "sent": 2, "failed": 2, "skipped": 2}
    assert campaign_samples(samples, sending) == expected
    assert campaign_samples(samples, paused) == expected
    assert campaign_samples(samples, finished) == {}
    assert samples[("mailer_campaign_paused", (("campaign", str(paused)), ("kind", "offers")))] == 1
    assert samples[("mailer_campaign_paused",
                    (("campaign", str(sending)), ("kind", "offers")))] == 0
