"""Reading what comes back: delivery reports (bounces) and complaints, from raw message bytes.

Pure: `read_report(raw, verifier)` returns a `Report` or None and never raises, whatever the
bytes. It decides nothing about customers: what a report does, and whether it is tied to a
message we sent, is decided in `mailer.store.deliverability` (tag verified here, Message-IDs
looked up there).

Three shapes are read:

- RFC 3464 delivery status notifications (`multipart/report; report-type=delivery-status`):
  one block per recipient; `Action: failed` or `delayed` is a failure, and the *status class*
  decides hard or soft (RFC 3463 §3.1: 5.x.x permanent, 4.x.x persistent transient), so the
  `4.2.2` with `Action: failed` Postfix sends when it stops retrying a full mailbox is soft.
- RFC 5965 ARF complaints (`multipart/report; report-type=feedback-report`) with
  `Feedback-Type: abuse` (the type feedback loops send when a person presses "report spam").
- Everything else that `flufl.bounce` (Mailman's detectors: Exim, qmail, Exchange, Yahoo,
  Postfix plain text, ...) recognises: permanent failures are hard, temporary ones soft, unless
  the text carries an RFC 3463 status code whose class says otherwise. Auto-replies ("I am on
  holiday": RFC 3834 markers, `X-Autoreply`, out-of-office subjects) are never read this way:
  counting vacation replies as bounces blocklisted people elsewhere (listmonk #1334).

Where a VERP tag (mailer.mail.verp) may be: the report's To, Delivered-To, X-Original-To,
Envelope-To and Return-Path, the DSN's Original-Recipient / Final-Recipient (and Postfix's
X-Postfix-Sender), the ARF report's
Original-Mail-From, and the Return-Path of the original message a report quotes (a feedback
loop sends its report to a fixed address, so the quoted envelope is where our tag survives).
Only a tag whose HMAC verifies counts.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import email.utils
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Literal

import flufl.bounce

from mailer.mail.verp import Tag, Verifier

log = logging.getLogger(__name__)

Kind = Literal["hard", "soft", "complaint"]
Format = Literal["dsn", "arf", "non-standard"]

# Work done on one hostile message is bounded: parts walked, text scanned.
_MAX_PARTS = 64
_MAX_TEXT = 256 * 1024
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MSG_ID = re.compile(r"<[^<>\s]{1,900}>")
_QUOTED_MESSAGE_ID = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]{1,900}>)",
                                re.IGNORECASE | re.MULTILINE)
_ENVELOPE_HEADERS = ("to", "delivered-to", "x-original-to", "envelope-to", "return-path")
_AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-vacation")
_AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|auto:|out of (?:the )?office|"
    r"abwesenheit|on (?:holiday|vacation|leave)|away from)", re.IGNORECASE)


@dataclass(frozen=True)
class Report:
    """One delivery report or complaint, as read; nothing about customers yet."""

    kind: Kind
    format: Format
    key: str  # idempotency: "mid:<report Message-ID>", or "sha256:<digest>" without one
    recipients: tuple[str, ...]  # the failed (or complaining) addresses, lower-cased
    tag: Tag | None  # a verified VERP tag of ours it was addressed to or quotes
    original_message_ids: tuple[str, ...]  # Message-IDs of the original it quotes, "<..>"
    status: str = ""  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str = ""  # the remote MTA's words (Diagnostic-Code), one line, capped


def read_report(raw: bytes, verifier: Verifier | None = None) -> Report | None:
    """The report `raw` is, or None (not a report, an auto-reply, a success notice)."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:  # the stdlib parser is lenient; a bug in it must not stop the inbox
        return None
    key = _key(message, raw)
    content_type = message.get_content_type()
    report_type = _param(message, "report-type").lower()
    if content_type == "multipart/report" and report_type == "delivery-status":
        return _read_dsn(message, key, verifier)
    if content_type == "multipart/report" and report_type == "feedback-report":
        return _read_arf(message, key, verifier)
    if _is_autoreply(message):
        return None
    return _read_non_standard(message, key, verifier)


# --- RFC 3464 -------------------------------------------------------------------------------


