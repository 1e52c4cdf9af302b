"""Deciding, from headers alone, whether a message is an unsubscribe request.

This module owns the verdict for one message: a REQUEST to honour, ordinary mail to leave
alone (NOT_REQUEST), or AUTOMATED mail (auto-replies, delivery reports, our own messages) that
is never a request and is never answered, so that two machines cannot answer each other in a
loop (RFC 3834). It works on a parsed `Headers` value and does no I/O.

`may_be_report` is the header-stage filter for delivery reports and complaints: only its
candidates have their bodies fetched and read by `mailer.bounces.reports`; ordinary mail is left
unread.
"""

from __future__ import annotations

import enum
import re
import unicodedata

from mailer.inbox.headers import Headers

__all__ = ["Verdict", "classify", "is_request_subject", "may_be_report", "normalise_subject"]


class Verdict(enum.Enum):
    REQUEST = "request"
    NOT_REQUEST = "not_request"
    AUTOMATED = "automated"


# Reply and forward prefixes in the languages mail clients localise them into, with the
# counted forms "Re[2]:", "Re(2):", "Re^2:" and a space before the colon ("RE :").
_PREFIX = re.compile(
    r"""(?:re|fwd?|aw|wg|sv|vs|antw|réf|ref|tr|rv|odp|回复|回覆|答复|转发|轉寄)
        \s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]""",
    re.VERBOSE,
)
# A tag a gateway puts in front of the subject: "[EXTERNAL] ...", "[SPAM?] ...".
_TAG = re.compile(r"\[[^\[\]]{1,40}\]")

_PRECEDENCE_AUTOMATED = frozenset({"bulk", "junk", "list", "auto_reply"})


def _is_edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in ("P", "S")


def _strip_edges(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return text[start:end]


def _skip_leading(text: str, start: int) -> int:
    # Leading whitespace and punctuation, but not "[" which may open a gateway tag.
    while start < len(text) and _is_edge(text[start]) and text[start] != "[":
        start += 1
    return start


def normalise_subject(subject: str) -> str:
    """The subject as compared: casefolded, reply/forward prefixes and gateway tags removed
    in any number and mix ("Re: Fwd: AW: [EXTERNAL] x!" gives "x"), surrounding whitespace
    and punctuation stripped, inner whitespace collapsed."""
    text = unicodedata.normalize("NFKC", subject).casefold()
    # Positions rather than slices, so a subject of a million "Re:" stays linear.
    start = _skip_leading(text, 0)
    while match := (_PREFIX.match(text, start) or _TAG.match(text, start)):
        start = _skip_leading(text, match.end())
    return " ".join(_strip_edges(text[start:]).split())


def is_request_subject(subject: str, configured: str) -> bool:
    """Whether `subject` asks to unsubscribe: it reads as the configured subject, or just
    "unsubscribe", once prefixes, case and punctuation are set aside."""
    normalised = normalise_subject(subject)
    return normalised != "" and normalised in (normalise_subject(configured), "unsubscribe")


def _keyword(value: str) -> str:
    """The keyword of a header value, without parameters or comments:
    "auto-replied; owner-email=x" and "Auto-Replied (vacation)" both give "auto-replied"."""
    return re.split(r"[;(\s]", value.strip(), maxsplit=1)[0].casefold()


def is_automated(headers: Headers, *, own_addresses: frozenset[str]) -> bool:
    """Whether the message was sent by a machine rather than a person writing to us."""
    # RFC 3834 §5: any Auto-Submitted value other than "no" marks automatic mail.
    if headers.auto_submitted is not None and _keyword(headers.auto_submitted) != "no":
        return True
    # Vacation responders that predate RFC 3834 mark their replies with these instead.
    if headers.has_autoreply_header:
        return True
    # RFC 3834 §3.1.8: Precedence bulk/junk/list discourages responses; the field itself is
    # non-standard (RFC 2076 §3.9), "auto_reply" is what some responders write.
    if headers.precedence is not None and _keyword(headers.precedence) in _PRECEDENCE_AUTOMATED:
        return True
    # RFC 6522: delivery and disposition notifications (RFC 3464, RFC 8098) are
    # multipart/report.
    if headers.content_type == "multipart/report":
        return True
    # Our own mail coming back (a copy, a loop through a forwarder) is never a request.
    own = {address.lower() for address in own_addresses}
    return headers.from_address is not None and headers.from_address.lower() in own


def classify(
    headers: Headers, *, configured_subject: str, own_addresses: frozenset[str]
) -> Verdict:
    """AUTOMATED before anything else; then REQUEST if the subject asks, else NOT_REQUEST.

    A message without a From is not automated for that reason alone: it is just
    unidentifiable, which matching deals with.
    """
    if is_automated(headers, own_addresses=own_addresses):
        return Verdict.AUTOMATED
    if is_request_subject(headers.subject, configured_subject):
        return Verdict.REQUEST
    return Verdict.NOT_REQUEST


# The local parts delivery reports come from (RFC 5321 §4.5.5 asks for a null reverse-path;
# the From is conventionally one of these).
_REPORT_SENDERS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_REPORT_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery (?:status )?notification|delivery (?:has )?failed|"
    r"delivery failure|failure notice|returned mail|mail delivery (?:failed|system)|"
    r"could not be delivered|nondeliverable|non-delivery|abuse report|complaint",
    re.IGNORECASE)
_NULL_RETURN_PATH = re.compile(rb"^return-path:[ \t]*<[ \t]*>", re.IGNORECASE | re.MULTILINE)
_FAILED_RECIPIENTS = re.compile(rb"^x-failed-recipients:", re.IGNORECASE | re.MULTILINE)


def may_be_report(headers: Headers, header_block: bytes) -> bool:
    """Whether the header block says the message may be a delivery report or a complaint.

    Generous on purpose (the body decides, `mailer.bounces.reports`), but ordinary mail from a
    person, with a Return-Path and none of these marks, is never a candidate.
    """
    if headers.content_type == "multipart/report":  # RFC 6522: DSN (RFC 3464), ARF (RFC 5965)
        return True
    if _NULL_RETURN_PATH.search(header_block) or _FAILED_RECIPIENTS.search(header_block):
        return True
    sender = (headers.from_address or "").partition("@")[0].casefold()
    if sender in _REPORT_SENDERS:
        return True
    return bool(_REPORT_SUBJECT.search(headers.subject))
