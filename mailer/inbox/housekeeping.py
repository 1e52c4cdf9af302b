"""The daemon's housekeeping part: `[retention]` applied once a day, and the IMAP clean-up of
erasures finished as soon as the mailbox lets it.

    run_once(dry_run)  connect to the mailbox (and the `[bounces.imap]` one, when set), delete
                       what is older than its retention window (`mailer.consent.retention`),
                       then, unless dry, finish every erasure's pending clean-up
                       (`mailer.consent.rights.run_pending_erasures`). `mailer retention run`
                       is this, once.
    run(stop)          retention on the first round of each UTC day, the erasures' clean-up
                       every `interval_s`, until `stop`. A server that cannot be reached ends
                       the session; the supervisor starts another with backoff, and a clean-up
                       that failed waits for its own retry time (`backoff.ERASURE_CLEANUP`).

It lives beside the inbox worker because it is the other user of the mailbox: consent's
retention and rights decide what goes, through the `Mailbox` protocol that `ImapClient` meets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import date

from mailer.backoff import SERVER_RECONNECT, Backoff
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.consent import retention, rights
from mailer.inbox.imap import ImapClient, ImapConfig
from mailer.inbox.worker import bounces_imap_config, imap_config
from mailer.lifecycle.supervise import Part, sleep_unless_stopped
from mailer.settings import Settings
from mailer.settings.sections import RetentionSettings
from mailer.store.db import Location, open_db

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0  # how often a pending erasure clean-up is looked for


@dataclass(frozen=True)
class HousekeepingConfig:
    db_location: Location
    imap: ImapConfig
    reports_imap: ImapConfig | None  # the `[bounces.imap]` mailbox, when it has the reports
    processed_folder: str
    review_folder: str
    reports_folder: str
    keep: RetentionSettings


def housekeeping_config(settings: Settings) -> HousekeepingConfig:
    return HousekeepingConfig(
        db_location=settings.database.location, imap=imap_config(settings),
        reports_imap=bounces_imap_config(settings),
        processed_folder=settings.imap.processed_folder,
        review_folder=settings.imap.review_folder, reports_folder=settings.bounces.folder,
        keep=settings.retention)


@dataclass(frozen=True)
class HousekeepingRound:
    windows: tuple[retention.Window, ...]  # empty: retention was not due this round
    deleted: dict[str, int]                # per window: deleted (or, dry, would be)
    erasures_finished: int


class Housekeeping:
    """The daemon's housekeeping part (see the module docstring)."""

    policy: Backoff = SERVER_RECONNECT

    def __init__(self, config: HousekeepingConfig, *, part: Part | None = None,
                 interval_s: float = INTERVAL_S, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.interval_s = interval_s
        self.clock = clock
        self.part = part or Part("housekeeping", clock=clock)
        self._retained_on: date | None = None  # the UTC day retention last ran in a session

    async def run_once(self, *, dry_run: bool = False, retain: bool = True
                       ) -> HousekeepingRound:
        """One round: retention (when `retain`), then the erasures' clean-up (unless dry)."""
        c = self.config
        today = self.clock.now().date()
        chosen = retention.windows(
            today=today, processed_folder=c.processed_folder,
            processed_mail_days=c.keep.processed_mail_days, reports_folder=c.reports_folder,
            reports_days=c.keep.reports_days, web_evidence_days=c.keep.web_evidence_days,
        ) if retain else ()
        async with contextlib.AsyncExitStack() as stack:
            conn = await stack.enter_async_context(open_db(c.db_location))
            mailbox = await stack.enter_async_context(await ImapClient.connect(c.imap))
            reports = mailbox if c.reports_imap is None else await stack.enter_async_context(
                await ImapClient.connect(c.reports_imap))
            deleted = await retention.apply_all(conn, mailbox, reports, chosen,
                                                dry_run=dry_run)
            finished = 0 if dry_run else await rights.run_pending_erasures(
                conn, mailbox, (c.processed_folder, c.review_folder), now=self.clock.now())
        return HousekeepingRound(tuple(chosen), deleted, finished)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            today = self.clock.now().date()
            done = await self.run_once(retain=self._retained_on != today)
            if done.windows:
                self._retained_on = today
                log.info("retention: %s", ", ".join(
                    f"{what} {count} deleted" for what, count in done.deleted.items()))
            self.part.succeeded(last_round_at=self.clock.now().isoformat(timespec="seconds"),
                                retained_on=today.isoformat())
            await sleep_unless_stopped(self.interval_s, stop)
