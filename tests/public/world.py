"""A web test world: settings, a database (a SQLite file, or PostgreSQL from the `database`
fixture) with customers, a campaign sent to them and one with pending mail, and the app behind
aiohttp's test client (a real HTTP server on loopback).

Plain helpers; each test module builds its world with one small fixture of its own.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from mailer.campaigns import service
from mailer.consent import imports
from mailer.mail import tokens
from mailer.settings import Settings, from_mapping
from mailer.store import campaigns as campaign_store
from mailer.store import customers as customer_store
from mailer.store import ledger
from mailer.store.db import open_db, transaction
from mailer.store.engine import Connection
from tests import dbrows
from tests.campaigns.world import ROOT, SECRET, settings_mapping

OLD_SECRET = "the-secret-before-the-rotation"
CUSTOMERS_CSV = (
    "name,email,company,announcements,offers\n"
    "Ann Archer,ann@example.com,Archer & Co,yes,yes\n"
    "Bob <b>Baker</b>,bob@example.com,,yes,yes\n"
)


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.at = 1_800_000_000.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)

    def time(self) -> float:
        return self.at

    def monotonic(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds


def web_settings(tmp: Path, smtp_port: int = 1, database: Path | str | None = None,
                 **overrides: dict[str, Any]) -> Settings:
    templates = tmp / "templates"
    if not templates.exists():
        shutil.copytree(ROOT / "templates", templates)
    sections = settings_mapping(tmp, smtp_port, database, **overrides)
    sections.setdefault("http", {}).setdefault("host", "127.0.0.1")
    sections["campaigns"].setdefault("previous_secrets", [OLD_SECRET])
    return from_mapping(sections, base_dir=tmp, environ={})


async def seed(settings: Settings, customers: int = 0) -> tuple[dict[str, int], int]:
    """Ann, Bob and `customers` more (c0@example.com, ...), opted in to everything; an offers
    campaign the ledger shows sent to all of them (its links are the ones a customer follows),
    and a later offers campaign whose audience is taken, so all have pending mail.
    Returns ({email: id}, the sent campaign's id)."""
    csv = CUSTOMERS_CSV + "".join(f"Customer {n},c{n}@example.com,,yes,yes\n"
                                  for n in range(customers))
    emails = ["ann@example.com", "bob@example.com"] + [f"c{n}@example.com"
                                                       for n in range(customers)]
    async with open_db(settings.database.location) as conn:
        report = await imports.import_csv(conn, io.BytesIO(csv.encode()), name="t")
        assert report.ok
        sent = await add_campaign(settings, conn)
        claimed = await campaign_store.claim_batch(conn, sent, len(emails), "test")
        await ledger.record_results(conn, sent, [
            campaign_store.RecipientResult(customer_id, "sent", 1, "250 OK")
            for customer_id in claimed])
        await add_campaign(settings, conn)
        ids = await customer_store.ids_by_address(conn, emails)
    return ids, sent


async def add_campaign(settings: Settings, conn: Connection) -> int:
    """A new offers campaign with its audience taken (pending mail, nothing sent)."""
    campaign = await service.create_campaign(
        conn, settings.templates.dir, kind="offers", template="welcome-offer", subject="Offer")
    async with transaction(conn):
        await campaign_store.snapshot_audience(conn, campaign)
    return campaign.id


@dataclass
class Site:
    client: TestClient  # type: ignore[type-arg]
    settings: Settings
    clock: FakeClock
    ids: dict[str, int]
    campaign_id: int
    prefix: str = "/unsubscribe"
    log: list[str] = field(default_factory=list)

    def token(self, email: str = "ann@example.com", *, secret: str = SECRET) -> str:
        return tokens.campaign_token(secret, self.ids[email], self.campaign_id)

    def url(self, email: str = "ann@example.com", **kw: Any) -> str:
        return f"{self.prefix}/{self.token(email, **kw)}"

    def rows(self, sql: str, parameters: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return dbrows.rows(self.settings.database.location, sql, parameters)

    def preferences(self, email: str = "ann@example.com") -> dict[str, int]:
        [(announcements, offers)] = self.rows(
            "SELECT announcements, offers FROM customers WHERE email = ?", (email,))
        return {"announcements": announcements, "offers": offers}

    def events(self, email: str = "ann@example.com") -> list[tuple[Any, ...]]:
        """(category, old, new, source, reference) of the customer's consent events since
        the import."""
        return self.rows(
            "SELECT category, old_value, new_value, source, reference FROM consent_events "
            "WHERE customer_id = ? AND source != 'import' ORDER BY id", (self.ids[email],))

    def pending(self, email: str = "ann@example.com") -> str:
        """The status of the customer's mail in the latest campaign (pending when seeded)."""
        [(status,)] = self.rows(
            "SELECT status FROM campaign_recipients WHERE customer_id = ? AND campaign_id = "
            "(SELECT max(id) FROM campaigns)", (self.ids[email],))
        return str(status)

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        """Everything a request could change: customers, consent events, outbox, ledger."""
        queries = {
            "customers": "SELECT * FROM customers ORDER BY id",
            "consent_events": "SELECT * FROM consent_events ORDER BY id",
            "outbox": "SELECT * FROM outbox ORDER BY id",
            "campaign_recipients": "SELECT * FROM campaign_recipients ORDER BY customer_id",
        }
        if isinstance(self.settings.database.location, Path):
            listed = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            listed = ("SELECT table_name FROM information_schema.tables "
                      "WHERE table_schema = current_schema()")
        present = {r[0] for r in self.rows(listed)}
        return [self.rows(sql) for table, sql in queries.items() if table in present]
