"""Turning raw message bytes from the inbox into plain values.

This module owns reading untrusted mail: the header-only stage (`parse_headers`, enough to
classify a message without fetching its body) and the full stage (`parse_message`, which also
finds the text the sender wrote themselves, without quoted replies, forwarded messages or
signatures). It does no I/O.

Both stages are total. `parse_headers` returns a `Headers` for any bytes at all;
`parse_message` returns a `ParsedMessage` or raises `MalformedMessage`, whose text is a
one-line reason, and nothing else.

The stdlib `email` package does the MIME work, in two layers, because its modern header
parser (`policy.default`) is quadratic in time and memory and recursive on nested comments: a
56 KB Content-Type takes it seconds and over 100 MB, and "((((..." raises RecursionError from
inside `message_from_bytes`. So the MIME tree is built with `_POLICY`, the plain compat32
policy with every header value cut to `MAX_HEADER_CHARS`; then `policy.default`'s header
classes decode just the few fields read here (RFC 2047 encoded-words, address lists). Where
even that fails on garbage, a plainer reading (`email.header.decode_header`,
`email.utils.parseaddr`) takes over.
"""

from __future__ import annotations

import codecs
import email
import email.header
import email.policy
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32
from html.parser import HTMLParser
from typing import Any

from mailer.errors import MalformedMessage as MalformedMessage

__all__ = [
    "EMPTY_HEADERS",
    "MAX_HEADER_BLOCK_BYTES",
    "MAX_HEADER_CHARS",
    "MAX_HTML_CHARS",
    "Headers",
    "MalformedMessage",
    "ParsedMessage",
    "html_to_text",
    "own_text",
    "parse_headers",
    "parse_message",
]

# RFC 5322 §2.1.1 limits a line to 998 characters; a field folded over a few lines fits here.
MAX_HEADER_CHARS = 4096
# Header blocks are a few KB; parse_headers reads no further than this.
MAX_HEADER_BLOCK_BYTES = 1024 * 1024
# HTML beyond this is not read: the sender's own words come first.
MAX_HTML_CHARS = 1_000_000


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


@dataclass(frozen=True)
class ParsedMessage:
    """A whole message: its headers and the text its sender wrote themselves."""

    headers: Headers
    own_text: str


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


_POLICY = _CappedPolicy()


# --- headers -------------------------------------------------------------------------------


def parse_headers(raw: bytes) -> Headers:
    """Decode the header block in `raw` (a header block or a whole message). Never raises."""
    fast = _plain_fields(raw)
    if fast is not None:
        return _headers_from(*fast)
    try:
        # headersonly: a body given along with the headers is kept as one opaque string.
        # Past MAX_HEADER_BLOCK_BYTES there is only body or junk, never a field worth reading.
        message = BytesParser(policy=_POLICY).parsebytes(
            raw[:MAX_HEADER_BLOCK_BYTES], headersonly=True
        )
    except Exception:  # the parser is meant to be lenient; a bug in it must not stop the inbox
        return EMPTY_HEADERS
    return _headers_of(message)


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
        "x-autorespond", "content-type", "references",
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


def _headers_of(message: Message) -> Headers:
    return _headers_from(_first_fields(message), _content_type(message))


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
    )


def _first_fields(message: Message) -> dict[str, str]:
    """The first of each header read here, by lower-case name, as it came but unfolded
    (RFC 5322 §2.2.3). One pass, however many headers the message has."""
    fields: dict[str, str] = {}
    try:
        for key, value in message.raw_items():
            name = key.strip().lower()
            if name in _READ_FIELDS and name not in fields:
                fields[name] = _LINE_BREAK.sub("", str(value))
    except Exception:
        pass
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
            pieces.append(_decode_bytes(chunk, charset))
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
    except Exception:
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


def _content_type(message: Message) -> str:
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
    return _decode_bytes(raw, None)


def _escapes_only(text: str) -> bool:
    return all(not ("\ud800" <= c <= "\udfff") or "\udc80" <= c <= "\udcff" for c in text)


def _decode_bytes(data: bytes, charset: str | None) -> str:
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


# --- whole message -------------------------------------------------------------------------


def parse_message(raw: bytes, *, max_bytes: int, headers: Headers | None = None) -> ParsedMessage:
    """Parse a whole message and find its sender's own text.

    `headers`, when the caller already decoded this message's header block with
    `parse_headers`, is reused instead of being decoded a second time.

    Raises `MalformedMessage` (and nothing else) when the message is over `max_bytes`, has no
    text part, or its text cannot be decoded.
    """
    if len(raw) > max_bytes:
        raise MalformedMessage(f"message is {len(raw)} bytes, over the {max_bytes}-byte cap")
    try:
        message = email.message_from_bytes(raw, policy=_POLICY)
    except RecursionError as exc:
        raise MalformedMessage("MIME parts are nested too deeply") from exc
    except Exception as exc:
        raise MalformedMessage(f"unparseable message: {type(exc).__name__}") from exc
    if headers is None:
        headers = _headers_of(message)
    try:
        text = _body_text(message)
    except MalformedMessage:
        raise
    except RecursionError as exc:
        raise MalformedMessage("MIME parts are nested too deeply") from exc
    except Exception as exc:
        raise MalformedMessage(f"undecodable body: {type(exc).__name__}") from exc
    return ParsedMessage(headers=headers, own_text=own_text(text))


