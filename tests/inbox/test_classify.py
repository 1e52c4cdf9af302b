"""Classifying a message from its headers: request, ordinary mail, or automated mail."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailer.inbox.classify import (
    Verdict,
    classify,
    is_request_subject,
    may_be_report,
    normalise_subject,
)
from mailer.inbox.headers import parse_headers

CONFIGURED = "Unsubscribe special offers"
OWN = frozenset({"offers@telecom.example", "noreply@telecom.example"})


def headers_of(raw: bytes) -> Verdict:
    return classify(parse_headers(raw), configured_subject=CONFIGURED, own_addresses=OWN)


def message(subject: str = CONFIGURED, **extra: str) -> bytes:
    built = EmailMessage()
    built["From"] = extra.pop("From", "Jo Bloggs <jo@example.org>")
    built["To"] = "offers@telecom.example"
    built["Subject"] = subject
    for name, value in extra.items():
        built[name.replace("_", "-")] = value
    built.set_content("Please unsubscribe me.")
    return built.as_bytes()


# --- subjects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Fwd: AW: unsubscribe special offers!", "unsubscribe special offers"),
        ("RE : Re[2]: SV:VS: Unsubscribe   Special Offers.", "unsubscribe special offers"),
        ("Fw: WG: Antw: Réf : Ref: unsubscribe", "unsubscribe"),
        ("Re(3): Re^2: unsubscribe", "unsubscribe"),
        ("  ...Unsubscribe special offers??  ", "unsubscribe special offers"),
        ("[EXTERNAL] Re: Unsubscribe special offers", "unsubscribe special offers"),
        ("回复：unsubscribe", "unsubscribe"),
        ("Refund: unsubscribe", "refund: unsubscribe"),
        ("Re:", ""),
        ("", ""),
    ],
)
def test_subject_normalisation(subject: str, expected: str) -> None:
    assert normalise_subject(subject) == expected


def test_reply_prefix_inside_the_subject_is_kept() -> None:
    assert normalise_subject("Unsubscribe re: special offers") == "unsubscribe re: special offers"


def test_bare_unsubscribe_is_a_request_subject() -> None:
    assert is_request_subject("UNSUBSCRIBE", CONFIGURED)


def test_configured_subject_is_compared_normalised_too() -> None:
    assert is_request_subject("unsubscribe special offers", "Re: Unsubscribe Special Offers!")


def test_other_subjects_are_not_requests() -> None:
    assert not is_request_subject("Unsubscribe from everything forever", CONFIGURED)
    assert not is_request_subject("Special offers", CONFIGURED)


def test_empty_subject_is_never_a_request_even_if_configured_subject_is_empty() -> None:
    assert not is_request_subject("", "")
    assert not is_request_subject("Re: !", "")


# --- verdicts ------------------------------------------------------------------------------


def test_configured_subject_is_a_request() -> None:
    assert headers_of(message()) is Verdict.REQUEST


def test_subject_with_repeated_reply_prefixes_and_encoded_words_is_a_request() -> None:
    raw = (
        b"From: jo@example.org\r\n"
        b"Subject: Re: Fwd: =?UTF-8?B?QVc6IHVuc3Vic2NyaWJl?=\r\n"
        b" =?ISO-8859-1?Q?_special_offers!?=\r\n\r\n"
    )
    assert parse_headers(raw).subject == "Re: Fwd: AW: unsubscribe special offers!"
    assert headers_of(raw) is Verdict.REQUEST


def test_ordinary_mail_is_not_a_request() -> None:
    assert headers_of(message("Question about my bill")) is Verdict.NOT_REQUEST


def test_message_without_subject_is_not_a_request() -> None:
    assert headers_of(b"From: jo@example.org\r\n\r\nunsubscribe\r\n") is Verdict.NOT_REQUEST


def test_missing_from_is_not_automated_just_unidentified() -> None:
    assert headers_of(b"Subject: Unsubscribe special offers\r\n\r\n") is Verdict.REQUEST


@pytest.mark.parametrize(
    "value", ["auto-replied", "auto-generated", "Auto-Replied; owner-email=x@y", "auto-notified"]
)
def test_auto_submitted_other_than_no_is_automated(value: str) -> None:
    assert headers_of(message(Auto_Submitted=value)) is Verdict.AUTOMATED


@pytest.mark.parametrize("value", ["no", "No", " no ; comment=1", "no (a person wrote this)"])
def test_auto_submitted_no_is_a_person(value: str) -> None:
    assert headers_of(message(Auto_Submitted=value)) is Verdict.REQUEST


@pytest.mark.parametrize("header", ["X-Autoreply", "X-Autorespond"])
def test_autoreply_headers_are_automated(header: str) -> None:
    assert headers_of(message(**{header: "yes"})) is Verdict.AUTOMATED


@pytest.mark.parametrize("value", ["bulk", "Junk", "list", "auto_reply"])
def test_bulk_precedence_is_automated(value: str) -> None:
    assert headers_of(message(Precedence=value)) is Verdict.AUTOMATED


def test_first_class_precedence_is_a_person() -> None:
    assert headers_of(message(Precedence="first-class")) is Verdict.REQUEST


def test_delivery_status_report_is_automated_even_with_a_request_subject() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: Unsubscribe special offers\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B--\r\n"
    )
    assert headers_of(raw) is Verdict.AUTOMATED


def test_our_own_mail_is_automated() -> None:
    assert headers_of(message(From="Offers <OFFERS@telecom.example>")) is Verdict.AUTOMATED


def test_own_addresses_are_compared_without_case() -> None:
    headers = parse_headers(message(From="offers@telecom.example"))
    verdict = classify(
        headers, configured_subject=CONFIGURED, own_addresses=frozenset({"Offers@Telecom.Example"})
    )
    assert verdict is Verdict.AUTOMATED


def test_automated_takes_precedence_over_ordinary_mail() -> None:
    assert headers_of(message("Out of office", Auto_Submitted="auto-replied")) is (
        Verdict.AUTOMATED
    )


# --- which messages may be delivery reports (their bodies are fetched and read) -------------


def candidate(raw: bytes) -> bool:
    return may_be_report(parse_headers(raw), raw.partition(b"\n\n")[0])


@pytest.mark.parametrize("extra", [
    {"From": "MAILER-DAEMON@mx.example.net"},
    {"From": "Mail Delivery System <postmaster@mx.example.net>"},
    {"Return_Path": "<>"},
    {"X_Failed_Recipients": "ann@example.com"},
])
def test_bounce_marks_in_the_header_make_a_report_candidate(extra: dict[str, str]) -> None:
    assert candidate(message("Hello", **extra))


def test_a_multipart_report_is_a_report_candidate_whatever_its_subject() -> None:
    assert candidate(b"From: feedback@arf.example\nSubject: FW: Our offer\nMIME-Version: 1.0\n"
                     b"Content-Type: multipart/report; report-type=feedback-report;\n"
                     b" boundary=x\n\n--x--\n")


@pytest.mark.parametrize("subject", [
    "Undelivered Mail Returned to Sender", "Delivery Status Notification (Failure)",
    "Mail delivery failed: returning message to sender", "failure notice",
])
def test_bounce_subjects_make_a_report_candidate(subject: str) -> None:
    assert candidate(message(subject))


def test_ordinary_mail_and_requests_from_people_are_not_report_candidates() -> None:
    assert not candidate(message("Question about my bill", Return_Path="<jo@example.org>"))
    assert not candidate(message(CONFIGURED))
