"""Web evidence on consent events is cleared after `[retention] web_evidence_days`, leaving the
rest of every event, and the permanence trigger still refuses any other update
(SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest

from mailer.consent import imports
from mailer.consent.change import Refusal, opt_out
from mailer.consent.retention import apply_store, windows
from mailer.store import customers as customer_store
from mailer.store.db import open_db, transaction
from mailer.store.evidence import COLUMNS, EventEvidence
from tests import dbrows

WEB = EventEvidence(client_address="192.0.2.7", user_agent="Firefox/140", wording="abc123")


async def seeded(db: Path | str) -> int:
    async with open_db(db) as conn:
        report = await imports.import_csv(
            conn, io.BytesIO(b"name,email\nAnn Lee,ann@example.com\n"), name="t.csv",
            consent=True)
        assert report.ok
        (ann,) = (await customer_store.ids_by_address(conn, ["ann@example.com"])).values()
        async with transaction(conn):
            await opt_out(conn, [Refusal((ann,), "campaign 1", evidence=WEB)], ["offers"],
                          source="preference page")
        # An older web event, as if written before the window began.
        await conn.execute(
            f"INSERT INTO consent_events (customer_id, at, category, old_value, new_value, "
            f"source, reference, actor, {', '.join(COLUMNS)}) VALUES (?, ?, 'announcements', "
            f"1, 0, 'one-click', 'campaign 1', '', {', '.join('?' * len(COLUMNS))})",
            (ann, "2020-01-01T00:00:00.000000+00:00", *WEB.values()))
        await conn.commit()
    return ann


def web_columns(db: Path | str) -> list[tuple[object, ...]]:
    return dbrows.rows(db, "SELECT substr(at, 1, 4), client_address, user_agent, wording "
                           "FROM consent_events WHERE source != 'import' ORDER BY at")


async def test_retention_clears_web_evidence_older_than_the_window_and_leaves_the_rest(
    tmp_path: Path, database: Path | str
) -> None:
    db = database
    await seeded(db)
    window = windows(today=date.today(), processed_folder="P", processed_mail_days=1,
                     reports_folder="B", reports_days=1, web_evidence_days=400)[2]

    async with open_db(db) as conn:
        assert await apply_store(conn, window, dry_run=True) == 1
        assert await apply_store(conn, window, dry_run=False) == 1
        assert await apply_store(conn, window, dry_run=False) == 0

    this_year = str(date.today().year)
    assert web_columns(db) == [("2020", "", "", "abc123"),
                               (this_year, "192.0.2.7", "Firefox/140", "abc123")]


@pytest.mark.parametrize("change", [
    "SET user_agent = 'Chrome'",             # web evidence rewritten, not cleared
    "SET client_address = '198.51.100.1'",
    "SET wording = ''",                      # the wording is evidence kept for good
    "SET client_address = '', reference = ''",  # a clearing that takes more with it
    "SET new_value = 1",
    "SET dkim = 'pass'",
    "SET message_from = 'someone@example.org'",
])
async def test_the_trigger_still_refuses_every_other_update(
    change: str, database: Path | str
) -> None:
    db = database
    await seeded(db)
    with pytest.raises(dbrows.INTEGRITY_ERRORS, match="consent events are permanent"):
        dbrows.execute(db, f"UPDATE consent_events {change}")
    with pytest.raises(dbrows.INTEGRITY_ERRORS, match="consent events are permanent"):
        dbrows.execute(db, "DELETE FROM consent_events")


async def test_events_read_back_with_their_evidence(tmp_path: Path, database: Path | str) -> None:
    db = database
    ann = await seeded(db)
    async with open_db(db) as conn:
        events = await customer_store.history(conn, ann)
    assert [e.evidence for e in events if e.source != "import"] == [WEB, WEB]
    assert events[-1].evidence.shown() == [
        ("client address", "192.0.2.7"), ("user agent", "Firefox/140"), ("wording", "abc123")]
