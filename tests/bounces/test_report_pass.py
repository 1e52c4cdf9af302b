"""Delivery reports and complaints in the inbox pass, end to end: confirmations
really sent through the outbox to the aiosmtpd sink, reports written the way real MTAs write
them and addressed to the VERP address each confirmation went out with, appended to a real
Dovecot, processed by the real pass (and by real `mailer` processes, one killed with -9)."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dkim as dkimpy
import pytest

from mailer.categories import CATEGORIES
from mailer.mail import verp
from mailer.mail.dkim import load_signer
from mailer.store import outbox as outbox_store
from mailer.store.db import open_db, transaction
from tests.fixtures.reports import CORPUS, load
from tests.helpers import ROOT, run_cli
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink, sample_message
from tests.waiting import wait_for_sync

BOUNCE_ADDRESS = "bounces@imperialtelecom.co.uk"
SECRET = "campaign-secret-for-the-tests-0123456789"


@pytest.fixture
async def world(tmp_path: Path, database: Path | str, imap_server: ImapTestServer,
                smtp_sink: SmtpSink
                ) -> AsyncIterator[World]:
    yield await make_world(tmp_path, imap_server, smtp_sink, database=database,
                           bounces={"address": BOUNCE_ADDRESS},
                           campaigns={"secret": SECRET})


@dataclass(frozen=True)
class Sent:
    """A confirmation as it really left: its outbox row, envelope sender and Message-ID."""

    outbox_id: int
    mail_from: str
    message_id: str
    recipient: str


async def send_confirmation(world: World, email_address: str) -> Sent:
    """Queue a confirmation for the customer as `consent.change.opt_out` does, and send it
    through the outbox."""
    [(customer_id, name)] = world.query("SELECT id, name FROM customers WHERE email = ?",
                                        email_address)
    async with open_db(world.db_path) as conn, transaction(conn):
        await outbox_store.enqueue_confirmations(conn, [outbox_store.NewConfirmation(
            customer_id=int(str(customer_id)), to_address=email_address, to_name=str(name),
            categories=("offers",), request_subject="Unsubscribe special offers",
            in_reply_to="", refs=())], interval_h=0.0, now=datetime.now(UTC))
    before = len(world.sink.messages)
    assert (await world.send_confirmations()).sent == 1
    received = world.sink.messages[before]
    parsed = email.message_from_bytes(received.content, policy=email.policy.default)
    [(outbox_id, message_id)] = world.query(
        "SELECT id, message_id FROM outbox ORDER BY id DESC LIMIT 1")
    assert parsed["Message-ID"] == message_id
    return Sent(int(str(outbox_id)), received.mail_from, str(message_id), email_address)


def report(name: str, sent: Sent, *, report_id: str | None = None,
           mail_from: str | None = None, message_id: str | None = None) -> bytes:
    raw = load(name, verp=mail_from or sent.mail_from, recipient=sent.recipient,
               message_id=message_id or sent.message_id)
    if report_id is not None:
        # The report's own Message-ID (the first one, in its top header): a different report.
        raw = re.sub(rb"(?im)^Message-I[dD]:[ \t]*<[^>]*>", f"Message-ID: {report_id}".encode(),
                     raw, count=1)
    return raw


def undeliverable(world: World) -> dict[str, str]:
    return {str(e): str(r) for e, r in world.query(
        "SELECT c.email, u.reason FROM undeliverable u JOIN customers c ON c.id = u.customer_id")}


def delivery_events(world: World, email_address: str) -> list[tuple[object, ...]]:
    return world.query(
        "SELECT e.event, e.source, e.reason FROM delivery_events e "
        "JOIN customers c ON c.id = e.customer_id WHERE c.email = ? ORDER BY e.id",
        email_address)


def consent_rows(world: World) -> list[tuple[object, ...]]:
    return world.query("SELECT * FROM consent_events ORDER BY id")


# --- the outbox side: what a confirmation carries --------------------------------------------


async def test_confirmation_goes_out_from_its_own_verp_address_with_a_random_recorded_message_id(
    world: World,
) -> None:
    first = await send_confirmation(world, "ann@example.com")
    second = await send_confirmation(world, "ann@example.com")

    for sent in (first, second):
        tag = verp.parse(sent.mail_from, bounce_address=BOUNCE_ADDRESS, secret=SECRET)
        assert tag == verp.Tag.confirmation(sent.outbox_id)
        assert re.fullmatch(r"<[0-9a-f]{32}@imperial\.test>", sent.message_id)
    assert first.message_id != second.message_id
    assert "ann" not in first.mail_from


async def test_confirmation_is_dkim_signed_and_verifies_when_dkim_is_set(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             bounces={"address": BOUNCE_ADDRESS, "verp": False},
                             campaigns={"secret": SECRET},
                             dkim={"domain": "imperial.test", "selector": "s1",
                                   "private_key_file": str(key)})
    sent = await send_confirmation(world, "bob@example.com")
    assert sent.mail_from == BOUNCE_ADDRESS  # verp = false: the bare bounce address
    signer = load_signer(world.settings.dkim)
    assert signer is not None

    def dns(name: bytes | str, timeout: int = 5) -> bytes | None:
        asked = name if isinstance(name, bytes) else name.encode()
        return signer.dns_value().encode() if asked.rstrip(b".") == signer.dns_name().encode() \
            else None

    content = world.sink.messages[-1].content
    assert content.startswith(b"DKIM-Signature:")
    assert dkimpy.verify(content, dnsfunc=dns)
    assert not dkimpy.verify(content.replace(b"bob@example.com", b"eve@example.com"), dnsfunc=dns)

    listed = run_cli(world.settings_path, "dkim", "dns")
    assert listed.code == 0, listed.stderr
    assert listed.stdout.strip() == signer.dns_record()


async def test_missing_dkim_key_stops_inbox_process_with_one_line_naming_it(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             dkim={"domain": "imperial.test", "selector": "s1",
                                   "private_key_file": str(tmp_path / "absent.pem")})
    for command in (("inbox", "process"), ("dkim", "dns")):
        result = run_cli(world.settings_path, *command)
        assert result.code == 2
        [line] = result.stderr.strip().splitlines()
        assert "[dkim] private_key_file" in line and "absent.pem" in line


# --- the inbox side: what a report does -------------------------------------------------------


async def test_hard_bounce_of_a_confirmation_makes_the_address_undeliverable_and_is_moved(
    world: World,
) -> None:
    world.deliver(sample_message(subject="Unsubscribe special offers", sender="ann@example.com",
                                 to="unsubscribe@imperial.test"))
    await world.process()
    await world.send_confirmations()
    [confirmation] = world.sink.messages
    [(outbox_id, message_id)] = world.query("SELECT id, message_id FROM outbox")
    sent = Sent(int(str(outbox_id)), confirmation.mail_from, str(message_id), "ann@example.com")
    consent_before = consent_rows(world)

    world.deliver(report("postfix-dsn-5.1.1", sent))
    result = await world.process()

    assert (result.reports, result.bounces, result.complaints) == (1, 1, 0)
    assert set(undeliverable(world)) == {"ann@example.com"}
    [(event, source, reason)] = delivery_events(world, "ann@example.com")
    assert (event, source) == ("undeliverable", "bounce")
    assert "5.1.1" in str(reason) and "User unknown" in str(reason)
    assert consent_rows(world) == consent_before  # a fact about the address, not a choice
    assert world.folder_subjects("Bounces") == ["Undelivered Mail Returned to Sender"]
    assert world.folder_subjects("INBOX") == []
    assert len(world.sink.messages) == 1  # never answered
    assert (await world.send_confirmations()).sent == 0

    shown = run_cli(world.settings_path, "customers", "show", "ann@example.com", "--json")
    data = json.loads(shown.stdout)
    assert data["deliverable"] is False and "5.1.1" in data["undeliverable_reason"]
    assert [e["source"] for e in data["delivery_history"]] == ["bounce"]

    listed = json.loads(run_cli(world.settings_path, "bounces", "list", "--json").stdout)
    assert [(r["kind"], r["outcome"], r["outbox_id"], r["tied_by"], r["moved"])
            for r in listed] == [("hard", "undeliverable", sent.outbox_id, "verp", True)]

    back = run_cli(world.settings_path, "customers", "reactivate", "ann@example.com",
                   "--by", "Priya (support)")
    assert back.code == 0, back.stderr
    assert undeliverable(world) == {}
    assert [(e, s) for e, s, _ in delivery_events(world, "ann@example.com")] == [
        ("undeliverable", "bounce"), ("reactivated", "operator")]
    assert world.query("SELECT actor FROM delivery_events ORDER BY id DESC LIMIT 1") == [
        ("Priya (support)",)]


async def test_soft_bounces_count_per_message_and_the_limit_within_the_window_stops_mail(
    world: World,
) -> None:
    sent = [await send_confirmation(world, "carol@example.com") for _ in range(3)]

    for number, one in enumerate(sent[:2], start=1):
        world.deliver(report("postfix-dsn-4.2.2-failed", one, report_id=f"<soft{number}@mx>"))
        result = await world.process()
        assert (result.reports, result.bounces) == (1, 1)
        assert undeliverable(world) == {}  # a 4.2.2 with Action: failed is still soft
    world.deliver(report("postfix-dsn-4.2.2-failed", sent[2], report_id="<soft3@mx>"))
    await world.process()

    assert set(undeliverable(world)) == {"carol@example.com"}
    [(event, source, reason)] = delivery_events(world, "carol@example.com")
    assert (event, source) == ("undeliverable", "soft bounces")
    assert "3 soft bounces within 30 days" in str(reason)
    assert len(world.folder_subjects("Bounces")) == 3


async def test_complaint_opts_out_of_everything_with_source_complaint_and_no_confirmation(
    world: World,
) -> None:
    sent = await send_confirmation(world, "dan@example.com")
    outbox_rows = world.query("SELECT count(*) FROM outbox")
    mails = len(world.sink.messages)

    world.deliver(report("yahoo-arf", sent))
    result = await world.process()

    assert (result.reports, result.bounces, result.complaints) == (1, 0, 1)
    assert world.preferences("dan@example.com") == (False, False)
    changes = {(str(c), str(s)) for c, s in world.query(
        "SELECT e.category, e.source FROM consent_events e JOIN customers c "
        "ON c.id = e.customer_id WHERE c.email = 'dan@example.com' AND e.source != 'import'")}
    assert changes == {(c, "complaint") for c in CATEGORIES}
    assert world.query("SELECT count(*) FROM outbox") == outbox_rows
    assert (await world.send_confirmations()).sent == 0
    assert len(world.sink.messages) == mails
    assert undeliverable(world) == {}
    assert len(world.folder_subjects("Bounces")) == 1


async def test_forged_tampered_and_untied_reports_change_nobody_stay_and_get_no_reply(
    world: World,
) -> None:
    sent = await send_confirmation(world, "eve@example.com")
    local, _, domain = sent.mail_from.partition("@")
    tampered = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    other_row = verp.address(BOUNCE_ADDRESS, verp.Tag.confirmation(sent.outbox_id + 1),
                             "not-our-secret")
    foreign = "bounces+n1-aaaaaaaaaaaaaaaa@elsewhere.example"
    unknown_id = "<never-sent-by-us@imperial.test>"
    world.deliver(
        report("postfix-dsn-5.1.1", sent, mail_from=tampered, message_id=unknown_id,
               report_id="<f1@mx>"),
        report("exim-plain", sent, mail_from=other_row, message_id=unknown_id,
               report_id="<f2@mx>"),
        report("yahoo-arf", sent, mail_from=foreign, message_id=unknown_id,
               report_id="<f3@mx>"),
        report("microsoft-arf", sent, mail_from=tampered, message_id=unknown_id,
               report_id="<f4@mx>"),
    )
    consent_before, mails = consent_rows(world), len(world.sink.messages)

    result = await world.process()

    assert (result.reports, result.bounces, result.complaints) == (4, 0, 0)
    assert undeliverable(world) == {}
    assert world.preferences("eve@example.com") == (True, True)
    assert consent_rows(world) == consent_before
    assert len(world.folder_subjects("INBOX")) == 4
    assert world.folder_subjects("Bounces") == []
    assert (await world.send_confirmations()).sent == 0
    assert len(world.sink.messages) == mails
    assert {str(o) for (o,) in world.query("SELECT outcome FROM delivery_reports")} == {"ignored"}


async def test_holiday_auto_reply_to_a_verp_address_is_not_a_bounce_and_stays(
    world: World,
) -> None:
    sent = await send_confirmation(world, "frank@example.com")
    world.deliver(report("vacation-autoreply", sent), report("vacation-plain", sent))

    result = await world.process()

    assert (result.reports, result.bounces, result.ignored) == (0, 0, 2)
    assert world.query("SELECT count(*) FROM delivery_reports") == [(0,)]
    assert undeliverable(world) == {} and world.preferences("frank@example.com") == (True, True)
    assert len(world.folder_subjects("INBOX")) == 2


async def test_the_same_report_twice_counts_once_and_both_copies_are_moved(world: World) -> None:
    sent = await send_confirmation(world, "grace@example.com")
    raw = report("postfix-dsn-5.1.1", sent)
    world.deliver(raw, raw)

    first = await world.process()
    world.deliver(raw)
    second = await world.process()

    assert (first.reports, first.bounces) == (1, 1)
    assert (second.reports, second.bounces) == (0, 0)
    assert world.query("SELECT count(*) FROM delivery_reports") == [(1,)]
    assert len(delivery_events(world, "grace@example.com")) == 1
    assert len(world.folder_subjects("Bounces")) == 3
    assert world.folder_subjects("INBOX") == []


async def test_flufl_bounce_real_world_corpus_changes_nobody_and_stays_in_the_inbox(
    world: World,
) -> None:
    await send_confirmation(world, "ann@example.com")
    consent_before = consent_rows(world)
    world.deliver(*(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                    for path in CORPUS))

    result = await world.process()

    assert result.seen == len(CORPUS)
    assert (result.bounces, result.complaints) == (0, 0)
    assert undeliverable(world) == {}
    assert consent_rows(world) == consent_before
    with world.raw() as raw:
        assert len(raw.uids("INBOX")) == len(CORPUS)
        assert raw.uids("Bounces") == []


async def test_reports_in_the_bounces_imap_mailbox_are_read_there_and_requests_are_not(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    mailbox = {"host": imap_server.host, "port": imap_server.port, "security": "none",
               "username": imap_server.username, "password": imap_server.password,
               "folder": "BounceBox", "processed_folder": "BounceDone",
               "review_folder": "BounceReview"}
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             bounces={"address": BOUNCE_ADDRESS},
                             campaigns={"secret": SECRET}, **{"bounces.imap": mailbox})
    sent = await send_confirmation(world, "bob@example.com")
    with world.raw() as raw:
        raw.command('CREATE "BounceBox"')
    world.deliver(report("exim-plain", sent),
                  sample_message(subject="Unsubscribe special offers", sender="ann@example.com"),
                  folder="BounceBox")
    world.deliver(report("postfix-dsn-5.1.1", sent, report_id="<in-main@mx>"))

    result = run_cli(world.settings_path, "inbox", "process", "--json")

    assert result.code == 0, result.stderr
    counts = json.loads(result.stdout)
    assert (counts["reports"], counts["bounces"], counts["requests"]) == (1, 1, 0)
    assert set(undeliverable(world)) == {"bob@example.com"}
    assert world.preferences("ann@example.com") == (True, True)
    assert world.folder_subjects("BounceBox") == ["Unsubscribe special offers"]
    assert len(world.folder_subjects("INBOX")) == 1  # reports are read in BounceBox only


async def test_kill_9_between_commit_and_move_is_finished_by_the_next_pass_counting_nothing(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    # One message per batch: many commits, and the moves only at the end of the pass.
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             bounces={"address": BOUNCE_ADDRESS}, campaigns={"secret": SECRET},
                             imap={"fetch_batch": 1})
    sent = await send_confirmation(world, "ann@example.com")
    world.deliver(report("postfix-dsn-5.1.1", sent))
    # Plenty of ordinary mail after it, so the pass is still busy well after the report's
    # batch committed and before the moves at the end of the pass.
    world.deliver(*(sample_message(subject=f"Question {i}") for i in range(400)))

    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path),
         "inbox", "process"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def committed() -> bool:
            assert process.poll() is None, "the pass ended before the report was committed"
            return bool(world.query("SELECT 1 FROM delivery_reports"))

        wait_for_sync(committed, what="the report committed", interval_s=0.005)
        os.kill(process.pid, signal.SIGSTOP)
        assert world.query("SELECT moved FROM delivery_reports") == [(0,)]
        assert "Undelivered Mail Returned to Sender" in world.folder_subjects("INBOX")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert set(undeliverable(world)) == {"ann@example.com"}

    result = await world.process()

    assert (result.reports, result.bounces) == (0, 0)
    assert world.folder_subjects("Bounces") == ["Undelivered Mail Returned to Sender"]
    assert "Undelivered Mail Returned to Sender" not in world.folder_subjects("INBOX")
    assert world.query("SELECT count(*), sum(moved) FROM delivery_reports") == [(1, 1)]
    assert len(delivery_events(world, "ann@example.com")) == 1


async def test_the_daemon_reads_reports_in_its_inbox_and_in_the_bounces_imap_mailbox(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    mailbox = {"host": imap_server.host, "port": imap_server.port, "security": "none",
               "username": imap_server.username, "password": imap_server.password,
               "folder": "BounceBox", "processed_folder": "BounceDone",
               "review_folder": "BounceReview", "poll_interval_s": 0.5}
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             bounces={"address": BOUNCE_ADDRESS},
                             campaigns={"secret": SECRET}, **{"bounces.imap": mailbox})
    to_bob = await send_confirmation(world, "bob@example.com")
    to_dan = await send_confirmation(world, "dan@example.com")
    with world.raw() as raw:
        raw.command('CREATE "BounceBox"')

    daemon = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), "run"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        world.deliver(report("exim-plain", to_bob), folder="BounceBox")
        world.deliver(report("microsoft-arf", to_dan), folder="BounceBox")
        def processed() -> bool:
            assert daemon.poll() is None, "the daemon stopped"
            return (set(undeliverable(world)) == {"bob@example.com"}
                    and world.preferences("dan@example.com") == (False, False))

        wait_for_sync(processed, what="both reports processed")
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "kind=hard" in log and "kind=complaint" in log
    assert "bob@example.com" not in log and "dan@example.com" not in log  # ids only
    assert len(world.folder_subjects("Bounces")) == 2
