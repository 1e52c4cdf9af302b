"""How the daemons are, from their heartbeats, in the monitoring-plugins convention (the exit
codes Nagios, Icinga and their kin read from a check):

`gather` reads every daemon's heartbeat (one row per instance: host and pid; several hosts may
share one database), the holder of the inbox lease and the queues from the database (without
writing) and `evaluate` decides, on data alone:

    2 CRITICAL  no daemon running: no database, no heartbeat ever, every daemon stopped
                cleanly, or its pid is gone on this host (a kill -9 leaves a heartbeat behind);
                stalled: no daemon running and a heartbeat older than `STALE_AFTER_S` (a hung
                loop, a host gone, or a database it cannot write)
    1 WARNING   degraded: a running daemon's part is reconnecting or stopped, or reports a
                warning (the sender-wide complaint rate of the last day at 0.1% or more); a host
                that stopped answering (stalled or gone, not stopped cleanly, within a day)
                while another runs; or a campaign is paused because of its settings or that
                complaint rate (it waits for a person)
    0 OK        healthy: otherwise
    3 UNKNOWN   the state cannot be found out: bad settings, a database that cannot be read
                (`mailer status` exits 3 on any error: `mailer.cli.support.MonitoringCommand`)

`mailer status`, `/healthz` and monitoring all use this one decision.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.instance import instance_name
from mailer.store.db import Location
from mailer.store.heartbeat import Heartbeat, InboxLease, Snapshot, read_snapshot
from mailer.wording import plural

# The monitoring-plugins codes: OK, WARNING, CRITICAL (UNKNOWN, 3, is an error's).
HEALTHY, DEGRADED, NOT_RUNNING = 0, 1, 2
OK, WARNING, CRITICAL = HEALTHY, DEGRADED, NOT_RUNNING
LABELS = {HEALTHY: "healthy", DEGRADED: "degraded", NOT_RUNNING: "not running"}
STALLED = "stalled"  # CRITICAL too: a daemon that is there but makes no progress
# The daemon beats every HEARTBEAT_INTERVAL_S (mailer.daemon); three missed beats and more
# is a daemon that is alive but not making progress.
HEARTBEAT_INTERVAL_S = 5.0
STALE_AFTER_S = 30.0
# A host whose daemon stopped answering while others run warns for a day after its last
# heartbeat; after that it is taken to be out of service and only listed (its row goes after
# a week).
DOWN_WARNING_S = 24 * 3600.0


@dataclass(frozen=True)
class Status:
    code: int
    reasons: tuple[str, ...]
    data: dict[str, Any]
    # What the code means here: "healthy", "degraded", "not running" or "stalled".
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or LABELS[self.code]

    def as_json(self) -> dict[str, Any]:
        return {"status": self.label, "code": self.code, "reasons": list(self.reasons),
                **self.data}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _instance(beat: Heartbeat, *, now: datetime, host: str, alive: Callable[[int], bool],
              stale_after_s: float) -> dict[str, Any]:
    """One daemon's row as `mailer status` shows it, with its state: running, stopped (cleanly),
    gone (its pid is not running on this host: a crash or kill -9) or stalled (its heartbeat is
    older than `stale_after_s`: hung, killed on another host, or cut off from the database)."""
    age_s = max(0.0, (now - datetime.fromisoformat(beat.beat_at)).total_seconds())
    if beat.stopped_at:
        state = "stopped"
    elif beat.host == host and not alive(beat.pid):
        state = "gone"
    elif age_s > stale_after_s:
        state = STALLED
    else:
        state = "running"
    return {"host": beat.host, "pid": beat.pid, "state": state, "started_at": beat.started_at,
            "version": beat.version, "heartbeat_at": beat.beat_at,
            "heartbeat_age_s": round(age_s, 1), "stopped_at": beat.stopped_at,
            "parts": beat.parts}


def _down_reason(instance: dict[str, Any], *, named: bool) -> str:
    where = f"{instance['host']} pid {instance['pid']}: " if named else ""
    if instance["state"] == "stopped":
        return f"{where}stopped at {instance['stopped_at']}"
    if instance["state"] == "gone":
        return f"pid {instance['pid']} is not running on {instance['host']}"
    return f"{where}heartbeat is {instance['heartbeat_age_s']:.0f} s old"


def _inbox(lease: InboxLease | None, now: datetime) -> dict[str, Any] | None:
    if lease is None:
        return None
    judged_at = now.timestamp() if lease.judged_at is None else lease.judged_at
    expires_in_s = lease.expires_at - judged_at
    return {"holder": lease.holder, "host": lease.host, "pid": lease.pid,
            "expires_at": datetime.fromtimestamp(lease.expires_at, UTC).isoformat(
                timespec="seconds"),
            "expires_in_s": round(expires_in_s, 1), "expired": expires_in_s <= 0}


def evaluate(
    snapshot: Snapshot | None,
    *,
    now: datetime,
    host: str,
    alive: Callable[[int], bool] = pid_alive,
    stale_after_s: float = STALE_AFTER_S,
) -> Status:
    """The status of every daemon on the database, as one monitoring answer: CRITICAL only
    when no daemon runs; a host that stopped answering while others run is a WARNING."""
    if snapshot is None:
        return Status(NOT_RUNNING, ("no database yet",), {"daemon": None})
    queues: dict[str, Any] = {
        "outbox_depth": snapshot.outbox_depth,
        "review_open": snapshot.review_open,
        "campaigns": [{"id": c.id, "kind": c.kind, "sent": c.sent, "total": c.total,
                       "rate_per_s": c.rate_per_s} for c in snapshot.campaigns],
        "paused_by_settings": [{"id": c.id, "reason": c.reason}
                               for c in snapshot.paused_by_settings],
        "paused_by_complaints": [{"id": c.id, "reason": c.reason}
                                 for c in snapshot.paused_by_complaints],
        "inbox": _inbox(snapshot.inbox_lease, now),
    }
    if not snapshot.heartbeats:
        return Status(NOT_RUNNING, ("no daemon has run on this database",),
                      {"daemon": None, "instances": [], **queues})
    instances = [_instance(beat, now=now, host=host, alive=alive, stale_after_s=stale_after_s)
                 for beat in snapshot.heartbeats]
    running = [i for i in instances if i["state"] == "running"]
    hosts_up = {i["host"] for i in running}
    # A row of a host that runs a daemon again (restarted) is history, not a host down; a
    # host down for a day is taken to be out of service and only listed.
    down = [i for i in instances if i["state"] in ("gone", STALLED)
            and i["host"] not in hosts_up and i["heartbeat_age_s"] <= DOWN_WARNING_S]
    for i in instances:
        i["replaced"] = i["state"] != "running" and i["host"] in hosts_up
    main = running[0] if running else instances[0]
    daemon = {k: v for k, v in main.items() if k not in ("parts", "state", "replaced")}
    data = {"daemon": daemon, "parts": main["parts"], "instances": instances, **queues}
    if not running:
        named = len(instances) > 1
        if any(i["state"] == STALLED for i in instances):
            stalled = [i for i in instances if i["state"] == STALLED]
            return Status(CRITICAL, tuple(_down_reason(i, named=named) for i in stalled), data,
                          STALLED)
        return Status(NOT_RUNNING, (_down_reason(main, named=False),), data)
    reasons = []
    for instance in running:
        where = f"{instance['host']} pid {instance['pid']}: " if len(running) > 1 else ""
        for name, part in sorted(instance["parts"].items()):
            if part.get("state") in ("reconnecting", "stopped"):
                error = part.get("last_error") or "no error recorded"
                reasons.append(f"{where}{name} {part['state']} since {part.get('since')}: "
                               f"{error}")
            elif part.get("warning"):
                reasons.append(f"{where}{name}: {part['warning']}")
    reasons.extend(_down_reason(i, named=True) for i in down)
    for paused in (*snapshot.paused_by_settings, *snapshot.paused_by_complaints):
        reasons.append(f"campaign {paused.id} {paused.reason}")
    return Status(WARNING if reasons else OK, tuple(reasons), data)


async def gather(db_location: Location, clock: Clock = SYSTEM_CLOCK,
                 stale_after_s: float = STALE_AFTER_S) -> Status:
    """Read and evaluate; raises StoreError (exit 3) if the database cannot be read."""
    return evaluate(await read_snapshot(db_location), now=clock.now(), host=instance_name(),
                    stale_after_s=stale_after_s)


def render_text(status: Status) -> str:
    """The human form of `mailer status`: the verdict and its reasons, then every daemon with
    its parts, who holds the inbox, and the queues."""
    lines = [f"mailer: {status.label}"]
    for reason in status.reasons:
        lines.append(f"  ! {reason}")
    instances = status.data.get("instances", [])
    # Each running daemon, and the latest row of each host that runs none; the rows of
    # daemons since restarted on their host (kept a week) are only counted.
    shown, hosts = [], set()
    for i in instances:
        if i["state"] == "running" or (not i.get("replaced") and i["host"] not in hosts):
            shown.append(i)
            hosts.add(i["host"])
    for i in shown:
        lines.append(f"  daemon: pid {i['pid']} on {i['host']}, {i['state']}, version "
                     f"{i['version']}, started {i['started_at']}, heartbeat "
                     f"{i['heartbeat_age_s']:g} s ago")
        if i["state"] == "running":
            lines.extend(_parts_text(i["parts"]))
    if len(instances) > len(shown):
        hidden = plural(len(instances) - len(shown), "earlier daemon")
        lines.append(f"  ({hidden} not shown: `mailer status --json` lists every one)")
    inbox = status.data.get("inbox")
    if inbox:
        held = "expired" if inbox["expired"] else f"expires in {inbox['expires_in_s']:g} s"
        lines.append(f"  inbox lease: pid {inbox['pid']} on {inbox['host']} ({held}, at "
                     f"{inbox['expires_at']})")
    elif instances:
        lines.append("  inbox lease: held by no daemon")
    if "outbox_depth" in status.data:
        lines.append(f"  outbox: {status.data['outbox_depth']} waiting; review queue: "
                     f"{status.data['review_open']} open")
    for c in status.data.get("campaigns", []):
        lines.append(f"  campaign {c['id']} ({c['kind']}): {c['sent']}/{c['total']} sent, "
                     f"{c['rate_per_s']:g}/s")
    return "\n".join(lines)


def _parts_text(parts: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, part in sorted(parts.items()):
        extra = "".join(f", {k} {v}" for k, v in sorted(part.items())
                        if k not in ("state", "since", "last_error", "last_error_at",
                                     "failures", "warning") and v not in ("", None))
        lines.append(f"    {name}: {part.get('state')} since {part.get('since')}{extra}")
        if part.get("last_error"):
            lines.append(f"      last error at {part.get('last_error_at')}: {part['last_error']}")
    return lines
