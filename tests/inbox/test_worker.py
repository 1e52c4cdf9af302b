"""The long-running worker: IDLE, reconnects after server trouble, kill -9, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailer.inbox.processor import PassReport
from mailer.inbox.worker import WatchTiming, watch
from mailer.lifecycle.supervise import Part
from mailer.store.db import open_db
from tests.helpers import DAEMON_SECRET, ROOT, dovecot_only
from tests.inbox.world import World, make_world
from tests.servers import DovecotServer, ImapTestServer, SmtpSink, sample_message
from tests.waiting import wait_for, wait_for_event

SUBJECT = "Unsubscribe special offers"


@pytest.fixture
async def world(tmp_path: Path, database: Path | str, imap_server: ImapTestServer,
                smtp_sink: SmtpSink
                ) -> AsyncIterator[World]:
    yield await make_world(tmp_path, imap_server, smtp_sink, database=database)


def request(sender: str) -> bytes:
    return sample_message(subject=SUBJECT, sender=sender, body="Please stop.\n")


class Watcher:
    def __init__(self, world: World, idle_timeout_s: float = 60.0,
                 part: Part | None = None) -> None:
        self.world = world
        self.part = part
        self.stop = asyncio.Event()
        self.passes: list[PassReport] = []
        self.idling = asyncio.Event()  # set while the worker waits in an accepted IDLE
        self.timing = WatchTiming(idle_timeout_s=idle_timeout_s, poll_interval_s=1.0)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        async def body() -> None:
            async with open_db(self.world.db_path) as conn:
                await watch(conn, self.world.imap, self.world.rules, self.timing, self.stop,
                            self.passes.append, part=self.part, idling=self.idling)
        self.task = asyncio.create_task(body())
        await wait_for(lambda: len(self.passes) >= 1, what="the worker's first pass")
        return self

    async def until_idling(self) -> None:
        await wait_for_event(self.idling, what="the worker to wait in IDLE")

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout=15)


async def test_idle_honours_a_request_soon_after_it_arrives(world: World) -> None:
    async with Watcher(world) as watcher:
        await watcher.until_idling()
        world.deliver(request("ann@example.com"))
        await wait_for(lambda: sum(p.unsubscribed for p in watcher.passes) == 1,
                       what="a pass honouring ann's request")
        assert world.opted_out() == {"ann@example.com"}
        # The second pass is the one IDLE woke: the IDLE timeout is a minute, and there is
        # no polling while the server offers IDLE.
        assert len(watcher.passes) == 2


async def test_idle_is_reissued_before_its_timeout_and_keeps_working(world: World) -> None:
    async with Watcher(world, idle_timeout_s=0.3) as watcher:
        await wait_for(lambda: len(watcher.passes) >= 4, what="four passes")
        world.deliver(request("bob@example.com"))
        await wait_for(lambda: world.opted_out() == {"bob@example.com"}, what="bob opted out")


async def test_server_restart_during_idle_is_survived(world: World) -> None:
    async with Watcher(world) as watcher:
        await watcher.until_idling()
        world.server.restart()
        world.deliver(request("carol@example.com"))
        await wait_for(lambda: world.opted_out() == {"carol@example.com"},
                       what="carol opted out")


async def test_server_down_for_a_while_is_survived(world: World) -> None:
    part = Part("inbox")
    async with Watcher(world, part=part):
        world.server.stop()
        # A while: the lost session and at least one reconnect that found nobody there.
        await wait_for(lambda: part.state.failures >= 2, what="a failed reconnect")
        world.server.start()
        world.deliver(request("dan@example.com"))
        await wait_for(lambda: world.opted_out() == {"dan@example.com"}, what="dan opted out")


async def test_the_watcher_reports_reconnecting_with_its_error_while_the_server_is_down(
    world: World,
) -> None:
    part = Part("inbox")
    async with Watcher(world, part=part) as watcher:
        assert part.state.state == "running"
        assert part.state.details["connected"] is True
        world.server.stop()
        await wait_for(lambda: part.state.state == "reconnecting", what="reconnecting")
        assert part.state.details["connected"] is False
        assert f"{world.server.host}:{world.server.port}" in part.state.last_error
        assert part.state.last_error_at
        passes = len(watcher.passes)
        world.server.start()
        await wait_for(lambda: part.state.state == "running", what="running again")
        assert len(watcher.passes) > passes
    assert part.state.state == "stopped"


def run_process(world: World) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), "inbox",
         "process", "--json"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_kill_9_at_any_point_loses_no_request_and_repeats_no_change(world: World) -> None:
    customers = ["ann@example.com", "bob@example.com", "carol@example.com", "dan@example.com",
                 "eve@example.com", "frank@example.com", "grace@example.com", "zoe@example.com"]
    messages = []
    for i in range(160):
        if i % 2:
            messages.append(sample_message(subject=f"other {i}"))
        else:
            messages.append(request(customers[(i // 2) % len(customers)]))
    world.deliver(*messages)

    # Kill the worker at a spread of moments, each time before it can finish.
    for delay_s in (0.3, 0.5, 0.7, 0.9, 1.1, 1.3):
        process = run_process(world)
        await asyncio.sleep(delay_s)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    final = run_process(world)
    assert final.wait(timeout=120) == 0

    assert world.opted_out() == set(customers)
    # Each customer's two preferences changed exactly once, whatever was interrupted.
    assert world.query(
        "SELECT count(*), count(DISTINCT customer_id || category) FROM consent_events "
        "WHERE source = 'email'") == [(16, 16)]
    assert len(world.folder_subjects("INBOX")) == 80
    assert len(world.folder_subjects("Processed")) == 80
    assert world.folder_subjects("Review") == []
    # One confirmation per customer, however many attempts were killed mid-way.
    assert world.query("SELECT count(*) FROM outbox WHERE status = 'pending' OR "
                       "status = 'sent'") == [(len(customers),)]


async def test_mailer_run_stops_cleanly_on_sigterm(world: World) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), "run"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "MAILER_SECRET": DAEMON_SECRET})
    try:
        world.deliver(request("grace@example.com"))
        await wait_for(lambda: world.opted_out() == {"grace@example.com"},
                       what="grace opted out")
        await wait_for(lambda: len(world.sink.messages) == 1, what="grace's confirmation")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


@dovecot_only
async def test_a_server_without_idle_is_polled(
    tmp_path: Path, database: Path | str, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailer.inbox.worker")
    with DovecotServer(without_idle=True) as server:
        world = await make_world(tmp_path, server, smtp_sink, database=database)
        async with Watcher(world):
            world.deliver(request("eve@example.com"))
            await wait_for(lambda: world.opted_out() == {"eve@example.com"},
                           what="eve opted out")
    assert any("(polling)" in record.getMessage() for record in caplog.records)
