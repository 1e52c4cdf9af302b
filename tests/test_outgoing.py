"""Outgoing MIME: what the stdlib parser reads back must be exactly what was rendered."""

import email
import email.header
import email.policy
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.errors import HeaderInjection
from mailer.mail import outgoing
from mailer.mail.outgoing import (
    CampaignHeaders,
    CampaignMessageBuilder,
    build_confirmation,
    message_id,
)

DATE = datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))
UNSUBSCRIBE_URL = "https://imperial.example/u/42.special_offers.AbCdEfGhIjKlMnOpQrStUv"
HEADERS = CampaignHeaders(
    campaign_id=7,
    sender="Imperial Telecom <offers@imperial.example>",
    domain="imperial.example",
    unsubscribe_address="unsubscribe@imperial.example",
    kind="special_offers",
)
EXPECTED_LIST_UNSUBSCRIBE = (
    "<mailto:unsubscribe@imperial.example?subject=Unsubscribe%20special%20offers>, "
    f"<{UNSUBSCRIBE_URL}>"
)
CAMPAIGN_HEADER_NAMES = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "X-Campaign",
    "X-Campaign-Kind",
    "Feedback-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Content-Type",
]
MESSAGE_ID = message_id("imperial.example", secret="s3cret", what="campaign:7:customer:42")


@dataclass(frozen=True)
class Rendered:
    """What the builder takes (`outgoing.RenderedBody`): no campaigns package needed."""

    subject: str
    text: str
    html: str | None


LONG_LINE = "Half-price line rental = great value. " * 40  # about 1,500 characters

NAMES = [
    "Alice Smith",
    "Smith, John",
    'Dr. J. "Jack" O\'Brien',
    "Zoë Ó Briain",
    "Günter Straße",
    "王小明",
    "Sam 🎉 Taylor",
    "Bartholomew Maximilian Fitzgerald-Montgomery-Worthington the Third of Kent",
    "Zoë " * 30,
    "=?utf-8?q?not_an_encoded_word?=",
    "",
]
SUBJECTS = [
    "Half-price line rental for 3 months",
    "Une offre spéciale pour vous, Zoë",
    "Straße und 中文 und 😀",
    "A very long subject line that goes on and on about half-price line rental for "
    "three whole months and then some more words to fold",
    "x" * 200,
    "é" * 120,
    "Looks like =?utf-8?b?w6k=?= but is not",
]


def _header_text(value: str) -> str:
    """What the builder promises to keep of a name or subject: one line, controls and runs of
    white space as one space."""
    return re.sub(r"[\x00-\x20\x7f-\x9f\u2028\u2029\s]+", " ", value).strip()


