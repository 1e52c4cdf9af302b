"""Parsing raw mail bodies (mailer.inbox.body): the sender's own words found, bad input
refused politely."""

from __future__ import annotations

import base64
from email.message import EmailMessage

import pytest

from mailer.errors import MalformedMessage
from mailer.inbox.body import html_to_text, own_text, parse_message
from tests.inbox.samples import MAX_BYTES, plain_message


def text_of(body: str) -> str:
    return parse_message(plain_message(body), max_bytes=MAX_BYTES).own_text


def test_oversize_message_is_malformed_with_its_size_in_the_reason() -> None:
    raw = plain_message("x" * 2000)
    with pytest.raises(MalformedMessage) as caught:
        parse_message(raw, max_bytes=1000)
    assert str(caught.value) == f"message is {len(raw)} bytes, over the 1000-byte cap"


def test_message_without_a_text_part_is_malformed() -> None:
    message = EmailMessage()
    message["From"] = "jo@example.org"
    message.set_content(b"%PDF-1.4", maintype="application", subtype="pdf")
    with pytest.raises(MalformedMessage, match=r"^no text part$"):
        parse_message(message.as_bytes(), max_bytes=MAX_BYTES)


def test_plain_text_body_is_the_own_text() -> None:
    assert text_of("Please unsubscribe me.\nJo Bloggs\n") == "Please unsubscribe me.\nJo Bloggs"


def test_headers_of_the_full_message_are_parsed_too() -> None:
    parsed = parse_message(plain_message("hi"), max_bytes=MAX_BYTES)
    assert parsed.headers.message_id == "<1@example.org>"
    assert parsed.headers.from_name == "Jo Bloggs"


def test_base64_utf8_body_is_decoded() -> None:
    body = base64.b64encode("Désabonnez-moi, Zoë".encode()).decode()
    raw = (
        "From: a@example.org\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{body}\r\n"
    ).encode()
    assert parse_message(raw, max_bytes=MAX_BYTES).own_text == "Désabonnez-moi, Zoë"


def test_body_in_unknown_charset_falls_back_to_latin1() -> None:
    raw = b"From: a@example.org\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nZo\xeb\r\n"
    assert parse_message(raw, max_bytes=MAX_BYTES).own_text == "Zoë"


def test_body_declared_as_ascii_but_utf8_is_read_as_utf8() -> None:
    raw = "From: a@example.org\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nZoë\r\n"
    assert parse_message(raw.encode(), max_bytes=MAX_BYTES).own_text == "Zoë"


def test_charset_naming_a_non_text_codec_does_not_crash() -> None:
    raw = b"From: a@example.org\r\nContent-Type: text/plain; charset=base64\r\n\r\nhello\r\n"
    assert parse_message(raw, max_bytes=MAX_BYTES).own_text == "hello"


def test_html_only_body_is_converted_to_text() -> None:
    message = EmailMessage()
    message["From"] = "jo@example.org"
    message.set_content(
        "<html><head><title>t</title><style>p {color: red}</style></head><body>"
        "<p>Please&nbsp;unsubscribe me.</p><div>Jo Bloggs<br>Acme Widgets Ltd</div>"
        "<script>var x = 1;</script></body></html>",
        subtype="html",
    )
    own = parse_message(message.as_bytes(), max_bytes=MAX_BYTES).own_text
    assert own == "Please unsubscribe me.\nJo Bloggs\nAcme Widgets Ltd"


def test_plain_text_is_preferred_to_html_in_an_alternative() -> None:
    message = EmailMessage()
    message["From"] = "jo@example.org"
    message.set_content("plain words")
    message.add_alternative("<p>html words</p>", subtype="html")
    assert parse_message(message.as_bytes(), max_bytes=MAX_BYTES).own_text == "plain words"


def test_empty_plain_part_falls_back_to_html() -> None:
    message = EmailMessage()
    message["From"] = "jo@example.org"
    message.set_content("\n")
    message.add_alternative("<p>html words</p>", subtype="html")
    assert parse_message(message.as_bytes(), max_bytes=MAX_BYTES).own_text == "html words"


def test_html_blockquote_is_not_own_text() -> None:
    html = "<div>Unsubscribe me</div><blockquote><p>Our offers: jo@example.org</p></blockquote>"
    assert html_to_text(html) == "Unsubscribe me"


