"""The evidence a consent change made on the web records (`web_evidence`): who asked (the
client address, after `[http] trusted_proxies`, and the user agent) and what they were shown
(`wording_version`: a hash of the text of the page's forms, so the record names the wording
the person chose from, and a later change of that wording shows as a new version). Pure.

The address and user agent are personal data kept only `[retention] web_evidence_days`; the
wording version is not, and stays with the event.
"""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser

from mailer.store.evidence import EventEvidence

# A user agent is a claim, not an identity, and can be any length: enough to tell browsers and
# mail providers apart, bounded so a request cannot put kilobytes into a permanent record.
MAX_USER_AGENT_CHARS = 256
# Hex digits of SHA-256 kept: 64 bits tell apart any number of wordings we will ever have.
WORDING_HEX_DIGITS = 16


class _FormText(HTMLParser):
    """The visible text inside every <form> (labels, hints, legends, buttons), in order.
    Attributes are left out, so a form's nonce and which boxes were ticked do not count."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.words: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.words.extend(data.split())


def choices_text(html: str) -> str:
    """The words of the page's forms, whitespace collapsed: what the person chose from."""
    parser = _FormText()
    parser.feed(html)
    parser.close()
    return " ".join(parser.words)


def wording_version(html: str) -> str:
    """A short hash of `choices_text(html)`; "" for a page without a form."""
    text = choices_text(html)
    if not text:
        return ""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:WORDING_HEX_DIGITS]


def bounded_user_agent(value: str) -> str:
    """The User-Agent on one line, printable characters only, at most MAX_USER_AGENT_CHARS."""
    printable = "".join(ch if ch.isprintable() else " " for ch in value)
    return " ".join(printable.split())[:MAX_USER_AGENT_CHARS]


def web_evidence(client_address: str, user_agent: str, wording: str = "") -> EventEvidence:
    return EventEvidence(client_address=client_address[:64],  # an IPv6 address is at most 45
                         user_agent=bounded_user_agent(user_agent), wording=wording)
