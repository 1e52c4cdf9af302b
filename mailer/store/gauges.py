"""What monitoring reads at scrape time: the review queue, the outbox, each campaign in
progress and the sender-wide complaint rates over 1, 7 and 30 days, as the database holds
them now, whichever process (the daemon, a `mailer campaign send` beside it, the console)
changed them.

Synchronous on purpose: prometheus-client asks a collector for its numbers synchronously, and
`mailer.health.metrics` renders in a worker thread, so `read_gauges` opens its own read-only
connection there (it never creates or migrates a database) and closes it. Campaign numbers
come from `campaign_progress`, kept by triggers as ledger rows move, so a scrape costs a few
index look-ups however large a campaign is.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailer.errors import StoreError
from mailer.store.db import MIGRATIONS, read_only_uri
from mailer.store.engine import DRIVER_ERRORS, OPEN_ERRORS, Location, SyncPostgres, where
from mailer.store.reputation import COMPLAINT_WINDOW_SQL, ComplaintWindow

# Campaigns with a ledger that is not finished: being sent, or paused part way.
IN_PROGRESS = ("sending", "paused")
# A scrape waits at most this long for a lock (WAL readers rarely wait at all).
_BUSY_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CampaignLedger:
    """One campaign in progress, its recipients by state (`pending` includes those being
    sent this moment)."""

    id: int
    kind: str
    status: str
    sent: int = 0
    pending: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Gauges:
    review_open: int
    outbox_depth: int
    campaigns: tuple[CampaignLedger, ...]
    # The sender-wide complaint windows, by days: 1, 7, 30 (as `mailer doctor` reads them).
    complaints: dict[int, ComplaintWindow] = field(default_factory=dict)


# The complaint-rate windows the metrics show, in days (`mailer doctor`'s own).
COMPLAINT_DAYS = (1, 7, 30)


def read_gauges(location: Location, now: datetime | None = None) -> Gauges | None:
    """The numbers now; None while there is no database (or nothing of ours in it yet).

    Raises StoreError, one line, when the database cannot be read or is newer than this code."""
    place = where(location)
    if place.path is not None and not place.path.exists():
        return None
    try:
        conn: Any
        if place.path is None:
            conn = SyncPostgres(place)
            version_sql = "SELECT coalesce(max(version), 0) FROM schema_version"
        else:
            conn = sqlite3.connect(read_only_uri(place.path), uri=True,
                                   timeout=_BUSY_TIMEOUT_S)
            version_sql = "PRAGMA user_version"
        try:
            return _read(conn, _count(conn, version_sql), now or datetime.now(UTC))
        finally:
            conn.close()
    except OPEN_ERRORS + DRIVER_ERRORS as exc:
        raise StoreError(f"gauges: cannot read database {place}: {exc}") from exc


def _read(conn: Any, version: int, now: datetime) -> Gauges | None:
    if version > len(MIGRATIONS):
        raise StoreError(f"database schema version {version} is newer than this mailer "
                         f"({len(MIGRATIONS)})")
    if version < len(MIGRATIONS):  # not yet migrated by this code: the tables may be missing
        return None
    ledgers: dict[int, dict[str, int]] = {}
    kinds: dict[int, tuple[str, str]] = {}
    placeholders = ", ".join("?" for _ in IN_PROGRESS)
    rows = conn.execute(
        "SELECT c.id, c.kind, c.status, p.status, p.n FROM campaigns c "
        "LEFT JOIN campaign_progress p ON p.campaign_id = c.id "
        f"WHERE c.status IN ({placeholders}) ORDER BY c.id", IN_PROGRESS).fetchall()
    for campaign_id, kind, status, state, n in rows:
        kinds[campaign_id] = (kind, status)
        ledger = ledgers.setdefault(campaign_id, {})
        if state is not None:
            key = "pending" if state == "sending" else state
            ledger[key] = ledger.get(key, 0) + int(n)
    campaigns = tuple(
        CampaignLedger(id=int(cid), kind=kinds[cid][0], status=kinds[cid][1],
                       sent=ledger.get("sent", 0), pending=ledger.get("pending", 0),
                       failed=ledger.get("failed", 0), skipped=ledger.get("skipped", 0))
        for cid, ledger in ledgers.items())
    return Gauges(
        review_open=_count(conn, "SELECT count(*) FROM review_items WHERE status = 'open'"),
        outbox_depth=_count(conn, "SELECT count(*) FROM outbox WHERE status = 'pending'"),
        campaigns=campaigns,
        complaints={days: _complaints(conn, now - timedelta(days=days))
                    for days in COMPLAINT_DAYS},
    )


def _complaints(conn: Any, since: datetime) -> ComplaintWindow:
    start = since.astimezone(UTC).isoformat(timespec="microseconds")
    row = conn.execute(COMPLAINT_WINDOW_SQL, (start, start, start)).fetchone()
    sent, complaints = (int(row[0]), int(row[1])) if row else (0, 0)
    return ComplaintWindow(since=start, sent=sent, complaints=complaints)


def _count(conn: Any, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0
