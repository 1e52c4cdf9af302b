"""A test world for the inbox worker: a real IMAP server, a real SMTP sink, a database (a SQLite
file, or the `database` fixture's location on either engine), customers imported the way an
operator would, and settings pointing at all of it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from mailer import settings as settings_module
from mailer.consent.confirmations import OutboxReport, outbox_config, send_due_confirmations
from mailer.consent.imports import import_csv
from mailer.inbox.config import InboxConfig
from mailer.inbox.imap import ImapConfig
from mailer.inbox.processor import PassReport
from mailer.inbox.worker import imap_config, inbox_config, process_once
from mailer.settings import Settings
from mailer.store.db import open_db
from tests.dbrows import rows
from tests.helpers import base_sections, write_settings
from tests.servers import ImapTestServer, RawImap, SmtpSink

CUSTOMERS_CSV = """name,email,company,phone
Ann Lee,ann@example.com,Lee Plumbing Ltd,01632 960001
Bob Roe,bob@example.com,,01632 960002
Carol Diaz,carol@example.com,Diaz & Daughters,01632 960003
Dan Diaz,dan@example.com,,01632 960004
John Smith,john.smith@example.com,,01632 960005
John Smith,jsmith@example.org,,01632 960006
Zoë Brontë,zoe@example.com,,01632 960007
Eve Adams,eve@example.com,Acme Widgets Ltd,01632 960008
Frank Moss,frank@example.com,Acme Widgets Ltd,01632 960009
Grace Hall,grace@example.com,Hall Holdings plc,01632 960010
"""


@dataclass
class World:
    tmp_path: Path
    server: ImapTestServer
    sink: SmtpSink
    settings_path: Path
    settings: Settings

    @property
    def db_path(self) -> Path | str:
        """The store's location: a SQLite file, or a PostgreSQL URL."""
        return self.settings.database.location

    @property
    def rules(self) -> InboxConfig:
        return inbox_config(self.settings)

    @property
    def imap(self) -> ImapConfig:
        return imap_config(self.settings)

    def raw(self) -> RawImap:
        return RawImap.for_server(self.server)

    def deliver(self, *messages: bytes, folder: str = "INBOX") -> None:
        with self.raw() as raw:
            raw.append_many(folder, messages)

    def folder_subjects(self, folder: str) -> list[str]:
        with self.raw() as raw:
            try:
                return raw.subjects(folder)
            except Exception:  # noqa: BLE001 - a folder not yet created holds nothing
                return []

    async def process(self) -> PassReport:
        async with open_db(self.db_path) as conn:
            return await process_once(conn, self.imap, self.rules)

    async def send_confirmations(self) -> OutboxReport:
        async with open_db(self.db_path) as conn:
            return await send_due_confirmations(conn, outbox_config(self.settings))

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        return rows(self.db_path, sql, params)

    def preferences(self, email: str) -> tuple[bool, bool]:
        rows = self.query("SELECT announcements, offers FROM customers WHERE email = ?", email)
        assert rows, f"no customer {email}"
        return bool(rows[0][0]), bool(rows[0][1])

    def opted_out(self) -> set[str]:
        return {str(r[0]) for r in self.query(
            "SELECT email FROM customers WHERE announcements = 0 AND offers = 0")}


async def make_world(tmp_path: Path, server: ImapTestServer, sink: SmtpSink,
                     csv_text: str = CUSTOMERS_CSV, *,
                     database: Path | str | dict[str, object] | None = None,
                     **extra: dict[str, object]) -> World:
    """`database`: a location from the `database` fixture (either engine), or the `[database]`
    section itself; None, a SQLite file in tmp_path."""
    imap: dict[str, object] = {
        "host": server.host, "port": server.port, "security": "none",
        "username": server.username, "password": server.password,
        "idle_timeout_s": 60.0, "poll_interval_s": 1.0, **extra.pop("imap", {})}
    smtp: dict[str, object] = {"host": sink.host, "port": sink.port, "security": "none",
                               **extra.pop("smtp", {})}
    sections = base_sections(tmp_path, imap=imap, smtp=smtp, **extra)
    if isinstance(database, dict):
        sections["database"] = database  # the section itself (`path` in a folder of its own)
    elif isinstance(database, str):
        sections["database"] = {"url": database}
    elif database is not None:
        sections["database"] = {"path": str(database)}
    path = write_settings(tmp_path / "settings.toml", sections)
    settings = settings_module.load(path)
    async with open_db(settings.database.location) as conn:
        # The tests' customers agreed to mail unless their CSV says otherwise.
        report = await import_csv(conn, io.BytesIO(csv_text.encode()), name="customers.csv",
                                  consent=True)
    assert report.ok, report.bad_rows
    return World(tmp_path, server, sink, path, settings)