def _display_name(raw: bytes) -> str:
    """The To display name as an RFC 2047 §6.2 reader sees it.

    ``policy.default`` keeps the whitespace between adjacent encoded words of a phrase (RFC
    2047 §6.2 says to ignore it); for a name long enough to need several encoded words, the
    stdlib's RFC 2047 decoder is the one that follows the RFC.
    """
    to = email.message_from_bytes(raw, policy=email.policy.compat32)["To"]
    phrase = str(to).rpartition("<")[0].strip()
    if phrase.count("=?") > 1:
        return str(email.header.make_header(email.header.decode_header(phrase)))
    return str(_parse(raw)["To"].addresses[0].display_name)


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _body(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None
    assert part.get_content_type() == f"text/{subtype}"
    assert part.get_content_charset() == "utf-8"
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    content = part.get_content()
    assert isinstance(content, str)
    # On the wire line endings are CRLF; the rendered text uses LF.
    return content.replace("\r\n", "\n")


def _rendered(
    subject: str = "Half-price line rental for 3 months",
    text: str = "Dear Alice,\n\nHalf-price line rental.\n",
    html: str | None = "<p>Dear Alice,</p>\n<p>Half-price line rental.</p>\n",
) -> Rendered:
    return Rendered(subject=subject, text=text, html=html)


@pytest.fixture
def builder() -> CampaignMessageBuilder:
    return CampaignMessageBuilder(HEADERS, date=DATE)


def _build(builder: CampaignMessageBuilder, **overrides: Any) -> bytes:
    kwargs: dict[str, Any] = {
        "message_id": MESSAGE_ID,
        "to_address": "alice@example.com",
        "to_name": "Alice Smith",
        "rendered": _rendered(),
        "unsubscribe_url": UNSUBSCRIBE_URL,
    }
    kwargs.update(overrides)
    return builder.build(**kwargs)


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("name", NAMES)
def test_every_header_and_both_bodies_read_back_as_rendered(
    builder: CampaignMessageBuilder, name: str, subject: str
) -> None:
    text = f"Dear {name},\n\n{LONG_LINE}\nÉtonnant: 中文 😀 ß\n\nTrailing space \n"
    html = f"<p>Dear {name},</p>\n<p>{LONG_LINE}</p>\n<p>中文 😀</p>\n"
    raw = _build(builder, to_name=name, rendered=_rendered(subject, text, html))

    msg = _parse(raw)

    assert list(msg.keys()) == CAMPAIGN_HEADER_NAMES
    assert msg["From"].addresses[0].display_name == "Imperial Telecom"
    assert msg["From"].addresses[0].addr_spec == "offers@imperial.example"
    assert len(msg["To"].addresses) == 1
    assert _display_name(raw) == _header_text(name)
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"
    assert msg["Subject"] == _header_text(subject)
    assert msg["Date"].datetime == DATE
    assert msg["Message-ID"] == MESSAGE_ID
    assert msg["MIME-Version"] == "1.0"
    assert msg["X-Campaign"] == "7"
    assert msg["X-Campaign-Kind"] == "special_offers"
    assert msg["Feedback-ID"] == "c7:special_offers:imperial"
    assert msg["List-Unsubscribe"] == EXPECTED_LIST_UNSUBSCRIBE
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert _body(msg, "plain") == text
    assert _body(msg, "html") == html
    assert not msg.defects
    assert all(not part.defects for part in msg.walk())


@given(name=st.text(max_size=120), subject=st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_name_and_subject_read_back_as_one_line_of_the_same_text(
    name: str, subject: str
) -> None:
    builder = CampaignMessageBuilder(HEADERS, date=DATE)
    raw = _build(builder, to_name=name, rendered=_rendered(subject=subject))

    msg = _parse(raw)

    assert list(msg.keys()) == CAMPAIGN_HEADER_NAMES
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.com"]
    assert _display_name(raw) == _header_text(name)
    assert msg["Subject"] == _header_text(subject)


def test_crlf_in_customer_name_cannot_inject_header(builder: CampaignMessageBuilder) -> None:
    raw = _build(builder, to_name="Alice\r\nBcc: evil@x\r\n\r\nbody")

    msg = _parse(raw)

    assert "Bcc" not in msg
    assert list(msg.keys()) == CAMPAIGN_HEADER_NAMES
    assert msg["To"].addresses[0].display_name == "Alice Bcc: evil@x body"
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.com"]


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r", "\u2028", "\x85", "\x00"])
def test_line_breaks_in_rendered_subject_cannot_inject_header(
    builder: CampaignMessageBuilder, newline: str
) -> None:
    raw = _build(builder, rendered=_rendered(subject=f"Offer{newline}Bcc: evil@x"))

    msg = _parse(raw)

    assert "Bcc" not in msg
    assert msg["Subject"] == "Offer Bcc: evil@x"


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.com\r\nBcc: evil@x",
        "alice@example.com>, evil@x",
        "Alice <alice@example.com>",
        "alice@example.com, evil@example.com",
        "no-at-sign",
        "josé@example.com",
    ],
)
def test_address_that_is_not_a_plain_mailbox_is_refused(
    builder: CampaignMessageBuilder, address: str
) -> None:
    with pytest.raises(HeaderInjection):
        _build(builder, to_address=address)


