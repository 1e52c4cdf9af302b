"""The doctor's results the daemon keeps: the DNS and message checks it runs at start, one
row per run, so the console shows the last one (how many passed, warned, failed, and each
failure with its fix) whichever process reads it and after a restart.

Only the counts and the failures are kept: a pass needs no fix, and `mailer doctor` shows
everything on demand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from mailer.store.db import transaction
from mailer.store.edge import translated
from mailer.store.engine import Connection

# Runs older than the newest few are pruned as a new one is recorded: only the last is shown.
_KEEP = 10


@dataclass(frozen=True)
class Failure:
    name: str
    found: str
    fix: str


@dataclass(frozen=True)
class DoctorRun:
    ran_at: str  # ISO 8601 UTC
    passed: int
    warned: int
    failed: int
    failures: tuple[Failure, ...]


@translated("doctor: record a run")
async def record_run(conn: Connection, run: DoctorRun) -> None:
    """Keep `run`, and prune the old ones, in one transaction."""
    async with transaction(conn, "doctor: record a run"):
        await conn.execute(
            "INSERT INTO doctor_runs (ran_at, passed, warned, failed, failures) "
            "VALUES (?, ?, ?, ?, ?)",
            (run.ran_at, run.passed, run.warned, run.failed,
             json.dumps([asdict(f) for f in run.failures])))
        await conn.execute(
            "DELETE FROM doctor_runs WHERE id NOT IN "
            "(SELECT id FROM doctor_runs ORDER BY id DESC LIMIT ?)", (_KEEP,))


@translated("doctor: last run")
async def last_run(conn: Connection) -> DoctorRun | None:
    async with conn.execute(
        "SELECT ran_at, passed, warned, failed, failures FROM doctor_runs "
        "ORDER BY id DESC LIMIT 1"
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return DoctorRun(ran_at=str(row[0]), passed=int(row[1]), warned=int(row[2]),
                     failed=int(row[3]),
                     failures=tuple(Failure(**f) for f in json.loads(row[4])))
