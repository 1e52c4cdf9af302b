"""`evaluate` on several daemons' heartbeats, on data alone: CRITICAL only when none runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailer.health.status import CRITICAL, OK, WARNING, evaluate, render_text
from mailer.store.heartbeat import Heartbeat, InboxLease, Snapshot

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RUNNING = {"inbox": {"state": "running", "since": "2026-01-05T11:00:00+00:00"}}


def beat(host: str, pid: int, age_s: float, stopped: bool = False,
         parts: dict[str, dict[str, object]] | None = None) -> Heartbeat:
    at = (NOW - timedelta(seconds=age_s)).isoformat()
    return Heartbeat(host=host, pid=pid, started_at="2026-01-05T11:00:00+00:00",
                     version="0.1.0", beat_at=at, stopped_at=at if stopped else None,
                     parts=parts if parts is not None else RUNNING)


def decide(*beats: Heartbeat, here: str = "host-c", dead: frozenset[int] = frozenset(),
           lease: InboxLease | None = None) -> tuple[int, list[str], str]:
    snapshot = Snapshot(heartbeats=sorted(beats, key=lambda b: b.beat_at, reverse=True),
                        inbox_lease=lease)
    result = evaluate(snapshot, now=NOW, host=here, alive=lambda pid: pid not in dead)
    return result.code, list(result.reasons), render_text(result)


def test_two_hosts_beating_are_healthy_and_each_is_listed() -> None:
    code, reasons, text = decide(beat("host-a", 10, 2), beat("host-b", 20, 3))
    assert (code, reasons) == (OK, [])
    assert "daemon: pid 10 on host-a, running" in text
    assert "daemon: pid 20 on host-b, running" in text


def test_a_host_whose_heartbeat_went_stale_while_another_runs_is_a_warning() -> None:
    code, reasons, text = decide(beat("host-a", 10, 2), beat("host-b", 20, 90))
    assert (code, reasons) == (WARNING, ["host-b pid 20: heartbeat is 90 s old"])
    assert "daemon: pid 20 on host-b, stalled" in text


def test_a_host_stopped_cleanly_while_another_runs_is_healthy() -> None:
    code, reasons, _ = decide(beat("host-a", 10, 2), beat("host-b", 20, 600, stopped=True))
    assert (code, reasons) == (OK, [])


def test_the_old_row_of_a_restarted_daemon_is_history_not_a_host_down() -> None:
    code, reasons, text = decide(beat("host-a", 11, 2), beat("host-a", 10, 300),
                                 here="host-a", dead=frozenset({10}))
    assert (code, reasons) == (OK, [])
    assert "daemon: pid 10 " not in text
    assert "(1 earlier daemon not shown: `mailer status --json` lists every one)" in text


def test_a_host_down_for_more_than_a_day_is_listed_without_a_warning() -> None:
    code, reasons, _ = decide(beat("host-a", 10, 2), beat("host-b", 20, 2 * 86400))
    assert (code, reasons) == (OK, [])


def test_every_host_stale_is_critical_stalled_naming_each() -> None:
    result = evaluate(Snapshot(heartbeats=[beat("host-a", 10, 60), beat("host-b", 20, 90)]),
                      now=NOW, host="host-c")
    assert (result.code, result.label) == (CRITICAL, "stalled")
    assert list(result.reasons) == ["host-a pid 10: heartbeat is 60 s old",
                                    "host-b pid 20: heartbeat is 90 s old"]


def test_a_part_reconnecting_on_one_of_two_hosts_names_that_host() -> None:
    failing = {"inbox": {"state": "reconnecting", "since": "t", "last_error": "refused"}}
    code, reasons, _ = decide(beat("host-a", 10, 2), beat("host-b", 20, 2, parts=failing))
    assert (code, reasons) == (WARNING, ["host-b pid 20: inbox reconnecting since t: refused"])


def test_the_inbox_lease_holder_and_its_expiry_are_shown() -> None:
    lease = InboxLease(holder="ab12-pid10", host="host-a", pid=10,
                       expires_at=NOW.timestamp() + 25)
    _, _, text = decide(beat("host-a", 10, 2), lease=lease)
    assert "inbox lease: pid 10 on host-a (expires in 25 s, at 2026-01-05T12:00:25+00:00)" in text
    _, _, unheld = decide(beat("host-a", 10, 2))
    assert "inbox lease: held by no daemon" in unheld


def test_a_lease_read_from_postgresql_is_judged_by_the_database_clock_not_this_hosts() -> None:
    # This host's clock runs 20 s ahead of the database server's: the holder set the expiry
    # by the server's clock, so 25 s are left, not 5.
    lease = InboxLease(holder="ab12-pid10", host="host-a", pid=10,
                       expires_at=NOW.timestamp() + 5, judged_at=NOW.timestamp() - 20)
    _, _, text = decide(beat("host-a", 10, 2), lease=lease)
    assert "inbox lease: pid 10 on host-a (expires in 25 s," in text
