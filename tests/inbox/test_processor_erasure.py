"""A request that asks to delete the sender's data, end to end (real IMAP, real SQLite): it is
still honoured as an opt-out, and also goes to review marked "asks for erasure"; nothing is
erased by mail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink, sample_message

SUBJECT = "Unsubscribe special offers"


@pytest.fixture
async def world(tmp_path: Path, database: Path | str, imap_server: ImapTestServer,
                smtp_sink: SmtpSink
                ) -> AsyncIterator[World]:
    yield await make_world(tmp_path, imap_server, smtp_sink, database=database)


async def test_a_request_asking_for_erasure_opts_out_and_goes_to_review_marked_so(
    world: World
) -> None:
    (email,) = world.query("SELECT email FROM customers ORDER BY id LIMIT 1")[0]
    world.deliver(
        sample_message(subject=SUBJECT, sender=str(email), to="unsubscribe@imperial.test",
                       body="Stop the offers and delete my data (right to be forgotten).\n"),
        sample_message(subject=SUBJECT, sender="nobody@unknown.example",
                       to="unsubscribe@imperial.test", body="GDPR: erase me.\n"),
    )

    report = await world.process()

    assert report.unsubscribed == 1
    assert str(email) in world.opted_out()
    assert world.folder_subjects("Review") == [SUBJECT, SUBJECT]
    assert world.folder_subjects("Processed") == []
    reasons = [r for (r,) in world.query("SELECT reason FROM review_items ORDER BY id")]
    assert len(reasons) == 2
    assert all(str(r).startswith("asks for erasure; ") for r in reasons)
    assert world.query("SELECT count(*) FROM customers WHERE email = ?", email) == [(1,)]


async def test_other_mail_whose_subject_asks_for_erasure_goes_to_review_and_opts_no_one_out(
    world: World
) -> None:
    (email,) = world.query("SELECT email FROM customers ORDER BY id LIMIT 1")[0]
    world.deliver(
        sample_message(subject="GDPR: please delete my data", sender=str(email),
                       to="unsubscribe@imperial.test", body="Thank you.\n"),
        sample_message(subject="Lunch on Friday?", sender=str(email),
                       to="unsubscribe@imperial.test", body="Delete my data? No, just lunch.\n"),
    )

    report = await world.process()

    assert (report.unsubscribed, report.review) == (0, 1)
    assert world.opted_out() == set()
    assert world.folder_subjects("Review") == ["GDPR: please delete my data"]
    assert world.folder_subjects("INBOX") == ["Lunch on Friday?"]  # ordinary mail: untouched
    assert world.query("SELECT reason FROM review_items") == [
        ("asks for erasure; not an unsubscribe request",)]
