"""How the daemon is, from its heartbeat, in the monitoring-plugins convention (the exit
codes Nagios, Icinga and their kin read from a check):

`gather` reads the heartbeat and the queues beside it from the database (read-only) and
`evaluate` decides, on data alone:

    2 CRITICAL  not running: no database, no heartbeat ever, the last daemon stopped cleanly,
                or its pid is gone on this host (a kill -9 leaves a heartbeat behind);
                stalled: the heartbeat is older than `STALE_AFTER_S` (a hung loop, or a
                database it cannot write)
    1 WARNING   degraded: a part is reconnecting or stopped, or reports a warning (the
                sender-wide complaint rate of the last day at 0.1% or more), or a campaign is
                paused because of its settings or that complaint rate (it waits for a person)
    0 OK        healthy: otherwise
    3 UNKNOWN   the state cannot be found out: bad settings, a database that cannot be read
                (`mailer status` exits 3 on any error: `mailer.cli.support.MonitoringCommand`)

`mailer status`, `/healthz` and monitoring all use this one decision.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.instance import instance_name
from mailer.store.db import Location
from mailer.store.heartbeat import Snapshot, read_snapshot

# The monitoring-plugins codes: OK, WARNING, CRITICAL (UNKNOWN, 3, is an error's).
HEALTHY, DEGRADED, NOT_RUNNING = 0, 1, 2
OK, WARNING, CRITICAL = HEALTHY, DEGRADED, NOT_RUNNING
LABELS = {HEALTHY: "healthy", DEGRADED: "degraded", NOT_RUNNING: "not running"}
STALLED = "stalled"  # CRITICAL too: a daemon that is there but makes no progress
# The daemon beats every HEARTBEAT_INTERVAL_S (mailer.daemon); three missed beats and more
# is a daemon that is alive but not making progress.
HEARTBEAT_INTERVAL_S = 5.0
STALE_AFTER_S = 30.0


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


def evaluate(
    snapshot: Snapshot | None,
    *,
    now: datetime,
    host: str,
    alive: Callable[[int], bool] = pid_alive,
    stale_after_s: float = STALE_AFTER_S,
) -> Status:
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
    }
    beat = snapshot.heartbeat
    if beat is None:
        return Status(NOT_RUNNING, ("no daemon has run on this database",),
                      {"daemon": None, **queues})
    age_s = max(0.0, (now - datetime.fromisoformat(beat.beat_at)).total_seconds())
    daemon = {"host": beat.host, "pid": beat.pid, "started_at": beat.started_at,
              "version": beat.version, "heartbeat_at": beat.beat_at,
              "heartbeat_age_s": round(age_s, 1), "stopped_at": beat.stopped_at}
    data = {"daemon": daemon, "parts": beat.parts, **queues}
    if beat.stopped_at:
        return Status(NOT_RUNNING, (f"stopped at {beat.stopped_at}",), data)
    if beat.host == host and not alive(beat.pid):
        return Status(NOT_RUNNING, (f"pid {beat.pid} is not running on {host}",), data)
    if age_s > stale_after_s:
        return Status(CRITICAL, (f"heartbeat is {age_s:.0f} s old",), data, STALLED)
    reasons = []
    for name, part in sorted(beat.parts.items()):
        if part.get("state") in ("reconnecting", "stopped"):
            error = part.get("last_error") or "no error recorded"
            reasons.append(f"{name} {part['state']} since {part.get('since')}: {error}")
        elif part.get("warning"):
            reasons.append(f"{name}: {part['warning']}")
    for paused in (*snapshot.paused_by_settings, *snapshot.paused_by_complaints):
        reasons.append(f"campaign {paused.id} {paused.reason}")
    return Status(WARNING if reasons else OK, tuple(reasons), data)


async def gather(db_location: Location, clock: Clock = SYSTEM_CLOCK,
                 stale_after_s: float = STALE_AFTER_S) -> Status:
    """Read and evaluate; raises StoreError (exit 3) if the database cannot be read."""
    return evaluate(await read_snapshot(db_location), now=clock.now(), host=instance_name(),
                    stale_after_s=stale_after_s)


def render_text(status: Status) -> str:
    """The human form of `mailer status`."""
    lines = [f"mailer: {status.label}"]
    daemon = status.data.get("daemon")
    if daemon:
        lines.append(f"  daemon: pid {daemon['pid']} on {daemon['host']}, version "
                     f"{daemon['version']}, started {daemon['started_at']}, heartbeat "
                     f"{daemon['heartbeat_age_s']:g} s ago")
    for reason in status.reasons:
        lines.append(f"  ! {reason}")
    for name, part in sorted(status.data.get("parts", {}).items()):
        extra = "".join(f", {k} {v}" for k, v in sorted(part.items())
                        if k not in ("state", "since", "last_error", "last_error_at",
                                     "failures", "warning") and v not in ("", None))
        lines.append(f"  {name}: {part.get('state')} since {part.get('since')}{extra}")
        if part.get("last_error"):
            lines.append(f"    last error at {part.get('last_error_at')}: {part['last_error']}")
    if "outbox_depth" in status.data:
        lines.append(f"  outbox: {status.data['outbox_depth']} waiting; review queue: "
                     f"{status.data['review_open']} open")
    for c in status.data.get("campaigns", []):
        lines.append(f"  campaign {c['id']} ({c['kind']}): {c['sent']}/{c['total']} sent, "
                     f"{c['rate_per_s']:g}/s")
    return "\n".join(lines)
