"""Does a request also ask us to delete the sender's data? (UK GDPR art. 17.)

Pure: subject and the sender's own text in, a yes or no out. A request that asks for erasure
is still honoured as an opt-out where it is one, and also goes to review marked "asks for
erasure": mail never erases anything by itself, since a From address can be forged and
identity must be checked by a person first (`mailer customers erase` after that).
"""

from __future__ import annotations

import re
import unicodedata

REVIEW_MARK = "asks for erasure"

# Phrasings seen in such requests; word-bounded so "erased" in a quote or "gdprx" do not count.
_ASKS = re.compile(
    r"""\b(?:
        (?:delete|remove|erase|wipe|destroy)\s+(?:all\s+)?(?:of\s+)?my\s+
            (?:personal\s+)?(?:data|details|information|info|record|records|account)
      | erase | erasure
      | right\s+to\s+(?:be\s+forgotten|erasure)
      | (?:uk[\s-]?)?gdpr
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)


def normalise(text: str) -> str:
    """NFKC (full-width and styled letters read as plain), whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def asks_for_erasure(subject: str, text: str) -> bool:
    """Whether the subject or the sender's own text asks to delete their data."""
    return any(_ASKS.search(normalise(part)) for part in (subject, text) if part)
