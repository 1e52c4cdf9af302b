"""Reading the body of untrusted mail: the text its sender wrote themselves (`parse_message`).

The full stage, after `mailer.inbox.headers`: it finds the first text part (or converts an HTML
one) and keeps only the sender's own words, without quoted replies, forwarded messages or
signatures. It does no I/O and is total: `parse_message` returns a `ParsedMessage` or raises
`MalformedMessage`, whose text is a one-line reason, and nothing else.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser

from mailer.errors import MalformedMessage
from mailer.inbox.headers import POLICY, Headers, content_type, decode_bytes, headers_of

__all__ = [
    "MAX_HTML_CHARS",
    "ParsedMessage",
    "html_to_text",
    "own_text",
    "parse_message",
]

# HTML beyond this is not read: the sender's own words come first.
MAX_HTML_CHARS = 1_000_000


@dataclass(frozen=True)
class ParsedMessage:
    """A whole message: its headers and the text its sender wrote themselves."""

    headers: Headers
    own_text: str



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
        message = email.message_from_bytes(raw, policy=POLICY)
    except RecursionError as exc:
        raise MalformedMessage("MIME parts are nested too deeply") from exc
    except Exception as exc:
        raise MalformedMessage(f"unparseable message: {type(exc).__name__}") from exc
    if headers is None:
        headers = headers_of(message)
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
        kind = content_type(part)
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
    kind = content_type(part)
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
    return decode_bytes(data, charset)


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
