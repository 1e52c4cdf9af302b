"""Web evidence is cleared after `[retention] web_evidence_days`, leaving the rest of each row:
the store's part, on a real SQLite file, for a table listed in WEB_EVIDENCE_COLUMNS
(consent_events' own case: tests/rights/test_evidence_retention.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.store import retention
from mailer.store.db import open_db


async def test_web_evidence_older_than_the_window_is_cleared_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: Path | str
) -> None:
    monkeypatch.setattr(retention, "WEB_EVIDENCE_COLUMNS",
                        {"web_seen": ("at", ("client_address", "user_agent"))})
    async with open_db(database) as conn:
        await conn.execute("CREATE TABLE web_seen (at TEXT, client_address TEXT, "
                           "user_agent TEXT, choice TEXT)")
        await conn.executemany("INSERT INTO web_seen VALUES (?, ?, ?, ?)", [
            ("2025-01-01T00:00:00", "192.0.2.1", "Firefox", "offers off"),
            ("2025-06-01T00:00:00", "192.0.2.2", "Safari", "offers on"),
        ])
        before = "2025-03-01T00:00:00"
        assert await retention.clear_web_evidence(conn, before=before, dry_run=True) == 1
        assert await retention.clear_web_evidence(conn, before=before, dry_run=False) == 1
        rows = await conn.execute_fetchall("SELECT * FROM web_seen ORDER BY at")
        assert [tuple(r) for r in rows] == [
            ("2025-01-01T00:00:00", "", "", "offers off"),
            ("2025-06-01T00:00:00", "192.0.2.2", "Safari", "offers on")]
        assert await retention.clear_web_evidence(conn, before=before, dry_run=False) == 0


async def test_a_database_without_consent_events_clears_nothing(database: Path | str) -> None:
    async with open_db(database) as conn:
        assert await retention.clear_web_evidence(conn, before="9999", dry_run=False) == 0
