"""A campaign test world: settings, a SQLite file, customers, templates and an SMTP sink.

Plain helpers (not fixtures) so that each test module builds its world with one small fixture
of its own. Everything real: the database is a file in tmp_path, the sink is aiosmtpd on
loopback (tests.servers.SmtpSink).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email
import email.policy
import io
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailer.backoff import Backoff
from mailer.campaigns import service
from mailer.campaigns.messages import SendConfig, send_config
from mailer.clock import SYSTEM_CLOCK
from mailer.consent import imports
from mailer.settings import Settings, from_mapping
from mailer.store.db import open_db
from tests import dbrows
from tests.campaigns.clock import FakeClock
from tests.servers import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-for-campaigns-9f2Qx7LmA1"
UNSUBSCRIBE_URL = "https://imperial.test/unsubscribe"
UNSUBSCRIBE_ADDRESS = "unsubscribe@imperial.test"
SENDER = "Imperial Telecom <news@imperial.test>"


def settings_mapping(tmp_path: Path, port: int, database: Path | str | None = None,
                     **overrides: dict[str, Any]) -> dict[str, Any]:
    place = {"url": database} if isinstance(database, str) else {
        "path": str(database or tmp_path / "mailer.db")}
    sections: dict[str, dict[str, Any]] = {
        "database": place,
        "imap": {"host": "127.0.0.1", "port": 1, "security": "none"},
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "sender": SENDER,
                 "timeout_s": 5.0, "max_connections": 4, "max_attempts": 5},
        "unsubscribe": {"address": UNSUBSCRIBE_ADDRESS},
        "templates": {"dir": str(tmp_path / "templates")},
        "campaigns": {"unsubscribe_url": UNSUBSCRIBE_URL, "secret": SECRET, "batch_size": 50,
                      "failure_threshold": 0.5, "failure_min_sample": 10},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return sections


@dataclass
class World:
    tmp: Path
    sink: SmtpSink
    settings: Settings

    @classmethod
    def build(cls, tmp: Path, sink: SmtpSink, database: Path | str | None = None,
              **overrides: dict[str, Any]) -> World:
        """`database`: a location from the `database` fixture (either engine); None, a
        SQLite file in `tmp`."""
        templates = tmp / "templates"
        if not templates.exists():
            shutil.copytree(ROOT / "templates", templates)
        settings = from_mapping(settings_mapping(tmp, sink.port, database, **overrides),
                                base_dir=tmp, environ={})
        return cls(tmp, sink, settings)

    @property
    def db(self) -> Path | str:
        return self.settings.database.location

    def config(self, **overrides: Any) -> SendConfig:
        """Send settings with fast retries, for tests."""
        values: dict[str, Any] = {"retry": Backoff(base_s=0.01, max_s=0.05)}
        values.update(overrides)
        return dataclasses.replace(send_config(self.settings), **values)

    def create_schema(self) -> None:
        """Create the (empty) schema; for a synchronous test that reads the database before
        anything has opened it (a new PostgreSQL database starts without tables)."""

        async def create() -> None:
            async with open_db(self.db):
                pass

        asyncio.run(create())

    def write_template(self, name: str, text: str) -> None:
        (self.settings.templates.dir / "campaigns" / name).write_text(text, encoding="utf-8")

    async def add_customers(self, count: int, *, offers_every: int = 1,
                            start: int = 0) -> None:
        """Customers c{start}..c{start+count-1}@example.com; every `offers_every`-th one
        opted in to offers (the others opted out); all opted in to announcements."""
        lines = ["name,email,company,announcements,offers"]
        for i in range(start, start + count):
            offers = "yes" if i % offers_every == 0 else "no"
            lines.append(f"Customer {i},c{i}@example.com,Company {i},yes,{offers}")
        await self.import_csv("\n".join(lines) + "\n")

    async def import_csv(self, text: str) -> None:
        async with open_db(self.db) as conn:
            report = await imports.import_csv(conn, io.BytesIO(text.encode()), name="test.csv")
        assert report.ok, report.bad_rows

    async def create_campaign(self, *, kind: str = "offers", template: str = "welcome-offer",
                              subject: str = "An offer for {{ customer.name }}",
                              at: str | None = None) -> int:
        # The service refuses a time already past, so a campaign due now is created as it
        # would have been: a moment before its time (then it fell due while nothing ran).
        when = datetime.fromisoformat(at) if at is not None else None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # no zone is UTC, as for `--at`
        clock = FakeClock(when - timedelta(seconds=1)) if when is not None else SYSTEM_CLOCK
        async with open_db(self.db) as conn:
            created = await service.create_campaign(
                conn, self.settings.templates.dir, kind=kind, template=template,
                subject=subject, at=at, clock=clock)
        return created.id

    def rows(self, sql: str, parameters: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return dbrows.rows(self.db, sql, parameters)

    def opted_in(self, kind: str = "offers") -> set[str]:
        return {r[0] for r in self.rows(f"SELECT email FROM customers WHERE {kind} = 1")}

    def ledger(self, campaign_id: int) -> dict[str, str]:
        """email -> ledger status."""
        return dict(self.rows(
            "SELECT c.email, r.status FROM campaign_recipients r JOIN customers c "
            "ON c.id = r.customer_id WHERE r.campaign_id = ?", (campaign_id,)))

    def received(self) -> collections.Counter[str]:
        """How many messages each address got."""
        counts: collections.Counter[str] = collections.Counter()
        for message in self.sink.messages:
            counts.update(a.lower() for a in message.rcpt_tos)
        return counts

    def parsed(self) -> list[EmailMessage]:
        return [parse(m.content) for m in self.sink.messages]


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message
