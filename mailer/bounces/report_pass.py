"""The report pass: which messages of an inbox batch are delivery reports or complaints, and
recording them in the batch's transaction.

The inbox pass (`mailer.inbox.processor`) fetches the bodies of the messages its header stage
says may be reports and hands them here: `read_reports` keeps those `reports.read_report`
reads (it never raises), and `apply_reports` records each through
`deliverability.apply_report_in` and remembers the ones tied to a message of ours to be moved
to `[bounces] folder` after the commit, as the inbox pass moves requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailer.bounces import deliverability
from mailer.bounces.config import ReportConfig
from mailer.bounces.deliverability import Applied
from mailer.bounces.reports import Report, read_report
from mailer.mail.verp import Verifier
from mailer.store import deliverability as report_store
from mailer.store.db import Connection


def read_reports(
    uids: Sequence[int], bodies: Mapping[int, bytes], verifier: Verifier
) -> list[tuple[int, Report]]:
    """The candidates that are reports, read; a UID with no body (expunged meanwhile) is
    passed over."""
    found: list[tuple[int, Report]] = []
    for uid in uids:
        raw = bodies.get(uid)
        if raw is None:
            continue
        read = read_report(raw, verifier)
        if read is not None:
            found.append((uid, read))
    return found


async def apply_reports(
    conn: Connection, config: ReportConfig, state_key: str, uidvalidity: int,
    reports: Sequence[tuple[int, Report]],
) -> list[tuple[int, Applied]]:
    """Record a batch's reports in the caller's transaction; remember the tied ones (also a
    report seen before: a second copy, or one a crash left in the folder) to be moved."""
    applied: list[tuple[int, Applied]] = []
    for uid, read in reports:
        applied.append((uid, await deliverability.apply_report_in(conn, read, config.bounces)))
    await report_store.add_report_moves(conn, state_key, uidvalidity, [
        report_store.ReportMove(uid, result.report_id, config.folder)
        for uid, result in applied if result.tied])
    return applied