def test_control_characters_around_an_address_are_stripped(
    builder: CampaignMessageBuilder,
) -> None:
    msg = _parse(_build(builder, to_address=" alice@example.com\r\n"))

    assert msg["To"].addresses[0].addr_spec == "alice@example.com"


def test_non_ascii_domain_is_idna_encoded(builder: CampaignMessageBuilder) -> None:
    msg = _parse(_build(builder, to_address="zoe@bücher.example"))

    assert msg["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "url",
    [
        "https://x.example/u/1>, <https://evil.example",
        "https://x.example/a b",
        "https://x.example/é",
    ],
)
def test_unsubscribe_url_that_could_break_the_header_is_refused(
    builder: CampaignMessageBuilder, url: str
) -> None:
    with pytest.raises(HeaderInjection):
        _build(builder, unsubscribe_url=url)


@pytest.mark.parametrize("html", ["<p>offer</p>\n", None])
@pytest.mark.parametrize("test", [False, True])
def test_every_campaign_message_carries_list_unsubscribe_and_one_click(
    builder: CampaignMessageBuilder, html: str | None, test: bool
) -> None:
    msg = _parse(_build(builder, rendered=_rendered(html=html), test=test))

    # RFC 2369: a mailto and an HTTPS URL; RFC 8058: the one-click POST marker.
    assert msg["List-Unsubscribe"] == EXPECTED_LIST_UNSUBSCRIBE
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Precedence" not in msg


def test_text_only_campaign_is_a_single_quoted_printable_part(
    builder: CampaignMessageBuilder,
) -> None:
    text = f"Dear Zoë,\n{LONG_LINE}\n"
    msg = _parse(_build(builder, rendered=_rendered(text=text, html=None)))

    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/plain"
    assert _body(msg, "plain") == text


def test_test_send_is_marked_prefixed_and_gets_its_own_message_id(
    builder: CampaignMessageBuilder,
) -> None:
    msg = _parse(_build(builder, rendered=_rendered(subject="Big news, Zoë"), test=True))

    assert msg["X-Mailer-Test"] == "yes"
    assert msg["Subject"] == "[TEST] Big news, Zoë"
    assert msg["Message-ID"] == MESSAGE_ID  # the caller names the id: messages.py gives a
    # test copy a random one, tested in tests/campaigns


def test_real_send_has_no_test_marker(builder: CampaignMessageBuilder) -> None:
    msg = _parse(_build(builder))

    assert "X-Mailer-Test" not in msg
    assert not msg["Subject"].startswith("[TEST]")


def test_a_keyed_message_id_is_the_same_on_retry_and_unguessable_from_the_ids() -> None:
    one = message_id("imperial.example", secret="s3cret", what="campaign:7:customer:5")
    assert one == message_id("imperial.example", secret="s3cret", what="campaign:7:customer:5")
    assert one != message_id("imperial.example", secret="s3cret", what="campaign:7:customer:6")
    assert one != message_id("imperial.example", secret="other", what="campaign:7:customer:5")
    assert re.fullmatch(r"<[0-9a-f]{32}@imperial\.example>", one)
    assert not one.startswith("<c7.r5")  # no ids in the clear
    first = _parse(_build(CampaignMessageBuilder(HEADERS, date=DATE), message_id=one))
    assert first["Message-ID"] == one


def test_an_unkeyed_message_id_is_random() -> None:
    ids = {message_id("imperial.example") for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"<[0-9a-f]{32}@imperial\.example>", i) for i in ids)


@pytest.mark.parametrize("bad", ["no-brackets@imperial.example", "<a@b>\r\nBcc: x@y", ""])
def test_a_message_id_that_could_break_the_header_is_refused(
    builder: CampaignMessageBuilder, bad: str
) -> None:
    with pytest.raises(HeaderInjection):
        _build(builder, message_id=bad)
    with pytest.raises(HeaderInjection):
        message_id("imperial.example>\r\nBcc: x@y")


