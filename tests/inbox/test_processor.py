"""The inbox worker end to end: real IMAP server, real SMTP sink, real SQLite file."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import random
import shutil
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from mailer.errors import ImapError
from mailer.inbox import review
from mailer.inbox.imap import ImapClient
from mailer.inbox.processor import prepare_folders, run_pass
from mailer.store.db import open_db
from tests.helpers import ROOT, dovecot_only, run_cli
from tests.inbox.world import World, make_world
from tests.servers import HOST, DovecotServer, ImapTestServer, SmtpSink, sample_message

SUBJECT = "Unsubscribe special offers"


@pytest.fixture
async def world(tmp_path: Path, database: Path | str, imap_server: ImapTestServer,
                smtp_sink: SmtpSink
                ) -> AsyncIterator[World]:
    yield await make_world(tmp_path, imap_server, smtp_sink, database=database)


def request(sender: str, body: str = "Please stop.\n", subject: str = SUBJECT,
            headers: dict[str, str] | None = None) -> bytes:
    return sample_message(subject=subject, sender=sender, to="unsubscribe@imperial.test",
                          body=body, headers=headers)


def message_id_of(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"])


async def test_request_from_a_known_sender_opts_them_out_records_consent_and_confirms(
    world: World
) -> None:
    raw = request("Ann Lee <ANN@example.com>")
    world.deliver(raw)

    report = await world.process()

    assert report.as_json() == {"seen": 1, "requests": 1, "unsubscribed": 1, "review": 0,
                                "ignored": 0, "failed": 0,
                                "reports": 0, "bounces": 0, "complaints": 0}
    assert world.preferences("ann@example.com") == (False, False)
    assert world.query(
        "SELECT category, old_value, new_value, source, reference FROM consent_events "
        "WHERE source = 'email' ORDER BY category") == [
        ("announcements", 1, 0, "email", message_id_of(raw)),
        ("offers", 1, 0, "email", message_id_of(raw)),
    ]
    assert world.folder_subjects("INBOX") == []
    assert world.folder_subjects("Processed") == [SUBJECT]
    outbox = await world.send_confirmations()
    assert outbox.sent == 1
    (confirmation,) = world.sink.messages
    assert confirmation.rcpt_tos == ("ann@example.com",)
    parsed = email.message_from_bytes(confirmation.content, policy=email.policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["In-Reply-To"] == message_id_of(raw)
    assert message_id_of(raw) in str(parsed["References"])
    assert {p.get_content_type() for p in parsed.walk()} >= {"text/plain", "text/html"}


async def test_ordinary_mail_is_left_exactly_as_it_was(world: World) -> None:
    world.deliver(sample_message(subject="My bill is wrong", sender="ann@example.com"),
                  sample_message(subject="Unsubscribe me from the phone book",
                                 sender="bob@example.com"))

    report = await world.process()

    assert (report.seen, report.requests, report.ignored) == (2, 0, 2)
    with world.raw() as raw:
        assert raw.subjects("INBOX") == ["My bill is wrong", "Unsubscribe me from the phone book"]
        assert all(flags.isdisjoint({"\\Seen", "\\Deleted", "\\Flagged"})
                   for flags in raw.flags("INBOX").values())
    assert world.opted_out() == set()


@pytest.mark.parametrize("headers", [
    {"Auto-Submitted": "auto-replied"},
    {"X-Autoreply": "yes"},
    {"Precedence": "bulk"},
])
async def test_auto_replies_holding_the_phrase_are_never_requests_and_never_answered(
    world: World, headers: dict[str, str]
) -> None:
    world.deliver(request("ann@example.com", subject=f"Out of office: Re: {SUBJECT}",
                          headers=headers),
                  request("bob@example.com", headers=headers))

    report = await world.process()
    await world.send_confirmations()

    assert (report.requests, report.ignored) == (0, 2)
    assert world.opted_out() == set()
    assert world.sink.messages == []
    assert len(world.folder_subjects("INBOX")) == 2


async def test_mail_from_our_own_address_is_never_a_request(world: World) -> None:
    world.deliver(request("news@imperial.test"))
    report = await world.process()
    assert (report.requests, report.ignored) == (0, 1)


async def test_subject_variants_with_prefixes_and_encoded_words_are_requests(
    world: World
) -> None:
    world.deliver(
        request("ann@example.com", subject="RE: Fwd: AW:  unsubscribe SPECIAL offers!!"),
        request("bob@example.com", subject="=?UTF-8?B?VW5zdWJzY3JpYmUgc3BlY2lhbCBvZmZlcnM=?="),
        request("carol@example.com", subject="unsubscribe"),
    )
    report = await world.process()
    assert report.unsubscribed == 3
    assert world.opted_out() == {"ann@example.com", "bob@example.com", "carol@example.com"}


async def test_household_naming_two_addresses_in_the_body_honours_both(world: World) -> None:
    world.deliver(request("someone@elsewhere.net",
                          body="Please remove carol@example.com and dan@example.com.\n\n"
                               "> On Monday eve@example.com wrote:\n> quoted text\n"))
    report = await world.process()
    assert report.unsubscribed == 2
    assert world.opted_out() == {"carol@example.com", "dan@example.com"}
    await world.send_confirmations()
    # Confirmations go to the addresses on file, never to the unknown sender.
    assert sorted(m.rcpt_tos[0] for m in world.sink.messages) == [
        "carol@example.com", "dan@example.com"]


async def test_request_from_unknown_sender_naming_one_customer_is_honoured(world: World) -> None:
    world.deliver(request("Zoe at work <z.bronte@work.example>",
                          body="Hello,\nplease unsubscribe me.\n\nMs Zoe Bronte\n"))
    report = await world.process()
    assert report.unsubscribed == 1
    assert world.opted_out() == {"zoe@example.com"}


async def test_request_from_unknown_sender_naming_two_customers_goes_to_review(
    world: World
) -> None:
    world.deliver(request("John Smith <js@unknown.example>", body="Unsubscribe please.\n"))

    report = await world.process()
    await world.send_confirmations()

    assert (report.unsubscribed, report.review) == (0, 1)
    assert world.opted_out() == set()
    assert world.folder_subjects("Review") == [SUBJECT]
    assert world.sink.messages == []
    (reason,) = world.query("SELECT reason FROM review_items")
    assert "2 customers" in str(reason[0])


async def test_company_matching_two_customers_goes_to_review_and_changes_no_one(
    world: World
) -> None:
    world.deliver(request("office@unknown.example", body="Acme Widgets Ltd\n"))
    report = await world.process()
    assert report.review == 1
    assert world.opted_out() == set()


async def test_request_matching_nobody_goes_to_review(world: World) -> None:
    world.deliver(request("stranger@unknown.example", body="stop it\n"))
    report = await world.process()
    assert report.review == 1
    assert world.folder_subjects("Review") == [SUBJECT]


async def test_the_same_request_twice_changes_nothing_and_sends_nothing_the_second_time(
    world: World
) -> None:
    raw = request("ann@example.com")
    world.deliver(raw)
    await world.process()
    await world.send_confirmations()
    world.deliver(raw)  # a duplicate copy with the same Message-ID

    second = await world.process()
    await world.send_confirmations()

    assert second.unsubscribed == 0 and second.requests == 1
    assert len(world.sink.messages) == 1
    assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [(2,)]
    assert world.folder_subjects("Processed") == [SUBJECT, SUBJECT]


async def test_a_second_request_within_a_day_gets_no_second_confirmation(world: World) -> None:
    world.deliver(request("ann@example.com"), request("ann@example.com", subject="unsubscribe"))
    await world.process()
    await world.send_confirmations()
    assert len(world.sink.messages) == 1


async def test_request_never_opts_anyone_in(world: World) -> None:
    world.deliver(request("ann@example.com"))
    await world.process()
    world.deliver(request("ann@example.com", subject="Re: unsubscribe special offers"))
    await world.process()
    assert world.preferences("ann@example.com") == (False, False)
    assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [(2,)]


async def test_malformed_mail_goes_to_review_and_the_next_message_is_processed(
    world: World
) -> None:
    junk = (b"From: bob@example.com\r\nSubject: Unsubscribe special offers\r\n"
            b"Message-ID: <junk@example.com>\r\nContent-Type: multipart/mixed\r\n\r\n"
            + bytes(random.Random(7).randrange(256) for _ in range(3000)))
    world.deliver(junk, request("ann@example.com"))
    report = await world.process()
    assert report.unsubscribed == 1
    assert report.review + report.unsubscribed == 2
    assert "ann@example.com" in world.opted_out()


async def test_message_over_the_size_cap_goes_to_review_unread(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             imap={"max_message_bytes": 2000})
    world.deliver(request("ann@example.com", body="x" * 5000 + "\n"))
    report = await world.process()
    assert (report.review, report.unsubscribed) == (1, 0)
    (reason,) = world.query("SELECT reason FROM review_items")
    assert "over the 2000-byte cap" in str(reason[0])


async def test_two_hundred_mixed_messages_in_one_pass(world: World) -> None:
    known = ["ann@example.com", "bob@example.com", "carol@example.com", "dan@example.com",
             "eve@example.com"]
    messages: list[bytes] = []
    for i in range(200):
        kind = i % 4
        if kind == 0:
            messages.append(request(known[i % len(known)]))
        elif kind == 1:
            messages.append(sample_message(subject=f"Question {i}", sender=f"c{i}@example.net"))
        elif kind == 2:
            messages.append(request(f"stranger{i}@example.net", body="stop\n"))
        else:
            messages.append(request(known[i % len(known)],
                                    headers={"Auto-Submitted": "auto-replied"}))
    world.deliver(*messages)

    report = await world.process()
    await world.send_confirmations()

    assert report.as_json() == {"seen": 200, "requests": 100, "unsubscribed": 50,
                                "review": 50, "ignored": 100, "failed": 0,
                                "reports": 0, "bounces": 0, "complaints": 0}
    assert world.opted_out() == set(known)
    assert len(world.folder_subjects("INBOX")) == 100
    assert len(world.folder_subjects("Processed")) == 50
    assert len(world.folder_subjects("Review")) == 50
    # One confirmation per customer per day, however many requests they sent.
    assert sorted(m.rcpt_tos[0] for m in world.sink.messages) == sorted(known)


async def test_a_pass_costs_nothing_for_old_messages_already_seen(world: World) -> None:
    world.deliver(*[sample_message(subject=f"old {i}") for i in range(300)])
    first = await world.process()
    world.deliver(request("ann@example.com"))
    second = await world.process()
    assert first.seen == 300
    assert (second.seen, second.unsubscribed) == (1, 1)


@dovecot_only
async def test_server_without_move_gets_copy_delete_expunge(
    tmp_path: Path, database: Path | str, smtp_sink: SmtpSink
) -> None:
    with DovecotServer(without_move=True) as server:
        world = await make_world(tmp_path, server, smtp_sink, database=database)
        await without_move_pass(world)


async def without_move_pass(world: World) -> None:
    world.deliver(request("ann@example.com"), sample_message(subject="keep me"))
    client = await ImapClient.connect(world.imap)
    try:
        assert "MOVE" not in client.capabilities
        async with open_db(world.db_path) as conn:
            await prepare_folders(client, world.rules)
            report = await run_pass(client, conn, world.rules)
    finally:
        await client.close()
    assert report.unsubscribed == 1
    assert world.folder_subjects("INBOX") == ["keep me"]
    assert world.folder_subjects("Processed") == [SUBJECT]


async def test_connection_lost_after_commit_finishes_the_move_next_pass_without_redoing(
    world: World
) -> None:
    """Drop the connection right after the decision commits; the next pass only moves it."""
    world.deliver(request("ann@example.com"))

    class DropConnectionBeforeMove(ImapClient):
        async def move_many(self, uids: Sequence[int], folder: str) -> None:
            await self.close()
            await super().move_many(uids, folder)

    client = await DropConnectionBeforeMove.connect(world.imap)
    async with open_db(world.db_path) as conn:
        await prepare_folders(client, world.rules)
        with pytest.raises(ImapError):
            await run_pass(client, conn, world.rules)
    await client.close()
    assert world.opted_out() == {"ann@example.com"}
    assert world.folder_subjects("INBOX") == [SUBJECT]

    report = await world.process()
    await world.send_confirmations()

    assert report.seen == 0
    assert world.folder_subjects("INBOX") == []
    assert world.folder_subjects("Processed") == [SUBJECT]
    assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [(2,)]
    assert len(world.sink.messages) == 1


async def test_cli_process_json_prints_the_counts(world: World) -> None:
    world.deliver(request("ann@example.com"), sample_message(subject="hello"))
    result = run_cli(world.settings_path, "inbox", "process", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == {"seen": 2, "requests": 1, "unsubscribed": 1,
                                         "review": 0, "ignored": 1, "failed": 0,
                                "reports": 0, "bounces": 0, "complaints": 0}
    assert len(world.sink.messages) == 1


async def test_review_resolve_applies_the_opt_out_like_an_automatic_match(world: World) -> None:
    world.deliver(request("John Smith <js@unknown.example>"))
    await world.process()
    listed = run_cli(world.settings_path, "review", "list", "--json")
    (item,) = json.loads(listed.stdout)
    assert item["status"] == "open"

    resolved = run_cli(world.settings_path, "review", "resolve", str(item["id"]),
                       "--customer", "jsmith@example.org")
    assert resolved.code == 0, resolved.stderr
    again = run_cli(world.settings_path, "review", "resolve", str(item["id"]), "--dismiss")
    await world.send_confirmations()

    assert again.code == 1 and "already resolved" in again.stderr
    assert world.opted_out() == {"jsmith@example.org"}
    assert world.folder_subjects("Review") == []
    assert world.folder_subjects("Processed") == [SUBJECT]
    assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [(2,)]
    assert [m.rcpt_tos for m in world.sink.messages] == [("jsmith@example.org",)]


async def test_review_dismiss_changes_no_one_and_files_the_message(world: World) -> None:
    world.deliver(request("stranger@unknown.example"),
                  request("other@unknown.example", subject="unsubscribe"))
    await world.process()
    result = run_cli(world.settings_path, "review", "resolve", "1", "--dismiss")
    assert result.code == 0, result.stderr
    assert world.opted_out() == set()
    # Only the settled one leaves the review folder.
    assert world.folder_subjects("Review") == ["unsubscribe"]
    assert world.folder_subjects("Processed") == [SUBJECT]
    (still_open,) = json.loads(run_cli(world.settings_path, "review", "list", "--json").stdout)
    assert still_open["id"] == 2


async def test_a_settled_review_stands_when_the_imap_server_is_down(world: World) -> None:
    world.deliver(request("John Smith <js@unknown.example>"))
    await world.process()
    world.server.stop()
    result = run_cli(world.settings_path, "review", "resolve", "1",
                     "--customer", "john.smith@example.com")
    assert result.code == 0
    assert "the message stays in Review for now" in result.stderr
    assert world.opted_out() == {"john.smith@example.com"}


async def test_filing_a_settled_review_gives_up_on_a_server_that_never_answers(
    world: World,
) -> None:
    """A listener that accepts and then says nothing, with a command timeout far longer than
    the filing's own: the filing's limit is the one that ends it, with one line."""
    silent = socket.create_server((HOST, 0))
    try:
        config = dataclasses.replace(world.imap, port=silent.getsockname()[1], timeout_s=600)
        line = await review.file_settled(config, world.rules, "<settled@example.com>",
                                         timeout_s=0.2)
    finally:
        silent.close()
    assert line == ("the message stays in Review for now: "
                    f"IMAP server {HOST}: no answer within 0.2 s")


async def test_a_broken_confirmation_template_stops_the_worker_at_start_naming_it(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "confirmation.txt").write_text("Dear {{ customer_nmae }},\n")
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             templates={"dir": str(templates)})
    world.deliver(request("ann@example.com"))

    result = run_cli(world.settings_path, "inbox", "process")

    assert result.code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "confirmation.txt" in line and "customer_nmae" in line
    assert world.opted_out() == set()
    assert world.folder_subjects("INBOX") == [SUBJECT]
