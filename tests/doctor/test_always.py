"""The doctor always on, in the daemon: complaints read from Dovecot by the daemon's own inbox
pass push the sender-wide rate of the last day over 0.3% and every campaign in progress is
paused with the cause "complaint-rate" (`mailer status` exits 1 and says why, the metrics show
the rate); from 0.1% a warning only; and the DNS and message checks at start run beside the
daemon, never before READY, and their result is kept for the console."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailer.campaigns import service
from mailer.campaigns.messages import send_config
from mailer.campaigns.sender import send_campaign
from mailer.clock import SYSTEM_CLOCK
from mailer.daemon import Daemon, DaemonTiming
from mailer.health.metrics import Metrics
from mailer.store import doctor as doctor_store
from mailer.store.db import open_db
from tests.console.world import FakeClock, add_users, login, start_client
from tests.daemon_world import daemon, status
from tests.doctor.conftest import DOMAIN
from tests.doctor.conftest import World as DoctorWorld
from tests.doctor.dns_zone import DnsServer, Zone
from tests.doctor.test_reputation import BOUNCE_ADDRESS, SECRET, complaint, customers_csv
from tests.helpers import run_cli
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink
from tests.waiting import wait_for


async def campaign_sent_and_one_scheduled(
        tmp_path: Path, imap_server: ImapTestServer, sink: SmtpSink, *, audience: int,
        min_sample: int) -> tuple[World, int]:
    """A campaign sent to `audience` customers, and a later one scheduled for 2099."""
    world = await make_world(
        tmp_path, imap_server, sink, customers_csv(audience),
        bounces={"address": BOUNCE_ADDRESS, "pause_min_sample": min_sample},
        campaigns={"secret": SECRET, "unsubscribe_url": "https://imperial.test/unsubscribe"})
    async with open_db(world.db_path) as conn:
        sent = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="An offer")
        outcome = await send_campaign(conn, send_config(world.settings), sent.id,
                                      stop=asyncio.Event())
        later = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="A later offer")
        await service.schedule(conn, later.id, "2099-01-01T09:00:00")
    assert outcome.counts.sent == audience
    return world, later.id


def complaint_rate_metric(world: World) -> str:
    """The `mailer_complaint_rate` lines of a scrape of the daemon's database gauges."""
    text = Metrics(world.db_path).render().decode()
    return "\n".join(line for line in text.splitlines()
                     if line.startswith("mailer_complaint_rate{"))


