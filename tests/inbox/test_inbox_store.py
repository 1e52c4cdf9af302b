"""mailer.store.inbox on either engine: what concurrent passes may write twice."""

from __future__ import annotations

from pathlib import Path

from mailer.store import inbox as inbox_store
from mailer.store.db import open_db, transaction


async def test_two_passes_recording_the_same_duplicate_keep_one_row_and_both_commit(
    database: Path | str
) -> None:
    decided = inbox_store.InboundRow(message_key="<1@example.org>", message_id="<1@example.org>",
                                     uid=7, outcome="unsubscribed", destination="Processed",
                                     detail="address: customers [1]")
    duplicate = inbox_store.InboundRow(
        message_key="<1@example.org>#dup:42:7", message_id="<1@example.org>", uid=7,
        outcome="duplicate", destination="Processed", detail="duplicate of <1@example.org>")
    async with open_db(database) as conn:
        async with transaction(conn):
            await inbox_store.record_inbound_many(conn, "INBOX", 42, [decided])
        for _ in range(2):  # a cron pass and the daemon's, each finding it decided
            async with transaction(conn):
                await inbox_store.record_inbound_many(conn, "INBOX", 42, [duplicate])

        assert await inbox_store.existing_keys(
            conn, [decided.message_key, duplicate.message_key]) == {
            decided.message_key, duplicate.message_key}
        assert [u.uid for u in await inbox_store.unmoved(conn, "INBOX", 42)] == [7, 7]
