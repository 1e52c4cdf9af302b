"""Words for what people read: a count with its noun in the right number.

One helper for every page and command line, so "1 customers are opted in" cannot come back:
`plural(1, "customer")` is "1 customer", `plural(2, "customer")` "2 customers", and an
irregular noun names its plural (`plural(3, "person", "people")`); `noun` gives the word
alone for a count shown apart from it.
"""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str = "") -> str:
    """`count` and the noun that goes with it: "1 customer", "0 customers", "2 replies"."""
    return f"{count} {noun(count, singular, plural_form)}"


def noun(count: int, singular: str, plural_form: str = "") -> str:
    """The noun alone, in the number `count` needs (where the count is shown apart)."""
    if count == 1:
        return singular
    return plural_form or _regular_plural(singular)


def _regular_plural(noun: str) -> str:
    # English regular plurals on the last word ("bad row" -> "bad rows"); an irregular noun
    # passes its own plural form.
    head, _, last = noun.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last
