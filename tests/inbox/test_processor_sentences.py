"""Requests naming a customer inside a sentence, end to end: real IMAP server, real SQLite."""

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


def request(sender: str, body: str, subject: str = SUBJECT) -> bytes:
    return sample_message(subject=subject, sender=sender, to="unsubscribe@imperial.test",
                          body=body)


async def test_a_sentence_request_is_honoured_and_a_near_miss_goes_to_review(
    world: World
) -> None:
    world.deliver(
        request("office@unknown.example",
                "Hello,\nplease take Hall Holdings plc off your mailing lists.\nThanks\n"),
        request("someone@unknown.example",
                "Please unsubscribe me. My colleague Zoë Brontë still wants your offers.\n",
                subject=f"Re: {SUBJECT}"),
    )

    report = await world.process()
    await world.send_confirmations()

    assert (report.requests, report.unsubscribed, report.review) == (2, 1, 1)
    assert world.opted_out() == {"grace@example.com"}
    assert world.preferences("zoe@example.com") == (True, True)
    assert world.folder_subjects("Processed") == [SUBJECT]
    assert world.folder_subjects("Review") == [f"Re: {SUBJECT}"]
    (reason,) = world.query("SELECT reason FROM review_items")
    assert reason == ("name 'zoe bronte' is mentioned as someone else ('colleague')",)
    # The confirmation goes to the address on file, never to the unknown sender.
    assert [m.rcpt_tos for m in world.sink.messages] == [("grace@example.com",)]


async def test_a_person_named_in_a_sentence_is_honoured_and_a_partial_name_is_not(
    world: World
) -> None:
    world.deliver(
        request("friend@unknown.example",
                "Carol Diaz no longer wishes to receive offers, thank you.\n"),
        request("other@unknown.example",
                "Could you remove Dan Diaz-Lopez from your list?\n", subject=f"Re: {SUBJECT}"),
    )

    report = await world.process()

    assert (report.unsubscribed, report.review) == (1, 1)
    assert world.opted_out() == {"carol@example.com"}
    (reason,) = world.query("SELECT reason FROM review_items")
    assert reason == ("name 'dan diaz' is only part of a longer name in the message",)
