"""Retention: what is not evidence of consent is kept for its window, then deleted.

    [retention] processed_mail_days   request emails in the processed folder (IMAP)
                reports_days          delivery reports in the bounces folder (IMAP)
                web_evidence_days     client address and user agent of web consent (store)

Consent events themselves are kept: they are the evidence. A message's age is its IMAP
internal date (when it reached our mailbox; a MOVE keeps it), compared by day as IMAP's
SEARCH BEFORE does (RFC 3501 section 6.4.4): a message is deleted once it arrived on a day
before the window's first. `windows` is the pure part; `apply_mail` and `apply_store` do the
I/O. The daemon calls them daily; `mailer retention run [--dry-run]` on demand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mailer.consent.rights import Mailbox
from mailer.store import retention as retention_store
from mailer.store.db import Connection

log = logging.getLogger(__name__)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Window:
    what: str       # "processed mail", "reports", "web evidence"
    folder: str     # the IMAP folder; "" for the store
    first_kept: date  # the first day kept; everything before it goes


def windows(*, today: date, processed_folder: str, processed_mail_days: int,
            reports_folder: str, reports_days: int, web_evidence_days: int
            ) -> tuple[Window, Window, Window]:
    """The three windows as of `today` (UTC)."""
    return (
        Window("processed mail", processed_folder, today - timedelta(days=processed_mail_days)),
        Window("reports", reports_folder, today - timedelta(days=reports_days)),
        Window("web evidence", "", today - timedelta(days=web_evidence_days)),
    )


def imap_date(day: date) -> str:
    """RFC 3501 `date` (d-Mon-yyyy), month names in English whatever the locale."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


async def apply_mail(mailbox: Mailbox, window: Window, *, dry_run: bool) -> int:
    """Delete (or, dry, count) the messages of `window.folder` older than the window."""
    await mailbox.ensure_folder(window.folder)
    await mailbox.select(window.folder)
    uids = await mailbox.uids_search("BEFORE", imap_date(window.first_kept))
    if uids and not dry_run:
        await mailbox.delete_many(uids)
    log.info("retention: %s: %d message(s) before %s%s", window.what, len(uids),
             window.first_kept, " (dry run)" if dry_run else " deleted")
    return len(uids)


async def apply_store(conn: Connection, window: Window, *, dry_run: bool) -> int:
    """Clear (or, dry, count) web evidence older than the window."""
    before = datetime(window.first_kept.year, window.first_kept.month,
                      window.first_kept.day).isoformat()
    return await retention_store.clear_web_evidence(conn, before=before, dry_run=dry_run)


async def apply_all(conn: Connection, processed: Mailbox,
                    reports: Mailbox, chosen: Sequence[Window], *, dry_run: bool
                    ) -> dict[str, int]:
    """Every window: the processed folder in `processed`, reports in `reports` (the
    `[bounces.imap]` mailbox when there is one), web evidence in the store."""
    done: dict[str, int] = {}
    for window in chosen:
        if window.what == "processed mail":
            done[window.what] = await apply_mail(processed, window, dry_run=dry_run)
        elif window.what == "reports":
            done[window.what] = await apply_mail(reports, window, dry_run=dry_run)
        else:
            done[window.what] = await apply_store(conn, window, dry_run=dry_run)
    return done
