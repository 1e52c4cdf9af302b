"""Parsing raw header blocks (mailer.inbox.headers): decoded, and never an exception."""

from __future__ import annotations

import base64

from mailer.inbox.body import parse_message
from mailer.inbox.headers import MAX_HEADER_CHARS, parse_headers
from tests.inbox.samples import MAX_BYTES, plain_message


def test_utf8_base64_encoded_subject_is_decoded() -> None:
    encoded = base64.b64encode("Désinscrire special offers".encode()).decode()
    headers = parse_headers(f"Subject: =?UTF-8?B?{encoded}?=\r\n\r\n".encode())
    assert headers.subject == "Désinscrire special offers"


def test_latin1_quoted_printable_subject_is_decoded() -> None:
    headers = parse_headers(b"Subject: =?ISO-8859-1?Q?Caf=E9_unsubscribe?=\r\n\r\n")
    assert headers.subject == "Café unsubscribe"


def test_encoded_word_in_unknown_charset_falls_back_to_latin1() -> None:
    headers = parse_headers(b"Subject: =?x-unknown?Q?caf=E9?=\r\n\r\n")
    assert headers.subject == "café"


def test_folded_subject_is_one_line() -> None:
    headers = parse_headers(b"Subject: Unsubscribe\r\n special\r\n\toffers\r\n\r\n")
    assert headers.subject == "Unsubscribe special offers"


def test_from_address_is_lower_cased_and_display_name_decoded() -> None:
    headers = parse_headers(
        b"From: =?UTF-8?Q?Jos=C3=A9_Garc=C3=ADa?= <Jose.Garcia@Example.COM>\r\n\r\n"
    )
    assert headers.from_address == "jose.garcia@example.com"
    assert headers.from_name == "José García"


def test_bare_from_address_has_empty_display_name() -> None:
    headers = parse_headers(b"From: jo@example.org\r\n\r\n")
    assert (headers.from_address, headers.from_name) == ("jo@example.org", "")


def test_missing_headers_give_defaults() -> None:
    headers = parse_headers(b"X-Other: 1\r\n\r\nbody\r\n")
    assert headers.message_id is None
    assert headers.subject == ""
    assert headers.from_address is None
    assert headers.from_name == ""
    assert headers.auto_submitted is None
    assert headers.precedence is None
    assert headers.has_autoreply_header is False
    assert headers.content_type == "text/plain"
    assert headers.references == ()


def test_empty_input_gives_defaults() -> None:
    assert parse_headers(b"").subject == ""


def test_unparseable_from_gives_no_address() -> None:
    headers = parse_headers(b"From: \xff\xfe<<@@>>, ,,\r\nSubject: hello\r\n\r\n")
    assert headers.from_address is None
    assert headers.subject == "hello"


def test_from_without_at_sign_gives_no_address() -> None:
    assert parse_headers(b"From: Jo Bloggs <jo>\r\n\r\n").from_address is None


def test_message_id_keeps_angle_brackets_and_loses_whitespace() -> None:
    headers = parse_headers(b"Message-ID:\r\n   <abc.123@example.org>  \r\n\r\n")
    assert headers.message_id == "<abc.123@example.org>"


def test_references_are_the_msg_ids_in_order() -> None:
    headers = parse_headers(b"References: <1@a.example>\r\n <2@b.example> <3@c.example>\r\n\r\n")
    assert headers.references == ("<1@a.example>", "<2@b.example>", "<3@c.example>")


def test_automation_headers_are_read() -> None:
    headers = parse_headers(
        b"Auto-Submitted: auto-replied\r\nPrecedence:  bulk \r\nX-Autoreply: yes\r\n\r\n"
    )
    assert headers.auto_submitted == "auto-replied"
    assert headers.precedence == "bulk"
    assert headers.has_autoreply_header is True


def test_x_autorespond_counts_as_an_autoreply_header() -> None:
    assert parse_headers(b"X-Autorespond: 1\r\n\r\n").has_autoreply_header is True


def test_content_type_is_lower_case_without_parameters() -> None:
    headers = parse_headers(
        b'Content-Type: Multipart/Report; report-type=delivery-status; boundary="b"\r\n\r\n'
    )
    assert headers.content_type == "multipart/report"


def test_full_message_can_be_given_to_the_header_stage() -> None:
    headers = parse_headers(plain_message("hello", Subject="Re: unsubscribe"))
    assert headers.subject == "Re: unsubscribe"
    assert headers.from_address == "jo@example.org"


def test_binary_junk_gives_headers_without_raising() -> None:
    headers = parse_headers(bytes(range(256)) * 4)
    assert headers.subject == ""


def test_header_with_raw_eight_bit_bytes_is_decoded_as_utf8_or_latin1() -> None:
    headers = parse_headers("Subject: Unsubscribe Zoë\r\n\r\n".encode("latin-1"))
    assert headers.subject == "Unsubscribe Zoë"
    headers = parse_headers("Subject: Unsubscribe Zoë\r\n\r\n".encode())
    assert headers.subject == "Unsubscribe Zoë"


def test_content_type_of_nested_comments_does_not_crash_either_stage() -> None:
    raw = b"From: jo@example.org\r\nContent-Type: text/plain; " + b"(" * 3000 + b"\r\n\r\nhi\r\n"
    assert parse_headers(raw).from_address == "jo@example.org"
    assert parse_message(raw, max_bytes=MAX_BYTES).own_text == "hi"


def test_overlong_header_is_read_only_up_to_the_cap() -> None:
    raw = b"Subject: " + b"=?utf-8?q?a?= " * 50_000 + b"\r\nFrom: jo@example.org\r\n\r\n"
    headers = parse_headers(raw)
    assert 0 < len(headers.subject) <= MAX_HEADER_CHARS
    assert headers.from_address == "jo@example.org"


def test_overlong_references_keep_the_most_recent_ids() -> None:
    ids = [f"<{n}@thread.example>" for n in range(1000)]
    headers = parse_headers(("References: " + "\r\n ".join(ids) + "\r\n\r\n").encode())
    assert headers.references[-1] == "<999@thread.example>"
    assert len(headers.references) < 1000