def test_every_line_ends_in_crlf_and_stays_within_the_limits(
    builder: CampaignMessageBuilder,
) -> None:
    text = f"{LONG_LINE}\r\n{'ß' * 700}\rmixed\nendings"
    raw = _build(
        builder,
        to_name="Zoë " * 30,
        rendered=_rendered(subject="é" * 120, text=text, html=f"<p>{LONG_LINE}</p>"),
    )

    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    # RFC 5322 §2.1.1: header lines at most 78 (the fixed mailto line is the one exception).
    for line in head.split(b"\r\n"):
        assert len(line) <= 78 or line.startswith(b"List-Unsubscribe: <mailto:")
    # RFC 2045 §6.7: quoted-printable lines at most 76.
    for line in body.split(b"\r\n"):
        assert len(line) <= 76
    assert _body(_parse(raw), "plain") == f"{LONG_LINE}\n{'ß' * 700}\nmixed\nendings"


def test_boundary_is_random_per_campaign_and_absent_from_the_content() -> None:
    first = _parse(_build(CampaignMessageBuilder(HEADERS, date=DATE)))
    second = _parse(_build(CampaignMessageBuilder(HEADERS, date=DATE)))
    boundary = first.get_boundary()

    assert boundary is not None
    assert boundary != second.get_boundary()
    assert all(boundary not in str(part.get_content()) for part in first.iter_parts())


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        CampaignMessageBuilder(HEADERS, date=datetime(2024, 5, 1, 9, 30))


