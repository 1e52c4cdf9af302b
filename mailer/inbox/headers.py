"""Reading the header block of untrusted mail into plain values (`parse_headers`).

This is the header-only stage: enough to classify a message without fetching its body. It is
total: `parse_headers` returns a `Headers` for any bytes at all. It does no I/O. The body stage
(`mailer.inbox.body`) builds on the MIME policy and the charset fallback defined here.

The stdlib `email` package does the MIME work, in two layers, because its modern header
parser (`policy.default`) is quadratic in time and memory and recursive on nested comments: a
56 KB Content-Type takes it seconds and over 100 MB, and "((((..." raises RecursionError from
inside `message_from_bytes`. So the MIME tree is built with `POLICY`, the plain compat32
policy with every header value cut to `MAX_HEADER_CHARS`; then `policy.default`'s header
classes decode just the few fields read here (RFC 2047 encoded-words, address lists). Where
even that fails on garbage, a plainer reading (`email.header.decode_header`,
`email.utils.parseaddr`) takes over. The `except Exception` clauses below are that rule: the
stdlib parsers raise a wide, undocumented range of errors on hostile input, and a header that
cannot be read must cost its own value, never the inbox.
"""

from __future__ import annotations

import codecs
import email.header
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32
from typing import Any

__all__ = [
    "EMPTY_HEADERS",
    "MAX_HEADER_BLOCK_BYTES",
    "MAX_HEADER_CHARS",
    "POLICY",
    "Headers",
    "content_type",
    "decode_bytes",
    "headers_of",
    "parse_headers",
]

# RFC 5322 §2.1.1 limits a line to 998 characters; a field folded over a few lines fits here.
MAX_HEADER_CHARS = 4096
# Header blocks are a few KB; parse_headers reads no further than this.
MAX_HEADER_BLOCK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Headers:
    """What the header block says, decoded; enough to classify a message."""

    message_id: str | None
    subject: str
    from_address: str | None
    from_name: str
    auto_submitted: str | None
    precedence: str | None
    has_autoreply_header: bool
    content_type: str
    references: tuple[str, ...]
    in_reply_to: tuple[str, ...] = ()  # RFC 5322 §3.6.4: the message(s) this one answers


