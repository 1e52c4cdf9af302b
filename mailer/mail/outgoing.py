"""Outgoing MIME: the bytes of confirmation replies and campaign messages.

Pure: values in, ``bytes`` out (CRLF line endings, RFC 5322 §2.1, ready for SMTP DATA), no
network and no database. (About 480 lines: the header-safety rules below are shared by
both kinds of message and belong next to the code that writes the headers.)

- ``build_confirmation``: the reply confirming an unsubscribe request, built with the stdlib
  ``EmailMessage``; it is a transactional auto-reply, so it carries ``Auto-Submitted`` and
  threading headers and no ``List-Unsubscribe``.
- ``CampaignMessageBuilder``: campaign messages, the fast path. Everything that is the same for
  every recipient (From, Date, MIME structure, the mailto opt-out) is formatted once per
  campaign; per recipient only To, Subject, Message-ID, the opt-out URL and the
  quoted-printable bodies are produced. ``EmailMessage`` manages about 760 messages a second;
  a campaign needs thousands. Its input is any ``RenderedBody`` (subject, text, html). Each
  message carries a ``Feedback-ID`` (campaign, kind, sender id) for providers' complaint
  feedback loops.
- ``message_id``: every Message-ID ``mailer`` sends, made in this one function. Never built
  from ids a forger could guess (a quoted Message-ID ties a bounce or complaint to a message we
  sent): keyed, an HMAC under the campaign secret of what the message is (so a retried send
  reuses it and receivers drop the duplicate), or random.

Header safety: names and subjects have control characters (CR and LF above all) replaced by a
space, so no value can start a header of its own; addresses, message ids and URLs that are not
plain after that raise ``HeaderInjection``.
"""

import binascii
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr, quote
from typing import Protocol
from urllib.parse import quote as url_quote

from mailer.errors import HeaderInjection

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r")


