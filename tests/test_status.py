"""`mailer status`, /healthz and /metrics: what an operator and monitoring can ask the daemon."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailer.mail import tokens
from mailer.public.app import route_prefix
from mailer.store.db import MIGRATIONS
from mailer.store.heartbeat import read_snapshot
from tests.daemon_world import daemon, daemon_log, request, status
from tests.dbrows import execute
from tests.helpers import DAEMON_SECRET, base_sections, run_cli, write_settings
from tests.inbox.world import World, make_world
from tests.postgres import PostgresServer
from tests.servers import ImapTestServer, SmtpSink, free_port
from tests.waiting import wait_for


@pytest.fixture
async def world(tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
                database: Path | str) -> AsyncIterator[World]:
    yield await make_world(tmp_path, imap_server, smtp_sink, database=database)


def test_status_where_no_daemon_ever_ran_says_not_running_with_exit_2(tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    result = run_cli(settings, "status")
    assert (result.code, result.stderr) == (2, "")
    assert result.stdout.startswith("mailer: not running")
    assert not (tmp_path / "mailer.db").exists()  # status never creates a database


async def test_status_of_a_database_no_daemon_has_run_on_is_not_running(world: World) -> None:
    code, data = status(world)
    assert code == 2
    assert data["status"] == "not running"
    assert data["reasons"] == ["no daemon has run on this database"]


async def test_a_running_daemon_is_healthy_then_not_running_after_sigterm(world: World) -> None:
    with daemon(world) as process:
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
        world.deliver(request("ann@example.com"))
        await wait_for(lambda: world.opted_out() == {"ann@example.com"}, what="ann opted out")
        code, data = status(world)
        assert data["daemon"]["pid"] == process.pid
        assert data["daemon"]["version"] == "0.1.0"
        assert data["daemon"]["stopped_at"] is None
        assert set(data["parts"]) == {"inbox", "outbox", "campaigns", "reputation",
                                      "housekeeping"}
        assert {p["state"] for p in data["parts"].values()} == {"running"}
        assert data["parts"]["inbox"]["connected"] is True
        assert data["parts"]["inbox"]["last_pass_at"]
        assert data["outbox_depth"] in (0, 1)
        assert data["review_open"] == 0
        text = run_cli(world.settings_path, "status")
        assert text.stdout.startswith("mailer: healthy")
        assert f"pid {process.pid}" in text.stdout
    assert process.returncode == 0
    code, data = status(world)
    assert code == 2
    assert data["reasons"][0].startswith("stopped at ")


async def test_a_daemon_killed_with_sigkill_is_seen_as_not_running(world: World) -> None:
    with daemon(world) as process:
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    code, data = status(world)
    assert code == 2
    assert data["reasons"] == [f"pid {process.pid} is not running on {data['daemon']['host']}"]


async def test_a_stale_heartbeat_is_critical(world: World) -> None:
    with daemon(world):
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
    # The row a daemon would leave had it hung: its pid alive (ours), its beat long ago.
    execute(world.db_path, "UPDATE daemon_heartbeat SET stopped_at = NULL, pid = ?, host = ?, "
            "beat_at = '2000-01-01T00:00:00+00:00'", (os.getpid(), socket.gethostname()))
    code, data = status(world)
    assert code == 2
    assert data["status"] == "stalled"
    assert data["reasons"][0].startswith("heartbeat is ")
    assert run_cli(world.settings_path, "status").stdout.startswith("mailer: stalled")


async def test_a_campaign_paused_by_its_settings_is_a_warning(world: World) -> None:
    # No [campaigns] unsubscribe_url: the daemon starts (campaigns may never be sent), and a
    # campaign that comes due waits, paused, for a person to set it.
    created = run_cli(world.settings_path, "campaign", "create", "--kind", "offers",
                      "--template", "welcome-offer", "--subject", "An offer")
    assert created.code == 0, created.stderr
    campaign_id = int(created.stdout)
    execute(world.db_path, "UPDATE campaigns SET status = 'scheduled', "
            "scheduled_at = '2000-01-01T00:00:00+00:00' WHERE id = ?", (campaign_id,))
    with daemon(world):
        await wait_for(lambda: status(world)[0] == 1, what="mailer status to exit 1")
        code, data = status(world)
        assert code == 1
        assert {p["state"] for p in data["parts"].values()} == {"running"}
        assert [c["id"] for c in data["paused_by_settings"]] == [campaign_id]
        assert data["reasons"] == [f"campaign {campaign_id} paused: cannot send: "
                                   "[campaigns] unsubscribe_url: missing; every campaign "
                                   "message must carry a one-click unsubscribe link"]
        text = run_cli(world.settings_path, "status")
        assert (text.code, text.stdout.splitlines()[0]) == (1, "mailer: degraded")


def test_status_with_bad_settings_is_unknown_exit_3(tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "settings.toml",
                              base_sections(tmp_path, imap={"port": "imap"}))
    result = run_cli(settings, "status")
    assert (result.code, result.stdout) == (3, "")
    assert result.stderr.startswith("mailer: settings: [imap] port: ")
    missing = run_cli(tmp_path / "absent.toml", "status")
    assert missing.code == 3
    assert "cannot read settings file" in missing.stderr


def test_status_of_a_database_that_cannot_be_read_is_unknown_exit_3(tmp_path: Path) -> None:
    (tmp_path / "mailer.db").write_bytes(b"not a database, but a file of that name" * 100)
    settings = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    result = run_cli(settings, "status")
    assert result.code == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mailer: cannot read database {tmp_path / 'mailer.db'}")


async def test_a_campaign_in_progress_is_shown_with_sent_of_total(world: World) -> None:
    env = {"MAILER_SECRET": "s"}
    created = run_cli(world.settings_path, "campaign", "create", "--kind", "offers",
                      "--template", "welcome-offer", "--subject", "An offer", env=env)
    assert created.code == 0, created.stderr
    campaign_id = int(created.stdout)
    execute(world.db_path, "UPDATE campaigns SET status = 'sending' WHERE id = ?",
            (campaign_id,))
    execute(world.db_path, "INSERT INTO campaign_recipients (campaign_id, customer_id, status) "
            "SELECT ?, id, CASE WHEN id <= 3 THEN 'sent' ELSE 'pending' END "
            "FROM customers", (campaign_id,))
    _, data = status(world)
    assert data["campaigns"] == [{"id": campaign_id, "kind": "offers", "sent": 3,
                                  "total": 10, "rate_per_s": 0}]


def post_status(request: urllib.request.Request) -> int:
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


async def test_healthz_metrics_and_the_full_health_are_served_when_http_is_configured(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink, database: Path | str
) -> None:
    port = free_port()
    world = await make_world(tmp_path, imap_server, smtp_sink,
                             http={"host": "127.0.0.1", "port": port}, database=database)
    base = f"http://127.0.0.1:{port}"
    # A campaign the ledger shows sent to Carol: the link followed below came in it.
    created = run_cli(world.settings_path, "campaign", "create", "--kind", "offers",
                      "--template", "welcome-offer", "--subject", "An offer",
                      env={"MAILER_SECRET": DAEMON_SECRET})
    assert created.code == 0, created.stderr
    campaign_id = int(created.stdout)
    execute(world.db_path, "INSERT INTO campaign_recipients (campaign_id, customer_id, status) "
            "SELECT ?, id, 'sent' FROM customers WHERE email = 'carol@example.com'",
            (campaign_id,))
    with daemon(world):
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
        world.deliver(request("bob@example.com"))
        await wait_for(lambda: len(smtp_sink.messages) == 1, what="bob's confirmation")
        await wait_for(lambda: b'mailer_confirmations_sent_total 1.0' in get(
            base + "/metrics")[1], what="the confirmations counter in /metrics")
        assert get(base + "/healthz") == (200, b"ok\n")
        code, body = get(base + "/healthz?full")
        assert code == 200
        health: dict[str, Any] = json.loads(body)
        assert health["status"] == "healthy"
        assert "web" in health["parts"]
        metrics = get(base + "/metrics")[1].decode()
        assert 'mailer_requests_honoured_total{source="email"} 1.0' in metrics
        assert "mailer_imap_reconnects_total 0.0" in metrics
        assert "mailer_inbox_pass_duration_seconds_count" in metrics
        assert "mailer_inbox_last_successful_pass_timestamp_seconds" in metrics
        secret = DAEMON_SECRET  # MAILER_SECRET of the daemon (tests.daemon_world)
        [(carol,)] = world.query("SELECT id FROM customers WHERE email = 'carol@example.com'")
        one_click = urllib.request.Request(
            f"{base}{route_prefix(world.settings.campaigns.unsubscribe_url)}/"
            f"{tokens.campaign_token(secret, int(str(carol)), campaign_id)}",
            data=b"List-Unsubscribe=One-Click", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert await asyncio.to_thread(lambda: post_status(one_click)) == 200
        metrics = get(base + "/metrics")[1].decode()
        assert 'mailer_requests_honoured_total{source="one-click"} 1.0' in metrics
        imap_server.stop()
        await wait_for(lambda: get(base + "/healthz?full")[0] == 503,
                       what="/healthz?full to say 503")
        # The unsubscribe link does not need IMAP: a proxy checking /healthz keeps it online.
        assert get(base + "/healthz") == (200, b"ok\n")
        imap_server.start()
        await wait_for(lambda: get(base + "/healthz?full")[0] == 200,
                       what="/healthz?full to say 200 again")
        assert "mailer_imap_reconnects_total 0.0" not in get(base + "/metrics")[1].decode()


async def test_json_logs_are_one_object_a_line_with_ids_and_no_addresses(world: World) -> None:
    with daemon(world, "--log-format", "json", "--log-level", "info"):
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
        world.deliver(request("carol@example.com"))
        await wait_for(lambda: len(world.sink.messages) == 1, what="carol's confirmation")
    lines = daemon_log(world).splitlines()
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["logger"] == "mailer.inbox.processor" and "customers [" in e["message"]
               for e in entries)
    assert "carol@example.com" not in daemon_log(world)


async def test_log_format_and_level_come_from_the_settings_file(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink,
                             log={"format": "json", "level": "warning"})
    imap_server.stop()  # a warning to log
    with daemon(world):
        await wait_for(lambda: status(world)[0] == 1, what="mailer status to exit 1")
    entries = [json.loads(line) for line in daemon_log(world).splitlines()]
    assert entries
    assert {e["level"] for e in entries} == {"warning"}
    assert any(e["logger"] == "mailer.lifecycle.supervise" and e["message"].startswith("inbox: ")
               for e in entries)


async def test_a_database_newer_than_the_code_is_refused_with_one_line(world: World) -> None:
    execute(world.db_path, "PRAGMA user_version = 99" if isinstance(world.db_path, Path)
            else "UPDATE schema_version SET version = 99")
    for command in (("status",), ("inbox", "process"), ("db", "check"), ("db", "migrate")):
        result = run_cli(world.settings_path, *command)
        assert result.code == 3, command
        assert result.stderr.endswith(f"is newer than this mailer ({len(MIGRATIONS)})\n")
        assert "database schema version 99" in result.stderr
        assert len(result.stderr.splitlines()) == 1


async def test_two_instances_on_one_database_are_both_shown_and_one_down_is_a_warning(
        world: World) -> None:
    with daemon(world, env={"MAILER_INSTANCE": "host-a"}) as a, \
            daemon(world, env={"MAILER_INSTANCE": "host-b"}) as b:
        await wait_for(lambda: status(world)[0] == 0
                       and len(status(world)[1]["instances"]) == 2, what="two healthy daemons")
        _, data = status(world)
        assert {(i["host"], i["pid"], i["state"]) for i in data["instances"]} == {
            ("host-a", a.pid, "running"), ("host-b", b.pid, "running")}
        # One of them reads the inbox; the other stands by.
        await wait_for(lambda: status(world)[1]["inbox"] is not None, what="an inbox lease")
        _, data = status(world)
        holder = (data["inbox"]["host"], data["inbox"]["pid"])
        assert holder in {("host-a", a.pid), ("host-b", b.pid)}
        assert data["inbox"]["expired"] is False
        text = run_cli(world.settings_path, "status").stdout
        assert f"daemon: pid {a.pid} on host-a, running" in text
        assert f"daemon: pid {b.pid} on host-b, running" in text
        assert f"inbox lease: pid {holder[1]} on {holder[0]} (expires in " in text
        b.send_signal(signal.SIGKILL)
        b.wait(timeout=30)
        # Asked on host B, whose pid is gone: host A still runs, so a warning, not critical.
        seen_on_b = run_cli(world.settings_path, "status", "--json",
                            env={"MAILER_INSTANCE": "host-b"})
        assert seen_on_b.code == 1, seen_on_b.stdout
        assert json.loads(seen_on_b.stdout)["reasons"] == [
            f"pid {b.pid} is not running on host-b"]
    # Host A stopped cleanly, host B's pid is gone: nothing runs.
    seen_on_b = run_cli(world.settings_path, "status", "--json", env={"MAILER_INSTANCE": "host-b"})
    data = json.loads(seen_on_b.stdout)
    assert seen_on_b.code == 2
    assert data["reasons"][0].startswith("stopped at ")
    assert data["daemon"]["host"] == "host-a"


async def test_status_names_the_daemon_holding_the_inbox_lease(world: World) -> None:
    execute(world.db_path, "INSERT INTO leases (name, holder, host, pid, expires_at) "
            "VALUES ('inbox', 'f00d-pid42', 'host-a', 42, 4102444800)")
    code, data = status(world)
    assert code == 2  # no daemon has run: the lease alone runs nothing
    assert data["inbox"] == {"holder": "f00d-pid42", "host": "host-a", "pid": 42,
                             "expires_at": "2100-01-01T00:00:00+00:00",
                             "expires_in_s": data["inbox"]["expires_in_s"], "expired": False}
    snapshot = await read_snapshot(world.db_path)
    assert snapshot is not None and snapshot.inbox_lease is not None
    # On PostgreSQL the lease is judged by the server's clock (the one its holder set it by).
    judged_at = snapshot.inbox_lease.judged_at
    if isinstance(world.db_path, str):
        assert judged_at is not None and abs(judged_at - time.time()) < 60
    else:
        assert judged_at is None


async def test_status_of_an_empty_postgresql_database_is_not_running(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    settings = write_settings(tmp_path / "settings.toml",
                              base_sections(tmp_path, database={"url": url}))
    result = run_cli(settings, "status")
    assert (result.code, result.stderr) == (2, "")
    assert result.stdout.splitlines()[:2] == ["mailer: not running", "  ! no database yet"]
    # The URL from the environment instead of the file, as a unit's environment file gives it.
    plain = write_settings(tmp_path / "plain.toml", base_sections(tmp_path))
    from_env = run_cli(plain, "status", env={"MAILER_DATABASE_URL": url})
    assert from_env.stdout == result.stdout
    assert not (tmp_path / "mailer.db").exists()
    gone = write_settings(tmp_path / "gone.toml", base_sections(
        tmp_path, database={"url": postgres_server.url("no_such_database")}))
    unreadable = run_cli(gone, "status")
    assert unreadable.code == 3
    (line,) = unreadable.stderr.splitlines()
    assert line.startswith("mailer: cannot open database ")