def test_build_does_not_go_through_email_message(
    builder: CampaignMessageBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast path must not build an EmailMessage")

    monkeypatch.setattr(outgoing, "EmailMessage", refuse)

    assert _build(builder).startswith(b"From: ")


# Confirmations ---------------------------------------------------------------------------


def _confirmation(**overrides: Any) -> bytes:
    kwargs: dict[str, Any] = {
        "sender": "Imperial Telecom <unsubscribe@imperial.example>",
        "to_address": "zoe@example.com",
        "to_name": "Zoë Ó Briain",
        "subject": "Re: Unsubscribe special offers",
        "text": "Dear Zoë,\n\nWe have turned off special offers.\n",
        "html": "<p>Dear Zoë,</p>\n<p>We have turned off special offers.</p>\n",
        "in_reply_to": "<request-2@mail.example.com>",
        "references": ["<root@mail.example.com>", "<request-1@mail.example.com>"],
        "message_id": "<confirm.1@imperial.example>",
        "date": DATE,
    }
    kwargs.update(overrides)
    return build_confirmation(**kwargs)


def test_confirmation_is_an_auto_reply_threaded_under_the_request() -> None:
    msg = _parse(_confirmation())

    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<request-2@mail.example.com>"
    assert msg["References"] == (
        "<root@mail.example.com> <request-1@mail.example.com> <request-2@mail.example.com>"
    )
    assert msg["Message-ID"] == "<confirm.1@imperial.example>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime == DATE
    assert msg["To"].addresses[0].display_name == "Zoë Ó Briain"
    assert msg["Subject"] == "Re: Unsubscribe special offers"
    assert _body(msg, "plain") == "Dear Zoë,\n\nWe have turned off special offers.\n"
    assert _body(msg, "html") == "<p>Dear Zoë,</p>\n<p>We have turned off special offers.</p>\n"


def test_confirmation_carries_no_list_unsubscribe() -> None:
    msg = _parse(_confirmation())

    assert "List-Unsubscribe" not in msg
    assert "List-Unsubscribe-Post" not in msg


def test_confirmation_does_not_repeat_a_parent_already_in_references() -> None:
    msg = _parse(_confirmation(references=["<a@x>", "<request-2@mail.example.com>"]))

    assert msg["References"] == "<a@x> <request-2@mail.example.com>"


def test_confirmation_without_a_parent_message_id_has_no_in_reply_to() -> None:
    msg = _parse(_confirmation(in_reply_to=None, references=[]))

    assert "In-Reply-To" not in msg
    assert "References" not in msg


def test_long_message_ids_in_threading_headers_are_kept_verbatim() -> None:
    # The stdlib alone would turn these into RFC 2047 words, which breaks threading.
    parent = f"<{'p' * 90}@mail.example.com>"
    root = f"<{'r' * 90}@mail.example.com>"
    raw = _confirmation(in_reply_to=parent, references=[root])

    assert f"In-Reply-To: {parent}\r\n".encode() in raw
    assert f"References: {root}\r\n {parent}\r\n".encode() in raw


def test_malformed_ids_from_the_request_are_dropped() -> None:
    msg = _parse(
        _confirmation(
            in_reply_to="<bad\r\nBcc: evil@x>",
            references=["<ok@x>", "no-brackets", "<two words@x>"],
        )
    )

    assert "Bcc" not in msg
    assert "In-Reply-To" not in msg
    assert msg["References"] == "<ok@x>"


def test_confirmation_subject_and_name_cannot_inject_headers() -> None:
    msg = _parse(_confirmation(subject="Re: stop\r\nBcc: evil@x", to_name="Zoë\r\nBcc: evil@x"))

    assert "Bcc" not in msg
    assert msg["Subject"] == "Re: stop Bcc: evil@x"
    assert msg["To"].addresses[0].display_name == "Zoë Bcc: evil@x"


def test_confirmation_refuses_a_malformed_own_message_id() -> None:
    with pytest.raises(HeaderInjection):
        _confirmation(message_id="confirm.1@imperial.example")


def test_confirmation_lines_are_crlf_and_long_lines_are_wrapped() -> None:
    raw = _confirmation(text=f"{LONG_LINE}\n", html=f"<p>{LONG_LINE}</p>\n")

    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert _body(_parse(raw), "plain") == f"{LONG_LINE}\n"


@given(
    name=st.text(max_size=120),
    local=st.from_regex(r"[a-z0-9]{1,60}", fullmatch=True),
)
@settings(max_examples=300, deadline=None)
def test_a_name_formatted_once_and_reused_gives_the_to_field_the_general_formatter_gives(
    name: str, local: str
) -> None:
    builder = CampaignMessageBuilder(HEADERS, date=DATE)
    address = f"{local}@example.com"
    expected = f"To: {outgoing._mailbox('To', name, address)}\r\n".encode("ascii")

    first = _build(builder, to_name=name, to_address="a@example.com")
    again = _build(builder, to_name=name, to_address=address)

    assert first.startswith(b"From: ")
    assert expected in again.split(b"\r\nSubject: ")[0] + b"\r\n"


@pytest.mark.parametrize(
    "url", [UNSUBSCRIBE_URL, " \x00" + UNSUBSCRIBE_URL + "\r\n", UNSUBSCRIBE_URL + "\x7f"]
)
def test_a_plain_url_and_one_with_controls_around_it_give_the_same_header(
    builder: CampaignMessageBuilder, url: str
) -> None:
    msg = _parse(_build(builder, unsubscribe_url=url))

    assert msg["List-Unsubscribe"] == EXPECTED_LIST_UNSUBSCRIBE


def test_a_keyed_message_id_is_the_hmac_of_what_it_names_under_each_secret_in_turn() -> None:
    import hashlib
    import hmac

    for secret in ["s3cret", "other", "s3cret"]:
        for what in ["campaign:7:customer:5", "campaign:7:customer:6"]:
            mac = hmac.new(secret.encode(), f"message-id:{what}".encode(), hashlib.sha256)
            expected = f"<{mac.hexdigest()[:32]}@imperial.example>"
            assert message_id("imperial.example", secret=secret, what=what) == expected