def crlf_lines(message: bytes) -> bytes:
    """`message` with every line ending in CRLF (a bare LF or CR made one), as it goes over
    SMTP (RFC 5321 §2.3.8) and as DKIM signs it (RFC 6376 §5.3). Messages we build already
    are, which three counts tell."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf:
        return message
    return _LINE_ENDINGS.sub(b"\r\n", message)


__all__ = [
    "CampaignHeaders",
    "CampaignMessageBuilder",
    "RenderedBody",
    "build_confirmation",
    "crlf_lines",
    "feedback_id",
    "message_id",
]

# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters and MUST be at most 998.
_MAX_LINE = 78
_HARD_MAX_LINE = 998
# RFC 2047 §2: an encoded-word is at most 75 characters.
_MAX_ENCODED_WORD = 75
_ENCODED_WORD_OVERHEAD = len("=?utf-8?b??=")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Controls and spaces alike collapse to one space: a header value is one line of text.
_CONTROL_OR_SPACE_RUN = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029\s]+")
# RFC 5322 §3.2.3 atext; a phrase made only of atoms needs no quoting.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ATOM_PHRASE = re.compile(f"{_ATEXT}(?: {_ATEXT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# A dot-atom addr-spec (RFC 5322 §3.4.1): the only form we put in headers.
_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*")
# RFC 5322 §3.6.4 msg-id, as seen in the wild: printable ASCII in angle brackets.
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
# A URL that is already plain for RFC 2369 §2 angle brackets: printable ASCII without space,
# '"', '<' or '>'. Such a URL is used as it is; anything else goes through ``_url``'s checks.
_PLAIN_URL = re.compile(r"[\x21\x23-\x3b\x3d\x3f-\x7e]+")
_KIND = re.compile(r"[A-Za-z0-9_.-]+")
# References kept in a reply: the thread root and the most recent ones (RFC 5322 §3.6.4 asks
# for all of them; a hostile request could send thousands).
_MAX_REFERENCES = 20
# Subjects and display names repeat across a campaign; format each distinct one once.
_SUBJECT_CACHE_SIZE = 4096
_NAME_CACHE_SIZE = 4096

# RFC 8058 §3.1: one-click unsubscribe is announced by exactly this header.
_ONE_CLICK = "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
_MAILTO_SUBJECT = "Unsubscribe%20special%20offers"

# The stdlib encodes long msg-ids in References and In-Reply-To as RFC 2047 words, which
# breaks threading; those two are set raw (pre-folded here) and must not be refolded.
_CONFIRMATION_POLICY = policy.SMTP.clone(refold_source="none")


@dataclass(frozen=True)
class CampaignHeaders:
    """What every message of one campaign shares.

    ``domain`` is the sender's domain; ``kind`` (e.g. ``offers``) is sent as
    ``X-Campaign-Kind`` and in the ``Feedback-ID``.
    """

    campaign_id: int
    sender: str
    domain: str
    unsubscribe_address: str
    kind: str


class RenderedBody(Protocol):
    """What a campaign message is built from: the rendered subject and bodies."""

    @property
    def subject(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def html(self) -> str | None: ...


@functools.lru_cache(maxsize=16)
def _plain_domain(domain: str) -> bool:
    return _DOMAIN.fullmatch(domain) is not None


@functools.lru_cache(maxsize=16)
def _keyed(secret: str) -> "hmac.HMAC":
    """The HMAC-SHA256 state keyed with ``secret``, set up once per campaign secret; each
    Message-ID works on a copy (the key schedule is half the cost of a fresh ``hmac.new``)."""
    return hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)


def message_id(domain: str, *, secret: str = "", what: str = "") -> str:
    """A Message-ID (RFC 5322 §3.6.4) ``<TOKEN@domain>`` that cannot be guessed.

    With ``secret`` and ``what`` (e.g. ``campaign:7:customer:42``) TOKEN is an HMAC-SHA256
    of ``what`` under ``secret`` (128 bits, hex): the same message always gets the same id, so
    a retried send reuses it, yet nobody without the secret can name another one. Without
    them TOKEN is 128 random bits (a test copy, a one-off). Record it where it can be looked
    up (the campaign ledger).
    """
    if not _plain_domain(domain):
        raise HeaderInjection(f"Message-ID domain {domain!r} is not a plain domain name")
    if secret and what:
        keyed = _keyed(secret).copy()
        keyed.update(f"message-id:{what}".encode())
        token = keyed.hexdigest()[:32]
    else:
        token = secrets.token_hex(16)
    return f"<{token}@{domain}>"


def feedback_id(headers: CampaignHeaders) -> str:
    """The ``Feedback-ID`` of a campaign's messages, ``c42:offers:imperialtelecom``: campaign,
    kind and sender id (the first label of the sender's domain), the ``a:b:c:SenderId`` form
    providers' feedback loops (Gmail's FBL) group complaints by; no customer in it."""
    sender_id = headers.domain.split(".", 1)[0].lower()
    return f"c{headers.campaign_id}:{headers.kind}:{sender_id}"


def _header_text(value: str) -> str:
    """One line of header text: controls (CR, LF, ...) and runs of any white space (no-break
    spaces too, which header parsers fold away) become one space."""
    return _CONTROL_OR_SPACE_RUN.sub(" ", value).strip()


def _addr_spec(address: str) -> str:
    """A plain ``local@domain`` with controls stripped and the domain IDNA-encoded."""
    if _ADDR_SPEC.fullmatch(address):
        # Already plain (ASCII only, no controls or spaces): cleaning would not change it.
        return address
    cleaned = _CONTROL.sub("", address).strip()
    local, at, domain = cleaned.rpartition("@")
    if at and not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise HeaderInjection(f"address {address!r} has an invalid domain") from exc
    addr = f"{local}@{domain}"
    if not _ADDR_SPEC.fullmatch(addr):
        raise HeaderInjection(f"address {address!r} is not a plain local@domain address")
    return addr


def _url(url: str) -> str:
    if _PLAIN_URL.fullmatch(url):
        # Already printable ASCII without space, quote or angle brackets: nothing to clean.
        return url
    cleaned = _CONTROL.sub("", url).strip()
    # RFC 2369 §2: the URL goes in angle brackets, so it cannot contain them or spaces.
    if not cleaned.isascii() or not cleaned.isprintable() or any(c in cleaned for c in ' <>"'):
        raise HeaderInjection(f"unsubscribe URL {url!r} is not a plain ASCII URL")
    return cleaned


def _msg_id(value: str) -> str | None:
    cleaned = value.strip()
    return cleaned if _MSG_ID.fullmatch(cleaned) else None


def _fold(tokens: Sequence[str], start: int) -> str:
    """Join tokens with single spaces, breaking before a token when the line would pass 78.

    RFC 5322 §2.2.3: a header is folded by inserting CRLF before whitespace; unfolding
    removes the CRLF and leaves the space, so the value reads back unchanged.
    """
    if not tokens:
        return ""
    lines = []
    line = tokens[0]
    width = start + len(line)
    for token in tokens[1:]:
        if width + 1 + len(token) <= _MAX_LINE:
            line = f"{line} {token}"
            width += 1 + len(token)
        else:
            lines.append(line)
            line = token
            width = 1 + len(token)
    lines.append(line)
    return "\r\n ".join(lines)


def _encoded_words(text: str, first_room: int) -> list[str]:
    """``text`` as RFC 2047 B-encoded words, each holding whole characters (RFC 2047 §5),
    the first fitting in ``first_room`` and the rest in 75 characters, so that every folded
    line stays within 78. Whitespace between adjacent encoded words is ignored when they are
    decoded (RFC 2047 §6.2), so spaces are kept inside the words."""
    words = []
    room = min(first_room, _MAX_ENCODED_WORD)
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > (room - _ENCODED_WORD_OVERHEAD) // 4 * 3 and chunk:
            words.append(f"=?utf-8?b?{binascii.b2a_base64(chunk, newline=False).decode()}?=")
            room = _MAX_ENCODED_WORD
            chunk = b""
        chunk += encoded
    if chunk:
        words.append(f"=?utf-8?b?{binascii.b2a_base64(chunk, newline=False).decode()}?=")
    return words


def _subject(subject: str) -> str:
    """The folded value of a Subject field (RFC 5322 §3.6.5, RFC 2047 when not ASCII)."""
    text = _header_text(subject)
    start = len("Subject: ")
    # Plain ASCII folds at its spaces, unless it holds something a reader would decode as an
    # encoded word ("=?") or a word too long for even the hard line limit.
    if text.isascii() and "=?" not in text:
        tokens = text.split(" ")
        if max(len(token) for token in tokens) + start <= _HARD_MAX_LINE:
            return _fold(tokens, start)
    return _fold(_encoded_words(text, _MAX_LINE - start), start)


def _phrase_tokens(field: str, name: str) -> list[str]:
    """The display name of a From or To field as the tokens ``_fold`` joins; none if empty.

    The name is an RFC 5322 §3.2.5 phrase: bare atoms, a quoted string, or RFC 2047 encoded
    words when it is not ASCII (or is too long to quote on one line).
    """
    display = _header_text(name)
    if not display:
        return []
    start = len(field) + 2
    if display.isascii() and "=?" not in display:
        if _ATOM_PHRASE.fullmatch(display):
            return display.split(" ")
        quoted = f'"{quote(display)}"'
        if start + len(quoted) <= _MAX_LINE:
            return [quoted]
    return _encoded_words(display, _MAX_LINE - start)


def _mailbox(field: str, name: str, address: str) -> str:
    """The value of a From or To field: ``name <address>``, or ``address`` without a name."""
    addr = _addr_spec(address)
    tokens = _phrase_tokens(field, name)
    if not tokens:
        return addr
    return _fold([*tokens, f"<{addr}>"], len(field) + 2)


def _folded_phrase(field: str, name: str) -> tuple[str, int] | None:
    """The display name folded as ``_mailbox`` folds it, and the width of its last line, so
    that an address can be appended later exactly as ``_fold`` would; None if no name."""
    tokens = _phrase_tokens(field, name)
    if not tokens:
        return None
    folded = _fold(tokens, len(field) + 2)
    if "\r\n" not in folded:
        return folded, len(field) + 2 + len(folded)
    # A continuation line starts with the folding space, counted in its width.
    return folded, len(folded.rpartition("\r\n")[2])


def _qp(text: str) -> bytes:
    """A body as quoted-printable UTF-8 with CRLF line endings.

    RFC 2045 §6.7: encoded lines are at most 76 characters, longer lines are broken with soft
    line breaks, '=' and trailing whitespace are encoded. Line endings are first made LF only
    so that binascii breaks lines consistently, then CRLF for SMTP (RFC 5321 §2.3.8).
    """
    lf = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    return binascii.b2a_qp(lf.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")


def _aware(date: datetime) -> datetime:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError(f"date {date.isoformat()} has no time zone")
    return date


class CampaignMessageBuilder:
    """Builds every recipient's message of one campaign from a per-campaign skeleton."""

    def __init__(self, headers: CampaignHeaders, *, date: datetime) -> None:
        if not _DOMAIN.fullmatch(headers.domain):
            raise ValueError(f"Message-ID domain {headers.domain!r} is not a plain domain name")
        if not _KIND.fullmatch(headers.kind):
            raise ValueError(f"campaign kind {headers.kind!r} is not a plain token")
        sender_name, sender_address = parseaddr(headers.sender)
        unsubscribe_address = _addr_spec(headers.unsubscribe_address)
        # RFC 6068 mailto URL; RFC 2369 §2: each List-Unsubscribe URL in angle brackets.
        mailto = f"<mailto:{url_quote(unsubscribe_address, safe='@')}?subject={_MAILTO_SUBJECT}>"
        self._list_unsubscribe = f"List-Unsubscribe: {mailto},\r\n "
        self._from = f"From: {_mailbox('From', sender_name, sender_address)}\r\n"
        # RFC 5322 §3.6.1 date, same for the whole run.
        self._date = f"Date: {format_datetime(_aware(date))}\r\n"
        self._campaign = (
            f"MIME-Version: 1.0\r\nX-Campaign: {headers.campaign_id}\r\n"
            f"X-Campaign-Kind: {headers.kind}\r\n"
            f"Feedback-ID: {feedback_id(headers)}\r\n"
        )
        # RFC 2046 §5.1.1: the boundary must not occur in any part. "=_" cannot occur in
        # quoted-printable text (RFC 2045 §6.7), and the random part keeps it unguessable.
        boundary = f"=_{secrets.token_hex(16)}"
        self._multipart_type = (
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode("ascii")
        )
        self._text_type = b"Content-Type: text/plain; charset=utf-8\r\n"
        self._html_type = b"Content-Type: text/html; charset=utf-8\r\n"
        self._qp_cte = b"Content-Transfer-Encoding: quoted-printable\r\n"
        self._delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        self._first_delimiter = f"--{boundary}\r\n".encode("ascii")
        self._close_delimiter = f"\r\n--{boundary}--\r\n".encode("ascii")
        self._subjects: dict[str, str] = {}
        self._names: dict[str, tuple[str, int] | None] = {}

    def _subject_line(self, subject: str) -> str:
        line = self._subjects.get(subject)
        if line is None:
            line = f"Subject: {_subject(subject)}\r\n"
            if len(self._subjects) < _SUBJECT_CACHE_SIZE:
                self._subjects[subject] = line
        return line

    def _to_line(self, name: str, address: str) -> str:
        """The To field, the display name formatted once per distinct name (``_mailbox``'s
        output exactly: the address is appended as ``_fold`` would append its last token)."""
        addr = _addr_spec(address)
        if name in self._names:
            phrase = self._names[name]
        else:
            phrase = _folded_phrase("To", name)
            if len(self._names) < _NAME_CACHE_SIZE:
                self._names[name] = phrase
        if phrase is None:
            return f"To: {addr}\r\n"
        folded, width = phrase
        angle = f"<{addr}>"
        separator = " " if width + 1 + len(angle) <= _MAX_LINE else "\r\n "
        return f"To: {folded}{separator}{angle}\r\n"

    def build(
        self,
        *,
        message_id: str,
        to_address: str,
        to_name: str,
        rendered: RenderedBody,
        unsubscribe_url: str,
        test: bool = False,
    ) -> bytes:
        """One recipient's message, CRLF line endings throughout; ``message_id`` comes from
        ``message_id()``.

        Raises HeaderInjection if the address, the id or the URL cannot be put into a header
        safely.
        """
        subject = f"[TEST] {rendered.subject}" if test else rendered.subject
        # Equivalent to ``_msg_id(message_id) != message_id``: the pattern admits no space.
        if not _MSG_ID.fullmatch(message_id):
            raise HeaderInjection(f"message id {message_id!r} is not <left@right>")
        head = "".join(
            (
                self._from,
                self._to_line(to_name, to_address),
                self._subject_line(subject),
                self._date,
                f"Message-ID: {message_id}\r\n",
                self._campaign,
                # RFC 2369 §3.2 mailto and URL; RFC 8058 §3.1 the URL must be HTTPS to be
                # used for one-click, which is the caller's choice of base URL.
                f"{self._list_unsubscribe}<{_url(unsubscribe_url)}>\r\n{_ONE_CLICK}\r\n",
                "X-Mailer-Test: yes\r\n" if test else "",
            )
        ).encode("ascii")
        if rendered.html is None:
            return b"".join((head, self._text_type, self._qp_cte, b"\r\n", _qp(rendered.text)))
        return b"".join(
            (
                head,
                self._multipart_type,
                b"\r\n",
                self._first_delimiter,
                self._text_type,
                self._qp_cte,
                b"\r\n",
                _qp(rendered.text),
                self._delimiter,
                self._html_type,
                self._qp_cte,
                b"\r\n",
                _qp(rendered.html),
                self._close_delimiter,
            )
        )