class _CappedPolicy(Compat32):
    """compat32 (header values kept as strings while the MIME tree is built), with each value
    cut to MAX_HEADER_CHARS so no later parse of it can be slow."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        if len(value) > MAX_HEADER_CHARS:
            # RFC 5322 §3.6.4: References ends with the parent's id, so keep its tail.
            if name.strip().lower() == "references":
                value = value[-MAX_HEADER_CHARS:]
            else:
                value = value[:MAX_HEADER_CHARS]
        return name, value


POLICY = _CappedPolicy()


def parse_headers(raw: bytes) -> Headers:
    """Decode the header block in `raw` (a header block or a whole message). Never raises."""
    fast = _plain_fields(raw)
    if fast is not None:
        return _headers_from(*fast)
    try:
        # headersonly: a body given along with the headers is kept as one opaque string.
        # Past MAX_HEADER_BLOCK_BYTES there is only body or junk, never a field worth reading.
        message = BytesParser(policy=POLICY).parsebytes(
            raw[:MAX_HEADER_BLOCK_BYTES], headersonly=True
        )
    except Exception:  # the parser is meant to be lenient; a bug in it must not stop the inbox
        return EMPTY_HEADERS
    return headers_of(message)


EMPTY_HEADERS = Headers(
    message_id=None,
    subject="",
    from_address=None,
    from_name="",
    auto_submitted=None,
    precedence=None,
    has_autoreply_header=False,
    content_type="text/plain",
    references=(),
)

_MSG_ID = re.compile(r"<[^<>]*>")
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


_READ_FIELDS = frozenset(
    {
        "message-id", "subject", "from", "auto-submitted", "precedence", "x-autoreply",
        "x-autorespond", "content-type", "references", "in-reply-to",
    }
)  # fmt: skip


_PLAIN_BLOCK_BYTES = 64 * 1024
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext: printable, no colon or space


def _plain_fields(raw: bytes) -> tuple[dict[str, str], str] | None:
    """The fields read here, and the content type, of an ordinary header block: ASCII, CRLF
    line ends, well-formed field lines. None for anything else, which the full parser takes.

    A fast path for the header-only stage, which sees every message in the inbox: it reads
    what `_CappedPolicy` and `_first_fields` would, in a fraction of the time.
    """
    end = raw.find(b"\r\n\r\n", 0, _PLAIN_BLOCK_BYTES)
    if end <= 0 or not raw[:end].isascii():
        return None
    text = raw[:end].decode("ascii")
    if "\n" in text.replace("\r\n", "") or "\r" in text.replace("\r\n", ""):
        return None
    fields: dict[str, str] = {}
    folded_content_type: str | None = None
    name: str | None = None
    parts: list[str] = []

    def keep() -> None:
        nonlocal folded_content_type
        if name is not None and name in _READ_FIELDS and name not in fields:
            if name == "content-type":  # as email.message reads it: folds included
                folded_content_type = "\r\n".join(parts)
            value = "".join(parts)
            if len(value) > MAX_HEADER_CHARS:
                value = value[-MAX_HEADER_CHARS:] if name == "references" else (
                    value[:MAX_HEADER_CHARS])
            fields[name] = value

    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t"):
            if name is None:
                return None
            parts.append(line)
            continue
        field, colon, value = line.partition(":")
        if not colon or _FIELD_NAME.fullmatch(field) is None:
            return None  # "From " lines, defects: the full parser knows what to do
        keep()
        name, parts = field.lower(), [value.lstrip(" \t")]
    keep()
    main = "text/plain"
    if folded_content_type is not None:
        candidate = folded_content_type.split(";", 1)[0].strip().lower()
        # RFC 2045 §5.2: an unreadable Content-Type means text/plain.
        if candidate.count("/") == 1:
            main = candidate
    return fields, main


def headers_of(message: Message) -> Headers:
    return _headers_from(_first_fields(message), content_type(message))


def _headers_from(fields: dict[str, str], content_type: str) -> Headers:
    message_id = fields.get("message-id")
    from_name, from_address = _from(fields.get("from"))
    return Headers(
        # A folded msg-id may carry whitespace; none belongs in it (RFC 5322 §3.6.4).
        message_id=None if message_id is None else "".join(_clean(message_id).split()) or None,
        subject=_header("Subject", fields.get("subject")) or "",
        from_address=from_address,
        from_name=from_name,
        auto_submitted=_header("Auto-Submitted", fields.get("auto-submitted")),
        precedence=_header("Precedence", fields.get("precedence")),
        has_autoreply_header="x-autoreply" in fields or "x-autorespond" in fields,
        content_type=content_type,
        references=tuple(
            "".join(m.split()) for m in _MSG_ID.findall(_clean(fields.get("references", "")))
        ),
        in_reply_to=tuple(
            "".join(m.split()) for m in _MSG_ID.findall(_clean(fields.get("in-reply-to", "")))
        ),
    )


def _first_fields(message: Message) -> dict[str, str]:
    """The first of each header read here, by lower-case name, as it came but unfolded
    (RFC 5322 §2.2.3). One pass, however many headers the message has."""
    fields: dict[str, str] = {}
    # compat32 keeps every value as the string it parsed (`_CappedPolicy`): nothing here raises.
    for key, value in message.raw_items():
        name = key.strip().lower()
        if name in _READ_FIELDS and name not in fields:
            fields[name] = _LINE_BREAK.sub("", str(value))
    return fields


def _structured(name: str, raw: str) -> Any:
    """`policy.default`'s header object for a (capped) raw value, or None if it fails."""
    try:
        return email.policy.default.header_factory(name, raw)
    except Exception:
        return None


