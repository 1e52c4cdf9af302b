"""The evidence an emailed request carries: who it says it is from, when, and what our receiving
server found when it checked the sender (`email_evidence`). Pure: header bytes in, values out.

The verdicts come from the `Authentication-Results` header (RFC 8601), parsed by `authres`.
Anyone can write such a header into a message, so only one is trusted: the topmost whose
authserv-id is `[imap] authserv_id`, the one our own server prepends on delivery (RFC 8601
section 5: the receiving server adds its header above any that came with the message, and
should remove forged ones naming it). With no authserv-id configured nothing is trusted and the
verdicts stay empty: an empty verdict means "not checked", never "failed".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesParser

import authres

from mailer.inbox.headers import MAX_HEADER_BLOCK_BYTES, POLICY
from mailer.store.evidence import EventEvidence

# The methods recorded (RFC 8601 section 2.7): DKIM (RFC 6376), SPF (RFC 7208), DMARC (RFC 7489).
METHODS = ("dkim", "spf", "dmarc")

# A Message-ID, From or Date longer than this is cut: evidence, not a place to store a novel.
MAX_FIELD_CHARS = 998  # RFC 5322 section 2.1.1: the longest line a message may have


@dataclass(frozen=True)
class Verdicts:
    """Our server's result per method: "pass", "fail", "none", ...; "" = no trusted verdict.
    Several signatures (DKIM) give each distinct result in order, joined by commas."""

    dkim: str = ""
    spf: str = ""
    dmarc: str = ""


@dataclass(frozen=True)
class EmailEvidence:
    message_id: str
    sender: str  # the From field as written
    date: str    # the Date field as written
    verdicts: Verdicts


def verdicts(values: Sequence[str], authserv_id: str) -> Verdicts:
    """The verdicts of the first header in `values` (top to bottom) whose authserv-id is
    `authserv_id` (compared without case, as a domain name); none if it is empty or absent.
    A trusted header that cannot be parsed gives no verdict: never a guess."""
    wanted = authserv_id.strip().lower()
    if not wanted:
        return Verdicts()
    for value in values:
        if _authserv_id(value) != wanted:
            continue
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(value)
        except Exception:  # authres raises several undocumented errors on a bad header
            return Verdicts()
        found: dict[str, list[str]] = {m: [] for m in METHODS}
        for result in parsed.results:
            method = str(result.method).lower()
            outcome = str(result.result).lower()
            if method in found and outcome not in found[method]:
                found[method].append(outcome)
        return Verdicts(**{m: ",".join(r) for m, r in found.items()})
    return Verdicts()


def _authserv_id(value: str) -> str:
    """The authserv-id a header names (before the first ';' and any version), lower case.
    Read here, not by authres, so a foreign header that authres cannot parse costs nothing."""
    head = value.split(";", 1)[0].strip()
    return head.split()[0].lower() if head else ""


def email_evidence(header_block: bytes, authserv_id: str) -> EmailEvidence:
    """Message-ID, From, Date and the trusted verdicts of one request's header block."""
    try:
        message = BytesParser(policy=POLICY).parsebytes(
            header_block[:MAX_HEADER_BLOCK_BYTES], headersonly=True)
        fields = {k: _one_line(str(message.get(k, ""))) for k in ("message-id", "from", "date")}
        results = [_one_line(str(v)) for v in message.get_all("authentication-results") or []]
    except Exception:  # the stdlib parser on hostile input: the request keeps no evidence
        return EmailEvidence("", "", "", Verdicts())
    return EmailEvidence(fields["message-id"], fields["from"], fields["date"],
                         verdicts(results, authserv_id))


def event_evidence(header_block: bytes, authserv_id: str) -> EventEvidence:
    """`email_evidence` as the columns of the consent events the request causes."""
    found = email_evidence(header_block, authserv_id)
    return EventEvidence(message_id=found.message_id, message_from=found.sender,
                         message_date=found.date, dkim=found.verdicts.dkim,
                         spf=found.verdicts.spf, dmarc=found.verdicts.dmarc)


def _one_line(value: str) -> str:
    """Unfolded (RFC 5322 section 2.2.3), trimmed and bounded."""
    return " ".join(value.split())[:MAX_FIELD_CHARS]