def build_confirmation(
    *,
    sender: str,
    to_address: str,
    to_name: str,
    subject: str,
    text: str,
    html: str,
    in_reply_to: str | None,
    references: Sequence[str],
    message_id: str,
    date: datetime,
) -> bytes:
    """The reply confirming an unsubscribe request: multipart/alternative, CRLF endings.

    ``in_reply_to`` is the request's Message-ID and ``references`` the request's References;
    malformed ids from the request are dropped. Raises HeaderInjection for an unusable
    address or our own malformed ``message_id``.
    """
    own_id = _msg_id(message_id)
    if own_id is None or "@" not in own_id:
        raise HeaderInjection(f"message id {message_id!r} is not <left@right>")
    sender_name, sender_address = parseaddr(sender)
    msg = EmailMessage(policy=_CONFIRMATION_POLICY)
    msg["From"] = Address(
        display_name=_header_text(sender_name), addr_spec=_addr_spec(sender_address)
    )
    msg["To"] = Address(display_name=_header_text(to_name), addr_spec=_addr_spec(to_address))
    msg["Subject"] = _header_text(subject)
    msg["Date"] = format_datetime(_aware(date))
    msg["Message-ID"] = own_id
    # RFC 5322 §3.6.4: In-Reply-To is the parent's Message-ID; References is the parent's
    # References followed by the parent's Message-ID.
    parent = _msg_id(in_reply_to) if in_reply_to is not None else None
    thread = [ref for ref in map(_msg_id, references) if ref is not None]
    if parent is not None:
        msg.set_raw("In-Reply-To", parent)
        if not thread or thread[-1] != parent:
            thread.append(parent)
    if len(thread) > _MAX_REFERENCES:
        thread = thread[:1] + thread[1 - _MAX_REFERENCES :]
    if thread:
        msg.set_raw("References", _fold(thread, len("References: ")))
    # RFC 3834 §5: an automatic response to a message; other responders must not answer it.
    msg["Auto-Submitted"] = "auto-replied"
    # The same for Exchange/Outlook out-of-office replies, which ignore Auto-Submitted.
    msg["X-Auto-Response-Suppress"] = "All"
    # Quoted-printable: long lines are wrapped at 76 (RFC 2045 §6.7).
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()
