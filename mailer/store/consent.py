"""The consent gate: whether one campaign message may go out, read fresh for every message.

Just before each recipient's SMTP transaction the sender asks `ConsentGate.check`, which reads
that customer's row again together with the campaign's status: a customer who opted out since
the audience was taken is skipped, and a pause or cancel made by another process stops the
sender before its next message.

Why this read is synchronous, on its own plain `sqlite3` connection: it is two primary-key
lookups (a few microseconds) on every message's critical path, and through aiosqlite each
would be a thread hand-off of several event-loop turns, while the decision it makes must be as
fresh as possible when the message goes out. The connection is read-only and in WAL mode:
readers never wait for a writer, so the read cannot stall the event loop behind an import or
an opt-out, and each read sees every transaction committed before it (an opt-out committed by
the inbox worker a millisecond earlier is seen).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mailer.errors import StoreError
from mailer.store.campaigns import Recipient, kind_column


@dataclass(frozen=True)
class Verdict:
    """The decision for one recipient: send to `recipient`, skip them, or stop the run."""

    recipient: Recipient | None
    skip_reason: str = ""
    stop_reason: str = ""


class ConsentGate:
    """The last word on whether one message of one campaign may go out."""

    def __init__(self, db_path: Path, campaign_id: int, kind: str) -> None:
        self._campaign_id = campaign_id
        self._kind = kind
        # The kind names a column; checked before it goes into the statement.
        self._sql = (f"SELECT c.email, c.name, c.company, c.{kind_column(kind)}, p.status, "
                     "u.reason FROM customers c JOIN campaigns p ON p.id = ? "
                     "LEFT JOIN undeliverable u ON u.customer_id = c.id WHERE c.id = ?")
        try:
            self._conn = sqlite3.connect(str(db_path), isolation_level=None)
            # A WAL reader only waits in rare recovery cases; keep any such wait short.
            self._conn.execute("PRAGMA busy_timeout = 2000")
            self._conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {db_path}: {exc}") from exc

    def read(self, customer_id: int) -> Recipient | None:
        """The customer as of now, with their consent and the campaign's status. fetchall()
        runs the statement to completion, so no read transaction stays open and the next
        call sees every commit made since."""
        try:
            rows = self._conn.execute(self._sql, (self._campaign_id, customer_id)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"consent check for customer {customer_id}: {exc}") from exc
        if not rows:
            return None
        email, name, company, opted_in, status, undeliverable = rows[0]
        return Recipient(customer_id=customer_id, email=email, name=name, company=company,
                         opted_in=bool(opted_in), campaign_status=status,
                         undeliverable="" if undeliverable is None else
                         str(undeliverable) or "undeliverable")

    def check(self, customer_id: int) -> Verdict:
        recipient = self.read(customer_id)
        if recipient is None:
            return Verdict(None, skip_reason="customer no longer exists")
        if recipient.campaign_status != "sending":
            return Verdict(None, stop_reason=f"campaign is now {recipient.campaign_status}")
        if not recipient.opted_in:
            return Verdict(None, skip_reason=f"opted out of {self._kind} before sending")
        if recipient.undeliverable:
            return Verdict(None, skip_reason=f"undeliverable: {recipient.undeliverable}")
        return Verdict(recipient)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ConsentGate:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
