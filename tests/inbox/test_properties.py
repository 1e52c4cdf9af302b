"""Properties that hold for any input: untrusted mail never crashes the pure pipeline."""

from __future__ import annotations

from email.message import EmailMessage
from email.parser import BytesParser

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.errors import MalformedMessage
from mailer.inbox import headers as header_parsing
from mailer.inbox.body import ParsedMessage, parse_message
from mailer.inbox.classify import Verdict, classify, may_be_report, normalise_subject
from mailer.inbox.headers import Headers, parse_headers
from mailer.inbox.match import Decision, Lookup, decide, extract_clues
from mailer.names import normalise_company, normalise_name

OWN = frozenset({"offers@telecom.example"})
MAX_BYTES = 100_000

modest = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_lines = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"From", b"Subject", b"Message-ID", b"References", b"Content-Type",
                b"Auto-Submitted", b"Precedence", b"X-Autoreply", b"Content-Transfer-Encoding",
                b"MIME-Version",
            ]
        ),
        st.binary(max_size=80),
    ),
    max_size=8,
)  # fmt: skip


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    """Header blocks with real field names and junk values, then a junk body."""
    lines = [name + b": " + value for name, value in draw(header_lines)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + draw(st.binary(max_size=200))


@st.composite
def built_messages(draw: st.DrawFn) -> bytes:
    """Well-formed messages whose subject, names and body are arbitrary text."""
    message = EmailMessage()
    name = draw(st.text(max_size=30)).replace("\n", " ").replace("\r", " ")
    message["From"] = f'"{name}" <jo@example.org>' if name.isprintable() else "jo@example.org"
    subject = draw(st.text(max_size=60))
    message["Subject"] = " ".join(subject.split()) or "x"
    body = draw(st.text(max_size=400))
    subtype = draw(st.sampled_from(["plain", "html"]))
    message.set_content(body, subtype=subtype)
    return message.as_bytes()


def check_total(raw: bytes) -> None:
    headers = parse_headers(raw)
    assert isinstance(headers, Headers)
    verdict = classify(headers, configured_subject="Unsubscribe special offers", own_addresses=OWN)
    assert isinstance(verdict, Verdict)
    assert isinstance(may_be_report(headers, raw), bool)
    try:
        parsed = parse_message(raw, max_bytes=MAX_BYTES)
    except MalformedMessage as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(parsed, ParsedMessage)
    clues = extract_clues(parsed, own_addresses=OWN)
    assert len(clues.name_keys) <= 200
    # A lookup that knows every clue, each name and company twice over: the worst case.
    found = Lookup(
        by_address={a: i for i, a in enumerate(clues.body_addresses)},
        by_name={k: (1, 2) for k in clues.name_keys},
        by_company={k: (3,) for k in clues.company_keys},
    )
    assert isinstance(decide(clues, found), Decision)
    assert isinstance(decide(clues, Lookup({}, {}, {})), Decision)


@modest
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_pipeline(raw: bytes) -> None:
    check_total(raw)


@modest
@given(header_blocks())
def test_junk_header_values_never_crash_the_pipeline(raw: bytes) -> None:
    check_total(raw)


@modest
@given(built_messages())
def test_messages_with_arbitrary_text_never_crash_the_pipeline(raw: bytes) -> None:
    check_total(raw)


@modest
@given(st.text(max_size=500))
def test_arbitrary_text_bodies_give_clues_that_are_already_keys(text: str) -> None:
    headers = parse_headers(b"")
    clues = extract_clues(ParsedMessage(headers, text), own_addresses=OWN)
    assert all(normalise_name(key) == key and len(key.split()) >= 2 for key in clues.name_keys)
    assert all(normalise_company(key) == key for key in clues.company_keys)
    assert all(address == address.lower() for address in clues.body_addresses)


@modest
@given(st.text())
def test_normalise_name_is_idempotent(text: str) -> None:
    once = normalise_name(text)
    assert normalise_name(once) == once


@modest
@given(st.text())
def test_normalise_company_is_idempotent(text: str) -> None:
    once = normalise_company(text)
    assert normalise_company(once) == once


@modest
@given(st.text())
def test_normalise_subject_is_idempotent(text: str) -> None:
    once = normalise_subject(text)
    assert normalise_subject(once) == once


ascii_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80
)
plain_header_lines = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "From", "Subject", "Message-ID", "References", "Content-Type", "content-type",
                "Auto-Submitted", "Precedence", "X-Autoreply", "X-Autorespond", "Received",
                "SUBJECT", "X-Spam: x",
            ]
        ),
        ascii_values,
        st.lists(ascii_values.map(lambda v: " " + v), max_size=2),
    ),
    max_size=10,
)  # fmt: skip


@modest
@given(plain_header_lines, st.binary(max_size=40))
def test_the_fast_header_path_reads_exactly_what_the_full_parser_reads(
    lines: list[tuple[str, str, list[str]]], body: bytes
) -> None:
    block = "".join(
        f"{name}: {value}\r\n" + "".join(f"{more}\r\n" for more in folds)
        for name, value, folds in lines
    )
    raw = block.encode("ascii") + b"\r\n" + body
    full = header_parsing.headers_of(
        BytesParser(policy=header_parsing.POLICY).parsebytes(raw, headersonly=True))
    assert parse_headers(raw) == full