def _read_dsn(message: Message, key: str, verifier: Verifier | None) -> Report | None:
    status_part = _first_part(message, "message/delivery-status")
    if status_part is None:
        return _read_non_standard(message, key, verifier)
    blocks = status_part.get_payload()
    if not isinstance(blocks, list):
        return None
    failures: list[tuple[str, str, str]] = []
    addresses: list[str] = []
    # RFC 3464 §2.1: the first block is per-message, the rest one per recipient.
    for block in blocks[1:]:
        if not isinstance(block, Message):
            continue
        action = _field(block, "action").lower()
        final = _typed_address(_field(block, "final-recipient"))
        first = _typed_address(_field(block, "original-recipient"))
        addresses.extend(a for a in (first, final) if a)
        if not action.startswith(("failed", "delayed")):
            continue  # delivered, relayed, expanded (RFC 3464 §2.3.3): nothing went wrong
        status_match = _STATUS.search(_field(block, "status"))
        status = status_match.group(0) if status_match else ""
        if not status:  # §2.3.4 makes Status required; fall back on the SMTP reply code
            code = re.search(r"\b([45])\d\d\b", _field(block, "diagnostic-code"))
            status = f"{code.group(1)}.0.0" if code else ("4.0.0" if action.startswith(
                "delayed") else "5.0.0")
        if action.startswith("delayed") and status.startswith("5"):
            status = "4" + status[1:]  # still being retried: not final, whatever it says
        failures.append((final or first, status, _one_line(_field(block,
                                                                       "diagnostic-code"))))
    if not failures:
        return None
    worst = next((f for f in failures if f[1].startswith("5")), failures[0])
    original = _quoted_original(message)
    return Report(
        kind="hard" if worst[1].startswith("5") else "soft",
        format="dsn",
        key=key,
        recipients=_unique(f[0] for f in failures if f[0]),
        tag=_find_tag(verifier, [*_envelope_addresses(message), *addresses,
                                 *_per_message_senders(blocks), *_return_paths(original)]),
        original_message_ids=_original_ids(message, original),
        status=worst[1],
        diagnostic=worst[2],
    )


# --- RFC 5965 -------------------------------------------------------------------------------


def _read_arf(message: Message, key: str, verifier: Verifier | None) -> Report | None:
    part = _first_part(message, "message/feedback-report")
    if part is None:
        return None
    payload = part.get_payload()
    fields = payload[0] if isinstance(payload, list) and payload else None
    if not isinstance(fields, Message):
        return None
    # RFC 5965 §3.1: abuse is "unsolicited email": the person said this is spam.
    if _field(fields, "feedback-type").lower() != "abuse":
        return None
    original = _quoted_original(message)
    recipients = [_typed_address(v) or _bare(v) for v in _all(fields, "original-rcpt-to")]
    if not any(recipients) and original is not None:
        recipients = [a for _, a in email.utils.getaddresses(_all(original, "to"))]
    mail_from = [_bare(v) for v in _all(fields, "original-mail-from")]
    return Report(
        kind="complaint",
        format="arf",
        key=key,
        recipients=_unique(a.lower() for a in recipients if a),
        tag=_find_tag(verifier, [*_envelope_addresses(message), *mail_from,
                                 *_return_paths(original)]),
        original_message_ids=_original_ids(message, original),
        diagnostic=_one_line(_field(fields, "user-agent")),
    )


# --- everything else: flufl.bounce ----------------------------------------------------------


def _read_non_standard(message: Message, key: str, verifier: Verifier | None) -> Report | None:
    try:
        temporary, permanent = flufl.bounce.all_failures(message)
    except Exception:  # a detector tripping over hostile input means: not recognised
        log.debug("flufl.bounce could not read report %s", key, exc_info=True)
        return None
    if not temporary and not permanent:
        return None
    text = _text(message)
    status_match = _STATUS.search(text)
    status = status_match.group(0) if status_match and status_match.group(1) != "2" else ""
    if status:
        kind: Kind = "hard" if status.startswith("5") else "soft"
    else:
        kind = "hard" if permanent else "soft"
    failed = permanent or temporary
    original = _quoted_original(message)
    return Report(
        kind=kind,
        format="non-standard",
        key=key,
        recipients=_unique(a.decode("utf-8", "replace").strip().lower() for a in failed),
        tag=_find_tag(verifier, [*_envelope_addresses(message), *_return_paths(original)]),
        original_message_ids=_original_ids(message, original, text),
        status=status,
        diagnostic=_one_line(_diagnostic_line(text)),
    )


