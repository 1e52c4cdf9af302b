"""What goes over the IMAP wire, as pure functions: arguments our commands send (mailbox names,
UID sets) and the values read back out of the server's responses (FETCH items, UIDVALIDITY,
SEARCH results). No I/O; `mailer.inbox.imap` sends the commands and hands the lines here.

aioimaplib gives a response as a list of lines: text lines as `bytes`, literals (RFC 3501
section 4.3) as `bytearray`, and the tagged status line last.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from aioimaplib import aioimaplib as upstream

__all__ = [
    "FetchedHeader",
    "encode_mailbox_name",
    "fetched_bodies",
    "fetched_headers",
    "one_line",
    "search_uids",
    "uid_set",
    "uidvalidity",
]

_FETCH_START_RE = re.compile(rb"^\d+ FETCH \(", re.IGNORECASE)
_UID_RE = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)
# A literal is replaced by "\0<index>\0" right after its "{size}" when a FETCH is parsed.
_HEADER_RE = re.compile(rb'BODY\[HEADER\] (?:\{\d+\}\0(\d+)\0|"((?:[^"\\]|\\.)*)"|NIL)', re.I)
_BODY_RE = re.compile(rb'BODY\[\] (?:\{\d+\}\0(\d+)\0|"((?:[^"\\]|\\.)*)"|NIL)', re.IGNORECASE)
_UIDVALIDITY_RE = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)


@dataclass(frozen=True)
class FetchedHeader:
    uid: int
    size: int
    header: bytes  # the header block (BODY.PEEK[HEADER]), blank line included


def encode_mailbox_name(name: str) -> str:
    """A mailbox name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = base64.b64encode("".join(pending).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + raw.replace(b"/", b",").decode("ascii") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return str(upstream.quoted("".join(out)))


def uid_set(uids: Sequence[int]) -> str:
    """The UID set "1:3,7" for [1, 2, 3, 7]: keeps command lines short."""
    ordered = sorted(set(uids))
    runs: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid != prev + 1:
            runs.append(f"{start}:{prev}" if prev != start else str(start))
            start = uid
        prev = uid
    runs.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(runs)


def one_line(value: object) -> str:
    """A server's text (or an exception) on one line, for an error message."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    return " ".join(str(value).split())


def uidvalidity(lines: Sequence[Any]) -> int | None:
    """The UIDVALIDITY a SELECT response announces (RFC 3501 section 7.1), or None."""
    for line in lines:
        match = _UIDVALIDITY_RE.search(bytes(line))
        if match:
            return int(match.group(1))
    return None


def search_uids(lines: Sequence[Any]) -> set[int]:
    """The numbers of a SEARCH response (aioimaplib strips the "* SEARCH" in front of them)."""
    return {int(t) for line in lines[:-1] for t in line.split() if t.isdigit()}


def fetched_headers(lines: Sequence[Any], wanted: Collection[int]) -> dict[int, FetchedHeader]:
    """UID -> header block and size, from a `UID FETCH (UID RFC822.SIZE BODY.PEEK[HEADER])`
    response, for the UIDs in `wanted` only."""
    found: dict[int, FetchedHeader] = {}
    for text, literals in _fetch_responses(lines):
        uid, size = _UID_RE.search(text), _SIZE_RE.search(text)
        header = _item(_HEADER_RE.search(text), literals)
        if uid is None or size is None or header is None:
            continue  # an unsolicited FETCH, e.g. flags changed by another client
        number = int(uid.group(1))
        if number in wanted:
            found[number] = FetchedHeader(number, int(size.group(1)), header)
    return found


def fetched_bodies(lines: Sequence[Any], wanted: Collection[int]) -> dict[int, bytes]:
    """UID -> whole raw message, from a `UID FETCH (UID BODY.PEEK[])` response, for the UIDs
    in `wanted` only."""
    found: dict[int, bytes] = {}
    for text, literals in _fetch_responses(lines):
        match = _UID_RE.search(text)
        body = _item(_BODY_RE.search(text), literals)
        if match is not None and body is not None and int(match.group(1)) in wanted:
            found[int(match.group(1))] = body
    return found


def _fetch_responses(lines: Sequence[Any]) -> list[tuple[bytes, list[bytes]]]:
    """Group the untagged lines of a FETCH into (text, literals) per message.

    In the text a literal is replaced by "\\0<index>\\0", so the regexes above can tell which
    item it belongs to.
    """
    messages: list[tuple[bytearray, list[bytes]]] = []
    for line in lines[:-1]:  # the last line is the tagged status text
        if isinstance(line, bytearray):
            if messages:
                text, literals = messages[-1]
                text.extend(b"\0%d\0" % len(literals))
                literals.append(bytes(line))
        elif _FETCH_START_RE.match(line):
            messages.append((bytearray(line), []))
        elif messages:
            messages[-1][0].extend(line)
    return [(bytes(text), literals) for text, literals in messages]


def _item(match: re.Match[bytes] | None, literals: list[bytes]) -> bytes | None:
    if match is None:
        return None
    if match.group(1) is not None:
        return literals[int(match.group(1))]
    if match.group(2) is not None:
        return re.sub(rb"\\(.)", rb"\1", match.group(2))
    return b""