def _header(name: str, raw: str | None) -> str | None:
    """The decoded value of a header on one line, or None if absent."""
    if raw is None:
        return None
    if _is_plain(raw):
        # Fast path: plain ASCII without encoded-words decodes to itself, unfolded; the
        # header registry costs ~100 µs a field, most of a header-only pass.
        return _one_line(_clean(raw))
    parsed = _structured(name, raw)
    try:
        text = None if parsed is None else _one_line(_clean(str(parsed)))
    except Exception:
        text = None
    if text is None or "\ufffd" in text:
        # policy.default replaces encoded-words in unknown charsets (RFC 2047 §6.2);
        # the fallback reads them as UTF-8 or Latin-1 instead, if that loses nothing.
        fallback = _decode_words(raw)
        if text is None or "\ufffd" not in fallback:
            return fallback
    return text


def _decode_words(raw: str) -> str:
    """Decode RFC 2047 encoded-words by hand, tolerating unknown charsets."""
    try:
        parts = email.header.decode_header(raw)
    except Exception:
        return _one_line(_clean(raw))
    pieces: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            pieces.append(_clean(chunk))
        else:
            pieces.append(decode_bytes(chunk, charset))
    return _one_line("".join(pieces))


def _from(raw: str | None) -> tuple[str, str | None]:
    """(display name, lower-cased addr-spec or None) of the first mailbox in a From value."""
    if raw is None:
        return "", None
    if _is_plain(raw) and not any(c in raw for c in '(),;:"\\[]'):
        # Fast path for the common `Name <addr>` / `addr` forms: nothing there that
        # parseaddr reads differently from the RFC 5322 grammar (no comments, quotes, groups,
        # lists or quoted-pairs).
        name, address = email.utils.parseaddr(raw)
        return _one_line(_clean(name)), _address(_clean(address))
    try:
        addresses = getattr(_structured("From", raw), "addresses", None)
        if addresses is not None:
            if not addresses:
                return "", None
            first = addresses[0]
            return _one_line(_clean(first.display_name)), _address(_clean(first.addr_spec))
    except Exception:  # a header object that fails when read: the plainer reading takes over
        pass
    try:
        name, address = email.utils.parseaddr(_decode_words(raw))
    except Exception:
        return "", None
    return _one_line(name), _address(address)


def _is_plain(raw: str) -> bool:
    return raw.isascii() and "=?" not in raw


def _address(addr_spec: str) -> str | None:
    # An addr-spec is local-part "@" domain (RFC 5322 §3.4.1); anything else identifies no one.
    addr_spec = addr_spec.strip().lower()
    local, at, domain = addr_spec.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in addr_spec):
        return None
    return addr_spec


def content_type(message: Message) -> str:
    try:
        return message.get_content_type().lower()
    except Exception:
        raw = _first_fields(message).get("content-type", "")
        match = _CONTENT_TYPE.match(raw.strip().lower())
        # RFC 2045 §5.2: a missing or unreadable Content-Type means text/plain.
        return match.group(0) if match else "text/plain"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clean(text: str) -> str:
    """Turn any undecoded bytes the parser smuggled through as surrogate escapes into text."""
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    raw = text.encode("utf-8", "surrogateescape") if _escapes_only(text) else None
    if raw is None:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return decode_bytes(raw, None)


def _escapes_only(text: str) -> bool:
    return all(not ("\ud800" <= c <= "\udfff") or "\udc80" <= c <= "\udcff" for c in text)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset; an unknown, missing or non-text charset falls back
    to UTF-8 if the bytes are valid UTF-8, else to Latin-1 (which accepts every byte)."""
    # Mail declared US-ASCII often is not; the fallback reads it as UTF-8 (a superset).
    if charset and charset.lower() not in ("us-ascii", "ascii"):
        try:
            codecs.lookup(charset)
            return data.decode(charset, "replace")
        except Exception:  # LookupError, or a codec that is not a text encoding ("base64")
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