def _body_text(message: Message) -> str:
    """The sender's text: the first non-empty text/plain part, else the first text/html part
    converted to text."""
    plain: list[Message] = []
    html: list[Message] = []
    for part in _leaf_parts(message, is_root=True):
        kind = _content_type(part)
        if kind == "text/plain":
            plain.append(part)
        elif kind == "text/html":
            html.append(part)
    if not plain and not html:
        raise MalformedMessage("no text part")
    for part in plain:
        text = _part_text(part)
        if text.strip():
            return text
    if html:
        return html_to_text(_part_text(html[0])[:MAX_HTML_CHARS])
    return ""


def _leaf_parts(part: Message, *, is_root: bool) -> Iterator[Message]:
    """Body parts in order, not descending into attached messages (message/rfc822 is a
    forwarded or bounced message, not the sender's words) and skipping attachments."""
    kind = _content_type(part)
    if kind.startswith("multipart/"):
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _leaf_parts(sub, is_root=False)
        return
    if kind.startswith("message/"):
        return
    # RFC 2183 §2.2: an attachment is not displayed as part of the message body.
    if not is_root and _disposition(part) == "attachment":
        return
    yield part


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _part_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if data is None:
        return ""
    if not isinstance(data, bytes):
        raise MalformedMessage("undecodable body")
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _decode_bytes(data, charset)


# --- HTML ----------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "br", "dd", "div", "dl", "dt", "footer", "h1", "h2",
        "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre", "section", "table",
        "td", "th", "tr", "ul",
    }
)  # fmt: skip
_HIDDEN_TAGS = frozenset({"head", "script", "style", "title", "template"})


class _TextExtractor(HTMLParser):
    """Collects visible text, a newline per block element. Quoted replies (blockquote) are
    dropped, and a mailto: link's address is kept when its text does not show it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0
        self._quoted = 0
        self._mailto: str | None = None
        self._link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag == "blockquote":
            self._quoted += 1
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            if href.lower().startswith("mailto:"):
                self._mailto = href[len("mailto:") :].split("?")[0]
                self._link_text = []
        if tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "blockquote":
            self._quoted = max(0, self._quoted - 1)
        elif tag == "a" and self._mailto is not None:
            if self._mailto.lower() not in "".join(self._link_text).lower() and self._visible:
                self.chunks.append(f" {self._mailto} ")
            self._mailto = None
        if tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if self._visible:
            self.chunks.append(data)
            if self._mailto is not None:
                self._link_text.append(data)

    @property
    def _visible(self) -> bool:
        return self._hidden == 0 and self._quoted == 0


_TAG = re.compile(r"<[^>]*>")


def html_to_text(html: str) -> str:
    """Visible text of an HTML body, one line per block element."""
    extractor = _TextExtractor()
    try:
        extractor.feed(html)
        extractor.close()
        text = "".join(extractor.chunks)
    except Exception:  # html.parser can raise on malformed markup (e.g. marked sections)
        text = _TAG.sub(" ", html)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


# --- the sender's own words ----------------------------------------------------------------

# Lines from which everything to the end is someone else's text.
_CUT_LINE = re.compile(
    r"""^\s*(?:
        -{2,}\s*original\s+message\s*-{2,}          # Outlook
      | -{2,}\s*forwarded\s+message\s*-{2,}         # Gmail
      | begin\s+forwarded\s+message\s*:             # Apple Mail
      | _{10,}                                      # Outlook on the web, before a header block
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
# Reply attribution, on one line or wrapped onto a second one ("On <date>, <name> wrote:").
_ATTRIBUTION_START = re.compile(r"^\s*on\s", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"wrote\s*:\s*$", re.IGNORECASE)
# A quoted header block without a separator line: "From: ..." then "Sent:"/"Date:".
_QUOTED_FROM = re.compile(r"^\s*\*?from\s*:\*?\s*\S", re.IGNORECASE)
_QUOTED_SENT = re.compile(r"^\s*\*?(?:sent|date)\s*:", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def own_text(text: str) -> str:
    """The part of a plain-text body its sender wrote: quoted lines, reply attributions and
    what follows them, forwarded messages and the signature are removed."""
    lines = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if _is_cut(lines, index):
            break
        # RFC 3676 §4.5: quoted lines start with ">".
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept).strip()


def _is_cut(lines: list[str], index: int) -> bool:
    line = lines[index]
    # RFC 3676 §4.3: "-- " alone on a line starts the signature; many clients trim the space.
    if line.rstrip() == "--" or _CUT_LINE.match(line):
        return True
    if _ATTRIBUTION_START.match(line):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _ATTRIBUTION_END.search(line) or _ATTRIBUTION_END.search(following):
            return True
    if _QUOTED_FROM.match(line):
        return any(_QUOTED_SENT.match(later) for later in lines[index + 1 : index + 4])
    return False
