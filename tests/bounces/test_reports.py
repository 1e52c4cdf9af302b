"""Reading reports: RFC 3464 bounces, RFC 5965 complaints, MTAs' own formats; never auto-replies."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.bounces.reports import Report, read_report
from mailer.mail import verp
from mailer.mail.verp import Tag
from tests.fixtures.reports import CORPUS, NAMES, load

BOUNCES = "bounces@imperialtelecom.co.uk"
SECRET = "campaign-secret"
VERIFIER = verp.Verifier(BOUNCES, SECRET)
TAG = Tag.campaign(3, 42)
VERP = verp.address(BOUNCES, TAG, SECRET)
RECIPIENT = "ada@example.com"
MESSAGE_ID = "<q8v2m1x7k3@imperialtelecom.co.uk>"


def fixture(name: str, *, address: str = VERP) -> bytes:
    return load(name, verp=address, recipient=RECIPIENT, message_id=MESSAGE_ID)


def read(name: str, *, address: str = VERP, verifier: verp.Verifier | None = VERIFIER) -> Report:
    report = read_report(fixture(name, address=address), verifier)
    assert report is not None, name
    return report


def test_postfix_dsn_with_5_1_1_is_a_hard_bounce_tied_by_tag_and_quoted_message_id() -> None:
    report = read("postfix-dsn-5.1.1")
    assert report.kind == "hard"
    assert report.format == "dsn"
    assert report.recipients == (RECIPIENT,)
    assert report.tag == TAG
    assert report.original_message_ids == (MESSAGE_ID,)
    assert report.status == "5.1.1"
    assert "User unknown" in report.diagnostic
    assert report.key == "mid:<20261202080112.3F2A81C0321@mail.example.net>"


def test_postfix_giving_up_with_4_2_2_and_action_failed_is_still_soft() -> None:
    report = read("postfix-dsn-4.2.2-failed")
    assert (report.kind, report.status) == ("soft", "4.2.2")
    assert "Mailbox full" in report.diagnostic


def test_exim_plain_bounce_is_read_by_flufl_bounce_as_hard_with_the_quoted_message_id() -> None:
    report = read("exim-plain")
    assert report.format == "non-standard"
    assert (report.kind, report.status) == ("hard", "5.1.1")
    assert report.recipients == (RECIPIENT,)
    assert report.tag == TAG
    assert report.original_message_ids == (MESSAGE_ID,)


def test_qmail_bounce_is_hard_and_tied() -> None:
    report = read("qmail-plain")
    assert (report.kind, report.format, report.tag) == ("hard", "non-standard", TAG)


@pytest.mark.parametrize("name", ["yahoo-arf", "microsoft-arf"])
def test_arf_abuse_report_is_a_complaint_tied_through_the_quoted_envelope(name: str) -> None:
    report = read(name)
    assert report.kind == "complaint"
    assert report.format == "arf"
    assert report.recipients == (RECIPIENT,)
    assert report.tag == TAG
    assert report.original_message_ids == (MESSAGE_ID,)


@pytest.mark.parametrize("name", ["vacation-autoreply", "vacation-plain"])
def test_holiday_auto_reply_to_our_verp_address_is_never_a_report(name: str) -> None:
    assert read_report(fixture(name), VERIFIER) is None


def test_a_tag_signed_under_another_secret_is_not_ours_but_the_report_is_still_read() -> None:
    forged = verp.address(BOUNCES, TAG, "guessed-secret")
    for name in ("postfix-dsn-5.1.1", "exim-plain", "yahoo-arf"):
        report = read(name, address=forged)
        assert report.tag is None
        assert report.original_message_ids == (MESSAGE_ID,)


def test_a_tampered_token_is_not_ours() -> None:
    tampered = VERP.replace("c3-42-", "c3-43-")
    assert read("postfix-dsn-5.1.1", address=tampered).tag is None


def test_a_bounce_of_someone_elses_mail_has_no_tag() -> None:
    report = read("postfix-dsn-5.1.1", address="newsletter@other.example")
    assert report.tag is None


def test_without_a_verifier_no_tag_is_trusted() -> None:
    assert read("postfix-dsn-5.1.1", verifier=None).tag is None


def test_a_confirmation_tag_is_read_back() -> None:
    address = verp.address(BOUNCES, Tag.confirmation(9), SECRET)
    assert read("postfix-dsn-5.1.1", address=address).tag == Tag.confirmation(9)


def _dsn(*blocks: str, message_id: str = "<r1@mx.example.net>") -> bytes:
    per_recipient = "\n".join(blocks)
    return (
        f"From: MAILER-DAEMON@mx.example.net\nTo: {VERP}\nMessage-ID: {message_id}\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nreport\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"{per_recipient}\n--b--\n"
    ).encode()


def test_a_delay_warning_is_soft_even_when_it_quotes_a_5_status() -> None:
    report = read_report(_dsn("Final-Recipient: rfc822; a@x.example\nAction: delayed\n"
                              "Status: 5.0.0\n"), VERIFIER)
    assert report is not None
    assert (report.kind, report.status) == ("soft", "4.0.0")


def test_a_success_notice_is_not_a_report() -> None:
    assert read_report(_dsn("Final-Recipient: rfc822; a@x.example\nAction: delivered\n"
                            "Status: 2.0.0\n"), VERIFIER) is None


def test_mixed_recipients_report_the_hard_failure_and_all_failed_addresses() -> None:
    report = read_report(_dsn(
        "Final-Recipient: rfc822; soft@x.example\nAction: failed\nStatus: 4.4.7\n",
        "Final-Recipient: rfc822; hard@x.example\nAction: failed\nStatus: 5.1.2\n",
        "Final-Recipient: rfc822; fine@x.example\nAction: delivered\nStatus: 2.0.0\n",
    ), VERIFIER)
    assert report is not None
    assert (report.kind, report.status) == ("hard", "5.1.2")
    assert report.recipients == ("soft@x.example", "hard@x.example")


def test_a_dsn_without_status_falls_back_on_the_smtp_reply_class() -> None:
    report = read_report(_dsn("Final-Recipient: rfc822; a@x.example\nAction: failed\n"
                              "Diagnostic-Code: smtp; 452 mailbox full\n"), VERIFIER)
    assert report is not None
    assert (report.kind, report.status) == ("soft", "4.0.0")


def test_arf_other_than_abuse_is_not_a_complaint() -> None:
    raw = fixture("yahoo-arf").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert read_report(raw, VERIFIER) is None


def test_a_report_without_message_id_is_keyed_by_its_digest_the_same_each_time() -> None:
    raw = fixture("exim-plain").replace(b"Message-Id: <E1vQx2T-0004Zk-1a@relay.example.org>\r\n",
                                        b"")
    first, second = read_report(raw, VERIFIER), read_report(raw, VERIFIER)
    assert first is not None and second is not None
    assert first.key.startswith("sha256:")
    assert first.key == second.key


def test_ordinary_mail_is_not_a_report() -> None:
    raw = (b"From: Ada <ada@example.com>\r\nTo: offers@imperialtelecom.co.uk\r\n"
           b"Subject: Question about my bill\r\nMessage-ID: <m1@example.com>\r\n\r\n"
           b"Why is my bill higher this month?\r\n")
    assert read_report(raw, VERIFIER) is None


# --- hostile input ------------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    result = read_report(raw, VERIFIER)
    assert result is None or isinstance(result, Report)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(NAMES), st.data())
def test_mutated_real_reports_never_raise(name: str, data: st.DataObject) -> None:
    raw = bytearray(fixture(name))
    for _ in range(data.draw(st.integers(1, 12))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[position] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[position: position + data.draw(st.integers(1, 200))]
        else:
            raw[position:position] = data.draw(st.sampled_from([
                b"\r\n", b"\r\n\r\n", b"--", b"=?utf-8?b?", b"Content-Type: message/rfc822\r\n",
                b"Status: 9.9.9\r\n", b"\xff\xfe", b";", b"<", b"rfc822;",
                b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n",
            ]))
        if not raw:
            break
    result = read_report(bytes(raw), VERIFIER)
    assert result is None or isinstance(result, Report)


# --- flufl.bounce's corpus of real-world bounces ------------------------------------------


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) > 100


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_real_world_bounce_from_the_corpus_is_never_tied_to_us_and_never_raises(path: Path) -> None:
    report = read_report(path.read_bytes(), VERIFIER)
    assert report is None or report.tag is None


def test_most_of_the_corpus_is_read_as_reports() -> None:
    reports = [read_report(p.read_bytes(), VERIFIER) for p in CORPUS]
    kinds = {r.kind for r in reports if r is not None}
    assert sum(r is not None for r in reports) > len(CORPUS) * 0.7
    assert kinds == {"hard", "soft"}


def test_postfix_dsn_forwarded_to_another_address_is_still_tied_by_x_postfix_sender() -> None:
    raw = fixture("postfix-dsn-5.1.1")
    raw = raw.replace(f"Delivered-To: {VERP}".encode(), b"Delivered-To: postmaster@x.example")
    raw = raw.replace(f"To: {VERP}".encode(), b"To: postmaster@x.example")
    raw = raw.replace(f"Return-Path: <{VERP}>".encode(), b"Return-Path: <>")
    report = read_report(raw, VERIFIER)
    assert report is not None and report.tag == TAG
    assert read_report(raw.replace(b"X-Postfix-Sender", b"X-Other"), VERIFIER).tag is None  # type: ignore[union-attr]
