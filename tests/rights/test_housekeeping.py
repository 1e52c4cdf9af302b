"""The daemon's housekeeping part (`mailer.inbox.housekeeping`) against Dovecot: retention on
the first round of each day only, and every round's erasure clean-ups."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailer.inbox.housekeeping import Housekeeping, housekeeping_config
from mailer.settings import load
from tests import dbrows
from tests.campaigns.clock import FakeClock
from tests.helpers import base_sections, write_settings
from tests.rights.test_retention import append_on
from tests.servers import ImapTestServer, RawImap
from tests.waiting import wait_for


async def test_retention_runs_on_the_first_round_of_each_day_and_not_again_that_day(
    tmp_path: Path, imap_server: ImapTestServer, raw_imap: RawImap, database: Path | str
) -> None:
    settings = load(write_settings(tmp_path / "settings.toml", base_sections(
        tmp_path, database=dbrows.database_section(database),
        imap={"host": imap_server.host, "port": imap_server.port, "security": "none",
              "username": imap_server.username, "password": imap_server.password},
        retention={"processed_mail_days": 30, "reports_days": 7})))
    today = datetime.now(UTC).date()
    for folder in ("Processed", "Bounces", "Review"):
        raw_imap.command(f'CREATE "{folder}"')
    append_on(raw_imap, "Processed", today - timedelta(days=40), "old request")
    append_on(raw_imap, "Processed", today, "new request")
    clock = FakeClock(datetime.now(UTC))
    housekeeping = Housekeeping(housekeeping_config(settings), interval_s=0.05, clock=clock)
    rounds: list[str] = []
    real_succeeded = housekeeping.part.succeeded

    def counted(**details: str) -> None:
        rounds.append(details["retained_on"])
        real_succeeded(**details)

    housekeeping.part.succeeded = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(housekeeping.run(stop))
    try:
        await wait_for(lambda: len(rounds) >= 1, what="the first housekeeping round")
        assert raw_imap.subjects("Processed") == ["new request"]

        # Later the same day: a message that is past its window stays until tomorrow.
        append_on(raw_imap, "Processed", today - timedelta(days=41), "older request")
        seen = len(rounds)
        await wait_for(lambda: len(rounds) >= seen + 2, what="two more rounds the same day")
        assert sorted(raw_imap.subjects("Processed")) == ["new request", "older request"]

        clock.advance(24 * 3600)  # the next UTC day: retention runs again
        seen = len(rounds)
        await wait_for(lambda: len(rounds) >= seen + 1, what="a round the next day")
        assert raw_imap.subjects("Processed") == ["new request"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
