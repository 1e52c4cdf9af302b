"""Spotting a request to opt back in, so it is never taken for another opt-out; pure.

A customer who changed their mind usually answers the confirmation we sent ("Re: Re:
Unsubscribe special offers": the subject still reads as a request) or writes "please turn the
offers back on". Neither may be honoured as an opt-out, and neither may opt anyone in by itself
(a From address can be forged): the message goes to the review queue marked "asks to opt back
in", where a person records the opt-in with the message as the evidence.

`opt_back_in_reason` decides from what the caller already has: the Message-IDs the message
threads to (In-Reply-To and References, RFC 5322 §3.6.4), which of those are confirmations we
sent, and whether the text the sender wrote themselves asks (`asks_to_opt_back_in`; quoted
text is cut off first, so the confirmation's own "Changed your mind?" in a quote never
counts).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable

# The review item's mark (`store.inbox.ReviewItem.marked`); the reason a person reads starts
# with "asks to opt back in".
OPT_BACK_IN = "opt back in"

# Phrases of someone asking for mail again, on casefolded text with whitespace collapsed.
# Generous on purpose: a false match costs a person's look at the review queue, a missed one
# opts out someone who asked for the opposite. "not" in front does not undo a phrase (a person
# decides either way). Bounded repeats only, so the search stays linear in the text.
_PHRASES = re.compile(
    r"""\b(?:
        opt(?:\s+me|\s+us)?[\s-]*back[\s-]*in
      | opt[\s-]*in\s+again
      | re-?subscrib(?:e|ing)
      | subscribe\s+(?:me\s+)?(?:again|back)
      | sign\s+(?:me\s+)?(?:back\s+)?up\s+again
      | (?:turn|switch|put)\s+(?:\S+\s+){0,5}?back\s+on
      | (?:turn|switch)\s+(?:\S+\s+){0,5}?on\s+again
      | back\s+on\s+(?:the\s+|your\s+)?(?:mailing\s+)?list
      | (?:start|resume)\s+(?:sending|emailing)
      | changed?\s+my\s+mind
      | (?:undo|cancel|reverse)\s+(?:my|the|this)\s+(?:unsubscribe|unsubscription|opt[\s-]*out)
    )\b""",
    re.VERBOSE,
)
# Longest text read: a person's own request is short; a long body is cut, never scanned whole.
_MAX_CHARS = 20_000


def _plain(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text[:_MAX_CHARS]).casefold()
    return " ".join(folded.split())


def asks_to_opt_back_in(own_text: str) -> bool:
    """Whether the sender's own words ask for mail again (resubscribe, turn back on, changed
    my mind, ...)."""
    return _PHRASES.search(_plain(own_text)) is not None


def threads_to(thread_ids: Iterable[str], ours: Collection[str]) -> bool:
    """Whether any Message-ID the message answers is one of `ours` (compared exactly, as
    RFC 5322 §3.6.4 ids are; angle brackets included)."""
    return any(i in ours for i in thread_ids)


def opt_back_in_reason(thread_ids: Iterable[str], confirmation_ids: Collection[str],
                       asks_in_words: bool) -> str | None:
    """The review reason when this message asks to opt back in, else None: it answers one of
    our confirmations, or its sender's words ask (`asks_to_opt_back_in`)."""
    if threads_to(thread_ids, confirmation_ids):
        return "asks to opt back in: a reply to our confirmation"
    if asks_in_words:
        return "asks to opt back in: the message asks for emails again"
    return None
