"""`mailer retention run`: through the real CLI and Dovecot, request emails in Processed and
reports in Bounces older than their windows are deleted (by the day they arrived), exactly
those; `--dry-run` counts the same and deletes nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from mailer.consent.retention import imap_date, windows
from tests import dbrows
from tests.helpers import base_sections, run_cli, write_settings
from tests.servers import ImapTestServer, RawImap, sample_message

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def append_on(raw: RawImap, folder: str, day: date, subject: str) -> None:
    """APPEND with an internal date (RFC 3501 section 6.3.11) at noon UTC on `day`."""
    message = sample_message(subject=subject).decode("ascii")
    when = f"{day.day:02d}-{_MONTHS[day.month - 1]}-{day.year} 12:00:00 +0000"
    raw.command(f'APPEND "{folder}" "{when}" {{{len(message)}+}}\r\n{message}')


def test_retention_deletes_exactly_what_is_older_than_each_window(
    tmp_path: Path, imap_server: ImapTestServer, raw_imap: RawImap, database: Path | str
) -> None:
    settings = write_settings(tmp_path / "settings.toml", base_sections(
        tmp_path, database=dbrows.database_section(database),
        imap={"host": imap_server.host, "port": imap_server.port, "security": "none",
              "username": imap_server.username, "password": imap_server.password},
        retention={"processed_mail_days": 30, "reports_days": 7}))
    today = datetime.now(UTC).date()
    for folder in ("Processed", "Bounces", "Review"):
        raw_imap.command(f'CREATE "{folder}"')
    for days in (400, 31, 30, 29, 0):
        append_on(raw_imap, "Processed", today - timedelta(days=days), f"request {days}")
    for days in (8, 7, 1):
        append_on(raw_imap, "Bounces", today - timedelta(days=days), f"report {days}")
    append_on(raw_imap, "Review", today - timedelta(days=400), "review 400")

    dry = run_cli(settings, "retention", "run", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "processed mail: would delete 2 from Processed" in dry.stdout
    assert "reports: would delete 1 from Bounces" in dry.stdout
    assert len(raw_imap.uids("Processed")) == 5

    done = run_cli(settings, "retention", "run")
    assert done.code == 0, done.stderr
    assert "processed mail: deleted 2 from Processed" in done.stdout
    assert "web evidence: deleted 0" in done.stdout
    assert raw_imap.subjects("Processed") == ["request 30", "request 29", "request 0"]
    assert raw_imap.subjects("Bounces") == ["report 7", "report 1"]
    assert raw_imap.subjects("Review") == ["review 400"]  # review is for a person to settle

    again = run_cli(settings, "retention", "run")
    assert "processed mail: deleted 0" in again.stdout


def test_windows_start_the_given_number_of_days_before_today() -> None:
    processed, reports, web = windows(
        today=date(2026, 3, 1), processed_folder="P", processed_mail_days=1,
        reports_folder="B", reports_days=365, web_evidence_days=400)
    assert (processed.first_kept, reports.first_kept) == (date(2026, 2, 28), date(2025, 3, 1))
    assert web.first_kept == date(2025, 1, 25) and web.folder == ""
    assert imap_date(date(2026, 2, 8)) == "8-Feb-2026"
