"""`run_pending_erasures` against Dovecot: a clean-up that fails is postponed with backoff and
its error kept; once done it is forgotten, and running it again changes nothing."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.consent import rights
from mailer.consent.imports import import_csv
from mailer.errors import ImapError
from mailer.inbox.imap import ImapClient, ImapConfig
from mailer.store import customers as customer_store
from mailer.store.db import open_db
from tests import dbrows
from tests.servers import RawImap, sample_message

KEY = b"a test key of at least sixteen characters"
CSV = "name,email\nAnn Lee,ann@example.com\nBob Roe,bob@example.com\n"


async def test_a_failed_clean_up_is_postponed_then_finished_once(
    tmp_path: Path, imap_config: ImapConfig, raw_imap: RawImap, database: Path | str
) -> None:
    raw_imap.command('CREATE "Processed"')
    raw_imap.append_many("Processed", [
        sample_message(sender="ann@example.com", body="stop\n"),
        sample_message(sender="bob@example.com", body="Ann Lee asked me to write.\n"),
        sample_message(sender="carol@example.net", body="hello\n")])
    now = datetime.now(UTC) + timedelta(hours=1)  # after the erasure: the clean-up is due
    async with open_db(database) as conn:
        await import_csv(conn, io.BytesIO(CSV.encode()), name="c.csv", consent=True,
                         suppression_key=KEY)
        await rights.erase(conn, "ann@example.com", key=KEY, reason="asked", actor="test")
        lost = await ImapClient.connect(imap_config)
        await lost.close()
        with pytest.raises(ImapError):  # the connection is gone
            await rights.run_pending_erasures(conn, lost, ["Processed"], now=now)
        ((attempts, error, due),) = dbrows.rows(
            database, "SELECT attempts, last_error, next_attempt_at FROM erasure_imap_pending")
        assert attempts == 1 and error
        assert due == (now + timedelta(seconds=60)).isoformat()
        async with await ImapClient.connect(imap_config) as mailbox:
            assert await rights.run_pending_erasures(conn, mailbox, ["Processed"], now=now) == 0
            later = now + timedelta(minutes=2)
            assert await rights.run_pending_erasures(conn, mailbox, ["Processed"],
                                                     now=later) == 1
            assert await rights.run_pending_erasures(conn, mailbox, ["Processed"],
                                                     now=later) == 0
    assert raw_imap.subjects("Processed") == ["Hello"]
    assert len(raw_imap.uids("Processed")) == 1


async def test_an_erased_customer_cannot_be_opted_back_in_by_an_old_link(
    database: Path | str
) -> None:
    async with open_db(database) as conn:
        await import_csv(conn, io.BytesIO(CSV.encode()), name="c.csv", consent=True,
                         suppression_key=KEY)
        ann = await customer_store.get_by_email(conn, "ann@example.com")
        assert ann is not None
        await rights.erase(conn, "ann@example.com", key=KEY, reason="asked", actor="test")
        changed = await customer_store.opt_in(conn, ann.id, ["offers"],
                                              source="preference page", reference="old link")
        assert changed == []
        erased = await customer_store.get(conn, ann.id)
        assert erased is not None and erased.preferences == {"announcements": False,
                                                             "offers": False}