async def test_complaints_from_dovecot_over_three_in_a_thousand_pause_every_campaign_in_progress(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world, later = await campaign_sent_and_one_scheduled(
        tmp_path, imap_server, smtp_sink, audience=20, min_sample=10)
    world.deliver(complaint(smtp_sink.messages[0], 1))
    reason = ("sender-wide complaint rate 5.00% over the last day (1 complaint / 20 sent): "
              "providers refuse mail at 0.30%")

    with daemon(world):
        await wait_for(lambda: world.query(
            "SELECT status, paused_by FROM campaigns WHERE id = ?", later) == [
                ("paused", "complaint-rate")], what="the scheduled campaign paused")
        await wait_for(lambda: f"reputation: {reason}" in status(world)[1]["reasons"],
                       what="the warning in the heartbeat")
        code, shown = status(world)
        text = run_cli(world.settings_path, "status")
        metric = complaint_rate_metric(world)

    assert code == 1
    assert f"campaign {later} paused: {reason}" in shown["reasons"]
    assert shown["paused_by_complaints"] == [{"id": later, "reason": f"paused: {reason}"}]
    assert shown["parts"]["reputation"]["complaint_rate_1d"] == "5.00%"
    assert text.code == 1
    assert f"  ! campaign {later} paused: {reason}" in text.stdout.splitlines()
    assert 'mailer_complaint_rate{window="1d"} 0.05' in metric.splitlines()
    assert 'mailer_complaint_rate{window="30d"} 0.05' in metric.splitlines()


async def test_complaints_from_dovecot_at_one_in_four_hundred_warn_and_pause_nothing(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world, later = await campaign_sent_and_one_scheduled(
        tmp_path, imap_server, smtp_sink, audience=400, min_sample=100)
    world.deliver(complaint(smtp_sink.messages[0], 1))
    warning = ("reputation: sender-wide complaint rate 0.25% over the last day "
               "(1 complaint / 400 sent)")

    with daemon(world):
        await wait_for(lambda: warning in status(world)[1]["reasons"],
                       what="the complaint-rate warning in `mailer status`")
        code, shown = status(world)
        metric = complaint_rate_metric(world)
        scheduled = world.query("SELECT status, paused_by FROM campaigns WHERE id = ?", later)

    assert code == 1
    assert shown["reasons"] == [warning]
    assert shown["paused_by_complaints"] == []
    assert scheduled == [("scheduled", "")]
    assert 'mailer_complaint_rate{window="1d"} 0.0025' in metric.splitlines()


async def test_no_complaint_is_healthy_with_a_rate_of_zero(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world, later = await campaign_sent_and_one_scheduled(
        tmp_path, imap_server, smtp_sink, audience=5, min_sample=1)

    with daemon(world):
        await wait_for(lambda: status(world)[1].get("parts", {}).get(
            "reputation", {}).get("complaint_rate_1d") == "0.00%",
            what="the reputation part's first round")
        code, shown = status(world)

    assert (code, shown["reasons"]) == (0, [])
    assert world.query("SELECT status FROM campaigns WHERE id = ?", later) == [("scheduled",)]
    assert 'mailer_complaint_rate{window="7d"} 0.0' in complaint_rate_metric(world).splitlines()


class GatedZone(Zone):
    """A zone whose server answers nothing until `gate` opens: DNS as slow as a test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.asked = threading.Event()

    def answer(self, name: str, rtype: str) -> tuple[bool, list[Any]]:
        self.asked.set()
        self.gate.wait()
        return super().answer(name, rtype)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    """The doctor world's DNS server, gated (this module's tests open the gate)."""
    zone = GatedZone()
    with DnsServer(zone) as server:
        try:
            yield server
        finally:
            zone.gate.set()  # free the server's threads so it can stop


@pytest.fixture
async def running(world: DoctorWorld) -> AsyncIterator[Daemon]:
    """The daemon in this event loop, on the doctor world's servers."""
    stop = asyncio.Event()
    daemon = Daemon(world.settings(), stop, timing=DaemonTiming(), metrics=Metrics(),
                    clock=SYSTEM_CLOCK)
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon
    finally:
        stop.set()
        await task


async def test_the_checks_at_start_wait_for_dns_beside_the_daemon_and_the_console_shows_them(
        world: DoctorWorld, running: Daemon) -> None:
    zone = world.zone
    assert isinstance(zone, GatedZone)
    zone.remove(DOMAIN, "MX")
    zone.remove(f"_dmarc.{DOMAIN}", "TXT")
    settings = world.settings()

    await wait_for(lambda: running.ready and zone.asked.is_set(),
                   what="READY=1 while the doctor waits for DNS")
    async with open_db(settings.database.path) as conn:
        before = await doctor_store.last_run(conn)
    zone.gate.set()

    async def kept() -> bool:
        async with open_db(settings.database.path) as conn:
            return await doctor_store.last_run(conn) is not None

    await wait_for(kept, what="the doctor's result kept")
    async with open_db(settings.database.path) as conn:
        last = await doctor_store.last_run(conn)
    await add_users(settings)
    client = await start_client(settings, FakeClock())
    try:
        assert await login(client, "marketing") == 303
        page = await (await client.get("/")).text()
    finally:
        await client.close()

    assert before is None
    assert last is not None
    assert [f.name for f in last.failures] == ["DMARC", "MX"]
    assert last.failed == 2
    assert (f"Last doctor result: {last.passed} pass, {last.warned} warn, 2 fail at "
            f'<time datetime="{last.ran_at}">') in page
    assert "<strong>DMARC</strong>: _dmarc.imperial.test: no DMARC record" in page
    assert "<th scope=\"row\">Last 30 days</th>" in page


async def test_a_daemon_stopped_while_dns_hangs_stops_without_waiting_for_the_doctor(
        world: DoctorWorld) -> None:
    zone = world.zone
    assert isinstance(zone, GatedZone)
    settings = world.settings()
    stop = asyncio.Event()
    daemon = Daemon(settings, stop, timing=DaemonTiming(), metrics=Metrics(),
                    clock=SYSTEM_CLOCK)
    task = asyncio.create_task(daemon.run())
    await wait_for(lambda: daemon.ready and zone.asked.is_set(),
                   what="READY=1 while the doctor waits for DNS")

    stop.set()
    await wait_for(task.done, what="the daemon to stop with DNS still silent")
    async with open_db(settings.database.path) as conn:
        kept = await doctor_store.last_run(conn)

    assert task.exception() is None
    assert not zone.gate.is_set()
    assert kept is None


async def test_a_campaign_sending_when_complaints_arrive_stops_part_way_paused_for_the_rate(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    world = await make_world(
        tmp_path, imap_server, smtp_sink, customers_csv(100),
        bounces={"address": BOUNCE_ADDRESS, "pause_min_sample": 10},
        smtp={"max_connections": 1},
        campaigns={"secret": SECRET, "unsubscribe_url": "https://imperial.test/unsubscribe",
                   "batch_size": 5})
    async with open_db(world.db_path) as conn:
        first = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="An offer")
        await send_campaign(conn, send_config(world.settings), first.id, stop=asyncio.Event())
        second = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="Another offer")
        # Due now: scheduled, held, and resumed (which schedules it for now).
        await service.schedule(conn, second.id, "2099-01-01T09:00:00")
        await service.pause(conn, second.id)
        await service.resume(conn, second.id)
    # Slow enough that the daemon is still sending the second campaign when the complaint
    # about the first one arrives (its pass is woken by IDLE).
    smtp_sink.delay_s = 0.5

    with daemon(world):
        await wait_for(lambda: len(smtp_sink.messages) > 101, what="the second campaign sending")
        world.deliver(complaint(smtp_sink.messages[0], 1))
        await wait_for(lambda: world.query(
            "SELECT status, paused_by FROM campaigns WHERE id = ?", second.id) == [
                ("paused", "complaint-rate")], what="the sending campaign paused")
        await wait_for(lambda: world.query(
            "SELECT count(*) FROM campaign_recipients WHERE campaign_id = ? "
            "AND status = 'sending'", second.id) == [(0,)], what="the sender to stop")
        sent = world.query("SELECT count(*) FROM campaign_recipients WHERE campaign_id = ? "
                           "AND status = 'sent'", second.id)

    assert 0 < int(str(sent[0][0])) < 100


async def test_a_complaint_read_from_the_bounces_mailbox_wakes_the_reputation_part(
        tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> None:
    mailbox = {"host": imap_server.host, "port": imap_server.port, "security": "none",
               "username": imap_server.username, "password": imap_server.password,
               "folder": "Reports", "idle_timeout_s": 60.0, "poll_interval_s": 1.0}
    world, later = await campaign_sent_and_one_scheduled(
        tmp_path, imap_server, smtp_sink, audience=20, min_sample=10)
    with world.raw() as raw:
        raw.command("CREATE Reports")
    settings = world.settings
    settings = replace(settings, bounces=replace(
        settings.bounces, imap=replace(settings.imap, **mailbox)))
    stop = asyncio.Event()
    # A round an hour apart: only the wake after the pass can pause within the test.
    running = Daemon(settings, stop, timing=DaemonTiming(reputation_poll_s=3600),
                     metrics=Metrics(), clock=SYSTEM_CLOCK)
    task = asyncio.create_task(running.run())
    try:
        await wait_for(lambda: running.reputation.part.state.last_success_at != "",
                       what="the reputation part's first round")
        world.deliver(complaint(smtp_sink.messages[0], 1), folder="Reports")
        await wait_for(lambda: world.query(
            "SELECT status, paused_by FROM campaigns WHERE id = ?", later) == [
                ("paused", "complaint-rate")], what="the scheduled campaign paused")
    finally:
        stop.set()
        await task
    assert world.query("SELECT count(*) FROM delivery_reports WHERE kind = 'complaint'") == [
        (1,)]
