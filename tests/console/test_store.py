"""The console's store queries on both engines (SQLite and PostgreSQL) and a real send to the
SMTP sink: running totals agree with the ledger, the daily roll-ups agree with the events, and
customer search finds by words and by address prefix, a page at a time, whatever is typed."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from mailer.campaigns import service
from mailer.consent import imports
from mailer.consent.change import Refusal, Thread, opt_out
from mailer.store import campaigns as campaign_store
from mailer.store import console as console_store
from mailer.store import users
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
    tmp_path: Path, smtp_sink: SmtpSink, database: Path | str
) -> None:
    world = World.build(tmp_path, smtp_sink, database)
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


async def test_search_finds_every_word_as_a_prefix_a_page_at_a_time(
    tmp_path: Path, smtp_sink: SmtpSink, database: Path | str
) -> None:
    world = World.build(tmp_path, smtp_sink, database)
    async with open_db(world.db) as conn:
        report = await imports.import_csv(conn, io.BytesIO(
            b"name,email,company\n"
            b"Ann Lee,ann.lee@example.com,Lee Ltd\n"
            b"Annabel Leeson,bel@example.com,\n"
            b"Ann Other,other@example.org,Lee-Roe plc\n"
            b"Bob Roe,bob@example.com,O'Brien & Co\n"), name="c.csv", consent=True)
        assert report.ok

        async def names(text: str, after: int = 0, limit: int = 25) -> list[str]:
            page = await console_store.search_customers(conn, text, after=after, limit=limit)
            return [c.name for c in page.customers]

        assert await names("ann lee") == ["Ann Lee", "Annabel Leeson", "Ann Other"]
        assert await names("ANN  lee ltd") == ["Ann Lee"]
        assert await names("roe") == ["Ann Other", "Bob Roe"]
        assert await names("o'brien") == ["Bob Roe"]
        # Search syntax of either engine is read as words, never as an operator.
        assert await names("ann & !lee | (") == ["Ann Lee", "Annabel Leeson", "Ann Other"]
        assert await names('ann" OR "bob') == []
        assert await names("'':* | bob") == ["Bob Roe"]
        assert await names("!!! &") == []
        # An address, or its start, whatever its case.
        assert await names("ANN.LEE@example.com") == ["Ann Lee"]
        assert await names("bo@") == []
        assert await names("b@") == []
        first = await console_store.search_customers(conn, "ann", limit=2)
        assert [c.name for c in first.customers] == ["Ann Lee", "Annabel Leeson"]
        assert first.next_after is not None
        assert await names("ann", after=first.next_after, limit=2) == ["Ann Other"]


async def test_the_audit_log_pages_newest_first_and_the_queues_and_counts_read_back(
    tmp_path: Path, smtp_sink: SmtpSink, database: Path | str
) -> None:
    world = World.build(tmp_path, smtp_sink, database)
    await world.add_customers(3, offers_every=2)
    async with open_db(world.db) as conn:
        for n in range(5):
            await users.audit(conn, "alice", "campaign.create", f"campaign {n}")
        first = await console_store.audit_page(conn, limit=3)
        assert [e.target for e in first.entries] == ["campaign 4", "campaign 3", "campaign 2"]
        assert first.next_before is not None
        rest = await console_store.audit_page(conn, before=first.next_before, limit=3)
        assert [e.target for e in rest.entries] == ["campaign 1", "campaign 0"]
        assert rest.next_before is None
        assert await console_store.queue_facts(conn) == console_store.QueueFacts(0, 0, 0)
        assert await console_store.opted_in_counts(conn) == {"announcements": 3, "offers": 2}
        facts = await console_store.deliverability(conn, 1)
        assert (facts.sent, facts.failed, facts.last_failure) == (0, 0, "")


async def test_search_pages_match_the_whole_ordered_list_for_common_and_rare_words(
    tmp_path: Path, smtp_sink: SmtpSink, database: Path | str
) -> None:
    # More customers than a page's id-order walk covers: a common word (every fifth
    # customer) is paged from the walk, a rare one that only later customers have from the
    # index; either way the pages are exactly the matches in id order.
    world = World.build(tmp_path, smtp_sink, database)
    total = 7000
    lines = ["name,email,company"]
    for i in range(total):
        name = "Common Person" if i % 5 == 0 else "Other Person"
        company = "Rareword Ltd" if i > 6000 and i % 97 == 0 else ""
        lines.append(f"{name} {i},p{i}@example.com,{company}")
    async with open_db(world.db) as conn:
        report = await imports.import_csv(conn, io.BytesIO("\n".join(lines).encode()),
                                          name="many.csv", consent=True)
        assert report.ok

        async def every_page(text: str) -> list[str]:
            found: list[str] = []
            after = 0
            while True:
                page = await console_store.search_customers(conn, text, after=after, limit=25)
                found += [c.email for c in page.customers]
                if page.next_after is None:
                    return found
                after = page.next_after

        assert await every_page("common") == [f"p{i}@example.com" for i in range(0, total, 5)]
        assert await every_page("rareword") == [
            f"p{i}@example.com" for i in range(6001, total) if i % 97 == 0]