# --- helpers --------------------------------------------------------------------------------


def _key(message: Message, raw: bytes) -> str:
    ids = _MSG_ID.findall(_field(message, "message-id"))
    if ids:
        return f"mid:{ids[0]}"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _all(message: Message, name: str) -> list[str]:
    # compat32 hands back a Header object for undecodable bytes; str() is what we compare.
    return [str(v) for v in (message.get_all(name) or [])]


def _field(message: Message, name: str) -> str:
    values = _all(message, name)
    return values[0].strip() if values else ""


def _param(message: Message, name: str) -> str:
    value = message.get_param(name)
    if isinstance(value, tuple):  # RFC 2231 form
        value = email.utils.collapse_rfc2231_value(value)
    return str(value) if value else ""


def _parts(message: Message) -> Iterator[Message]:
    for count, part in enumerate(message.walk()):
        if count >= _MAX_PARTS:
            return
        yield part


def _first_part(message: Message, content_type: str) -> Message | None:
    return next((p for p in _parts(message) if p.get_content_type() == content_type), None)


def _quoted_original(message: Message) -> Message | None:
    """The original message (or its headers) a report quotes (RFC 3462 §2's third part)."""
    for part in _parts(message):
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif content_type == "text/rfc822-headers":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
                    body[:_MAX_TEXT])
    return None


def _original_ids(message: Message, original: Message | None, text: str = "") -> tuple[str, ...]:
    own = set(_MSG_ID.findall(_field(message, "message-id")))
    found: list[str] = []
    if original is not None:
        found.extend(_MSG_ID.findall(_field(original, "message-id")))
    # Non-standard bounces quote the original's headers as text (Exim: "------ This is a copy
    # of the message, including all the headers.").
    found.extend(_QUOTED_MESSAGE_ID.findall(text))
    return _unique(i for i in found if i not in own)


def _envelope_addresses(message: Message) -> list[str]:
    values = [v for name in _ENVELOPE_HEADERS for v in _all(message, name)]
    return [a for _, a in email.utils.getaddresses(values) if a]


def _per_message_senders(blocks: Sequence[object]) -> list[str]:
    """Postfix names the envelope sender in the per-message block (X-Postfix-Sender)."""
    first = blocks[0] if blocks else None
    if not isinstance(first, Message):
        return []
    return [_typed_address(v) for v in _all(first, "x-postfix-sender")]


def _return_paths(original: Message | None) -> list[str]:
    if original is None:
        return []
    return [_bare(v) for v in _all(original, "return-path")]


def _find_tag(verifier: Verifier | None, candidates: list[str]) -> Tag | None:
    if verifier is None:
        return None
    for candidate in candidates:
        if "+" in candidate:
            tag = verifier.parse(candidate)
            if tag is not None:
                return tag
    return None


def _typed_address(value: str) -> str:
    """`rfc822; a@b` (RFC 3464 §2.3.2: address-type ; address) -> `a@b`."""
    kind, semicolon, address = value.partition(";")
    if not semicolon or kind.strip().lower() != "rfc822":
        return ""
    return _bare(address)


def _bare(value: str) -> str:
    return email.utils.parseaddr(value.strip())[1].strip().lower()


def _is_autoreply(message: Message) -> bool:
    if any(message.get(h) is not None for h in _AUTOREPLY_HEADERS):
        return True
    if _field(message, "precedence").lower() == "auto_reply":
        return True
    # RFC 3834 §5: auto-replied marks a reply; a bounce is a report, recognised above, so an
    # auto-reply is told from a plain-text bounce by its subject.
    return bool(_AUTOREPLY_SUBJECT.match(_field(message, "subject")))


def _text(message: Message) -> str:
    chunks: list[str] = []
    size = 0
    for part in _parts(message):
        if part.get_content_maintype() != "text" or size >= _MAX_TEXT:
            continue
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            text = body[:_MAX_TEXT].decode(charset, "replace")
        except LookupError:
            text = body[:_MAX_TEXT].decode("utf-8", "replace")
        chunks.append(text)
        size += len(text)
    return "\n".join(chunks)[:_MAX_TEXT]


def _diagnostic_line(text: str) -> str:
    match = _STATUS.search(text)
    if match is None:
        return ""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start: end if end >= 0 else len(text)]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _unique(values: Iterator[str] | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
