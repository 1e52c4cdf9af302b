"""The console's store queries against a real SQLite file and a real send to the SMTP sink:
running totals agree with the ledger, the daily roll-ups agree with the events."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailer.campaigns import service
from mailer.consent.change import Refusal, Thread, opt_out
from mailer.store import campaigns as campaign_store
from mailer.store import console as console_store
from mailer.store.db import open_db, transaction, utcnow
from tests.campaigns.world import World
from tests.console.world import query
from tests.servers import SmtpSink


async def test_the_running_totals_agree_with_the_ledger_after_a_real_send(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    world = World.build(tmp_path, smtp_sink)
    await world.add_customers(40, offers_every=2)
    campaign_id = await world.create_campaign()
    async with open_db(world.db) as conn:
        await service.send_now(conn, world.config(), campaign_id, stop=asyncio.Event())
        ledger = await campaign_store.counts(conn, campaign_id)
        totals = await console_store.campaign_progress(conn, campaign_id)
    assert (totals.audience, totals.sent, totals.failed, totals.skipped, totals.pending) == (
        ledger.audience, ledger.sent, ledger.failed, ledger.skipped, ledger.pending)
    assert (ledger.audience, ledger.sent) == (20, 20)


async def test_opt_outs_are_counted_per_day_and_source_as_they_are_recorded(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    world = World.build(tmp_path, smtp_sink)
    await world.add_customers(3)
    async with open_db(world.db) as conn:
        for refusal, categories, source in [
            (Refusal((1, 2), "campaign 1"), ["offers"], "one-click"),
            (Refusal((3,), "<m@x>", Thread(message_id="<m@x>")), ["offers", "announcements"],
             "email"),
            (Refusal((1,), "again"), ["offers"], "one-click"),
        ]:
            async with transaction(conn):
                await opt_out(conn, [refusal], categories, source=source)
        counted = await console_store.optouts_per_day(conn, utcnow()[:10])
    today = utcnow()[:10]
    assert counted == {(today, "one-click"): 2, (today, "email"): 2}
    assert query(world.db, "SELECT count(*) FROM consent_events WHERE new_value = 0") == [(4,)]