def test_html_mailto_link_keeps_its_address() -> None:
    html = '<p>Also <a href="mailto:partner@example.org?subject=x">my partner</a></p>'
    assert html_to_text(html) == "Also my partner partner@example.org"


def test_malformed_html_does_not_crash() -> None:
    assert "text" in html_to_text("<![if foo]> text <p <<>> </div></b")


def test_attached_message_is_not_own_text() -> None:
    inner = EmailMessage()
    inner["From"] = "offers@telecom.example"
    inner.set_content("Our special offers, sent to other@example.org")
    message = EmailMessage()
    message["From"] = "jo@example.org"
    message.set_content("Please stop these.")
    message.add_attachment(inner)
    assert parse_message(message.as_bytes(), max_bytes=MAX_BYTES).own_text == "Please stop these."


def test_text_attachment_is_not_own_text() -> None:
    message = EmailMessage()
    message["From"] = "jo@example.org"
    message.set_content("Please stop these.")
    message.add_attachment("list of other@example.org", filename="notes.txt")
    assert parse_message(message.as_bytes(), max_bytes=MAX_BYTES).own_text == "Please stop these."


def test_multipart_report_is_parsed_from_its_human_readable_part() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; x@example.org\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n--B--\r\n"
    )
    parsed = parse_message(raw, max_bytes=MAX_BYTES)
    assert parsed.headers.content_type == "multipart/report"
    assert parsed.own_text == "Delivery failed."


def test_binary_junk_in_a_base64_body_is_decoded_leniently() -> None:
    raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + bytes(
        range(256)
    )
    assert isinstance(parse_message(raw, max_bytes=MAX_BYTES).own_text, str)


def test_binary_junk_message_is_read_as_a_latin1_body() -> None:
    raw = b"\x00\xff\xfe junk \x80\x81 jo@example.org"
    assert "jo@example.org" in parse_message(raw, max_bytes=MAX_BYTES).own_text


def test_deeply_nested_multiparts_are_malformed() -> None:
    nested = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(3000)
    )
    raw = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + nested
    with pytest.raises(MalformedMessage, match="nested too deeply"):
        parse_message(raw, max_bytes=MAX_BYTES)


# --- the sender's own words ----------------------------------------------------------------


def test_quoted_reply_lines_are_removed() -> None:
    assert own_text("Stop please\n> Our offers\n>> older\n  > indented\nJo") == "Stop please\nJo"


def test_on_date_wrote_attribution_and_everything_after_are_removed() -> None:
    text = "Unsubscribe me\n\nOn Mon, 1 Jan 2024, Offers <offers@telecom.example> wrote:\nOld text"
    assert own_text(text) == "Unsubscribe me"


def test_attribution_wrapped_onto_two_lines_is_removed() -> None:
    text = "Unsubscribe me\nOn Mon, 1 Jan 2024 at 10:00, Offers <\noffers@telecom.example> wrote:\n"
    assert own_text(text) == "Unsubscribe me"


def test_sentence_starting_with_on_is_kept() -> None:
    assert own_text("On reflection, unsubscribe me\nJo") == "On reflection, unsubscribe me\nJo"


@pytest.mark.parametrize(
    "separator",
    [
        "-----Original Message-----",
        "---------- Forwarded message ---------",
        "Begin forwarded message:",
        "________________________________",
        "-- ",
        "--",
    ],
)
def test_forwarded_original_and_signature_separators_end_own_text(separator: str) -> None:
    assert own_text(f"Unsubscribe me\n{separator}\nother@example.org\n") == "Unsubscribe me"


def test_outlook_header_block_without_separator_ends_own_text() -> None:
    text = "Unsubscribe me\n\nFrom: Offers <offers@telecom.example>\nSent: Monday\nTo: jo\nBody"
    assert own_text(text) == "Unsubscribe me"


def test_from_line_alone_is_kept_as_a_clue() -> None:
    assert own_text("Unsubscribe me\nFrom: Jo Bloggs") == "Unsubscribe me\nFrom: Jo Bloggs"


def test_signature_is_removed_from_a_parsed_message() -> None:
    assert text_of("Unsubscribe me\n-- \nJo Bloggs\nCEO, Acme\n") == "Unsubscribe me"


def test_control_characters_become_spaces() -> None:
    assert own_text("Jo\x00Bloggs\r\nnext") == "Jo Bloggs\nnext"
