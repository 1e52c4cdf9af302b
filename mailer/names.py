"""Matching keys for people's and companies' names.

This module owns the one definition of "the same name": `normalise_name` and
`normalise_company` turn what a person typed into a key that is stored when customers are
imported and computed again when an email is matched, so both sides must agree. The keys are
for equality only; they are never shown to anyone.

Both functions are pure and total: any string in, a (possibly empty) key out, and applying
them twice changes nothing.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["LEGAL_SUFFIXES", "TITLES", "fold_words", "normalise_company", "normalise_name"]

TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "mx", "sir", "prof"})

LEGAL_SUFFIXES = frozenset({"ltd", "limited", "plc", "llp", "inc", "llc", "gmbh", "co"})

# Apostrophes sit inside names ("O'Brien", "D’Arcy"): removing them keeps the name one word.
_DELETED = frozenset("'’‘ʼ`´")
_ASCII_DELETED = re.compile("['`]")
_ASCII_WORD = re.compile("[A-Za-z0-9]+")


def _fold(text: str) -> str:
    """Casefold and strip accents: NFKD, then drop nonspacing marks.

    Runs twice because casefolding can produce characters that decompose further
    (and decomposing can expose characters that casefold further).
    """
    if text.isascii():  # the common case, and there all of this is lower()
        return text.lower()
    for _ in range(2):
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Me"))
        text = text.casefold()
    return unicodedata.normalize("NFKD", text)


def _is_word_char(char: str) -> bool:
    # Letters, digits and spacing marks (which carry vowels in Indic scripts).
    return unicodedata.category(char)[0] in ("L", "N") or unicodedata.category(char) == "Mc"


def _words(text: str) -> list[str]:
    """Split folded text into words: apostrophes vanish, any other non-word character
    (hyphens, dots, commas, symbols, whitespace) separates words."""
    if text.isascii():  # the same split, at the speed of a regular expression
        return _ASCII_WORD.findall(_ASCII_DELETED.sub("", text))
    cleaned = "".join("" if c in _DELETED else (c if _is_word_char(c) else " ") for c in text)
    return cleaned.split()


def fold_words(text: str) -> list[str]:
    """The words of `text` as both keys spell them: casefolded, accents stripped,
    apostrophes dropped, split at anything else that is not a letter or digit. A key made by
    joining such words with spaces is unchanged by `normalise_name`, bar titles."""
    return _words(_fold(text))


def normalise_name(text: str) -> str:
    """Return the matching key for a person's name ("" if nothing is left).

    "Dr. SMITH,  José" and "jose smith" both give "jose smith": casefolded, accents
    stripped, punctuation dropped (hyphens separate words), titles dropped, and
    "Surname, Forename" (exactly one comma) turned round.
    """
    folded = _fold(text)
    if folded.count(",") == 1:
        surname, forename = folded.split(",")
        folded = f"{forename} {surname}"
    return " ".join(w for w in _words(folded) if w not in TITLES)


def normalise_company(text: str) -> str:
    """Return the matching key for a company name ("" if nothing is left).

    "Acme Widgets Ltd." gives "acme widgets": casefolded, accents stripped, punctuation
    dropped, "&" read as "and", and trailing legal suffixes removed (repeatedly, so
    "Acme Co. Ltd" gives "acme"), always keeping at least one word.
    """
    words = _words(_fold(text).replace("&", " and "))
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)
