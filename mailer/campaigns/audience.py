"""Who receives a campaign: opted in to its kind at the moment each message goes out.

Two steps, both against the customers table, never a copy of it:

1. When sending starts, the audience is snapshotted into the ledger: one pending row per
   customer opted in *then* (`store.campaigns.snapshot_audience`, one INSERT ... SELECT).
   Nobody outside the snapshot is ever mailed.
2. Just before each recipient's SMTP transaction, `ConsentGate.check` reads that customer's
   row again (a primary-key SELECT on a dedicated read connection, microseconds, done
   synchronously; between the read and the send the sender only builds the message and
   waits, briefly, for its previous result's commit: see `sender`). A customer who opted out
   since the snapshot is skipped. The same read returns the campaign's status, so a pause or
   cancel made by another process stops the sender before its next message.

The gate's connection is a plain `sqlite3` one in WAL mode: readers never wait for a writer,
so the read cannot stall the event loop behind an import or an opt-out, and each read sees
every transaction committed before it (an opt-out committed by the inbox worker a millisecond
earlier is seen).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite

from mailer.campaigns.model import Campaign
from mailer.store import campaigns as store
from mailer.store.db import StoreError

Recipient = store.Recipient


@dataclass(frozen=True)
class Verdict:
    """The decision for one recipient: send to `recipient`, skip them, or stop the run."""

    recipient: Recipient | None
    skip_reason: str = ""
    stop_reason: str = ""


class ConsentGate:
    """The last word on whether one message may go out, read fresh for every message."""

    def __init__(self, db_path: Path, campaign: Campaign) -> None:
        self._campaign_id = campaign.id
        self._kind = campaign.kind
        try:
            self._conn = sqlite3.connect(str(db_path), isolation_level=None)
            # A WAL reader only waits in rare recovery cases; keep any such wait short.
            self._conn.execute("PRAGMA busy_timeout = 2000")
            self._conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {db_path}: {exc}") from exc

    def check(self, customer_id: int) -> Verdict:
        try:
            recipient = store.read_recipient(self._conn, self._campaign_id, self._kind,
                                             customer_id)
        except sqlite3.Error as exc:
            raise StoreError(f"consent check for customer {customer_id}: {exc}") from exc
        if recipient is None:
            return Verdict(None, skip_reason="customer no longer exists")
        if recipient.campaign_status != "sending":
            return Verdict(None, stop_reason=f"campaign is now {recipient.campaign_status}")
        if not recipient.opted_in:
            return Verdict(None, skip_reason=f"opted out of {self._kind} before sending")
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


async def snapshot(conn: aiosqlite.Connection, campaign: Campaign) -> int:
    """Take the audience (opted in now) into the ledger, once; inside the caller's
    transaction. Returns the number of recipients added."""
    return await store.snapshot_audience(conn, campaign)
