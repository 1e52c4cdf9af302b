"""Deciding which customers an unsubscribe request is from.

This module owns the two pure halves of matching; the database lookup between them belongs to
the caller:

    extract_clues(message)  -> Clues     addresses, name keys and company keys in the message
    (caller)                -> Lookup    which of those clues exist, and for which customers
    decide(clues, lookup)   -> Decision  who is opted out, or why a person must review it

`decide` goes from the most certain clue to the least and stops at the first level that
identifies someone: addresses, then names, then companies. A name or company that fits more
than one customer sends the message to review rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mailer.inbox.body import ParsedMessage
from mailer.names import normalise_company, normalise_name

__all__ = ["Clues", "Decision", "Lookup", "decide", "extract_clues"]

MAX_NAME_KEYS = 200
MAX_COMPANY_KEYS = 100
MAX_BODY_ADDRESSES = 50
# Only the start of a long body is read for clues: people put their details near the top.
_MAX_CLUE_CHARS = 100_000
_MAX_LINES = 200
_MAX_LINE_CHARS = 300


@dataclass(frozen=True)
class Clues:
    """Everything in a message that could identify a customer, as lookup keys."""

    from_address: str | None
    body_addresses: tuple[str, ...]
    name_keys: tuple[str, ...]
    company_keys: tuple[str, ...]


@dataclass(frozen=True)
class Lookup:
    """What the caller found in the database for each clue (only clues that exist)."""

    by_address: Mapping[str, int]
    by_name: Mapping[str, tuple[int, ...]]
    by_company: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class Decision:
    """Who to opt out (sorted ids), by which kind of clue, or why a person must look."""

    customer_ids: tuple[int, ...]
    method: str
    review_reason: str | None


# --- extraction ----------------------------------------------------------------------------

# A practical addr-spec (RFC 5322 §3.4.1 dot-atom form, which is what people type). Text is
# first cut into runs of the characters such an address can hold, and each run is matched
# whole, which keeps the work linear in the length of the text.
_ADDRESS_RUN_SEPARATOR = re.compile(r"[^\w.%+@-]+")
_ADDRESS = re.compile(r"[\w%+-]+(?:\.[\w%+-]+)*@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,63}")
# RFC 5321 §4.5.3.1.3: a path is at most 256 octets, so an address is shorter.
_MAX_ADDRESS_CHARS = 254

# Lead-ins that come before a name on the same line: "Name: Jo Bloggs", "Regards, Jo".
_NAME_LEAD_IN = re.compile(
    r"""^(?:name|full\s+name|account\s+name|my\s+name\s+is|my\s+name's|i\s+am|i'm|this\s+is
        |(?:kind\s+|best\s+|warm\s+)?regards|thanks|thank\s+you|many\s+thanks|cheers
        |best\s+wishes|best|sincerely|yours\s+(?:sincerely|faithfully|truly)|from)
        \b\s*[:,.\-–]?\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_COMPANY_LEAD_IN = re.compile(
    r"\b(?:company(?:\s+name)?\s*:|on\s+behalf\s+of\b)\s*(.+)$", re.IGNORECASE
)
# Whole lines that are a greeting, a sign-off or a bare request: too common to be a company.
_NOT_A_COMPANY = frozenset(
    {
        "hi", "hello", "hey", "dear", "dear sir", "dear sir or madam", "to whom it may concern",
        "thanks", "thank you", "many thanks", "regards", "kind regards", "best regards",
        "best", "cheers", "sincerely", "yours sincerely", "yours faithfully", "please",
        "unsubscribe", "unsubscribe me", "please unsubscribe me", "stop", "remove", "yes",
        "no", "ok", "sent from my iphone", "sent from my android",
    }
)  # fmt: skip


def extract_clues(message: ParsedMessage, *, own_addresses: frozenset[str]) -> Clues:
    """Collect the lookup keys in a message: its From address, addresses written in the
    sender's own text (not our own), and bounded sets of candidate name and company keys."""
    own = {address.lower() for address in own_addresses}
    text = message.own_text[:_MAX_CLUE_CHARS]
    lines = _lines(text)
    body_addresses = _unique((a for a in _addresses(text) if a not in own), MAX_BODY_ADDRESSES)
    return Clues(
        from_address=message.headers.from_address,
        body_addresses=body_addresses,
        name_keys=_name_keys(message.headers.from_name, lines),
        company_keys=_company_keys(lines),
    )


def _lines(text: str) -> list[str]:
    lines = (line.strip()[:_MAX_LINE_CHARS] for line in text.splitlines())
    return [line for line in lines if line][:_MAX_LINES]


def _addresses(text: str) -> Iterable[str]:
    """Addresses in `text`, lower-cased; "mailto:" and trailing punctuation fall away."""
    for run in _ADDRESS_RUN_SEPARATOR.split(text):
        candidate = run.strip(".-")
        if len(candidate) <= _MAX_ADDRESS_CHARS and _ADDRESS.fullmatch(candidate):
            yield candidate.lower()


def _unique(keys: Iterable[str], limit: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for key in keys:
        if key and key not in seen:
            seen[key] = None
            if len(seen) >= limit:
                break
    return tuple(seen)


def _without_lead_in(line: str) -> str:
    # Repeated, for "Thanks, my name is Jo Bloggs".
    while (match := _NAME_LEAD_IN.match(line)) and match.end() > 0:
        line = line[match.end() :]
    return line


def _name_keys(from_name: str, lines: list[str]) -> tuple[str, ...]:
    def candidates() -> Iterable[str]:
        # A display name that is itself an address says nothing about the name.
        if "@" not in from_name:
            yield normalise_name(from_name)
        cleaned = [_without_lead_in(line) for line in lines]
        for line in cleaned:
            key = normalise_name(line)
            if 2 <= len(key.split()) <= 5:
                yield key
        for line in cleaned:
            # Commas separate phrases here rather than mark "Surname, Forename".
            words = normalise_name(line.replace(",", " ")).split()
            for size in (2, 3, 4):
                for start in range(len(words) - size + 1):
                    yield normalise_name(" ".join(words[start : start + size]))

    return _unique((k for k in candidates() if len(k.split()) >= 2), MAX_NAME_KEYS)


def _company_keys(lines: list[str]) -> tuple[str, ...]:
    def candidates() -> Iterable[str]:
        for line in lines:
            if match := _COMPANY_LEAD_IN.search(line):
                rest = match.group(1)
                yield normalise_company(rest)
                yield normalise_company(re.split(r"[,;(]| - ", rest, maxsplit=1)[0])
        for line in lines:
            key = normalise_company(line)
            if 1 <= len(key.split()) <= 6 and key not in _NOT_A_COMPANY:
                yield key

    return _unique((k for k in candidates() if k and len(k.split()) <= 6), MAX_COMPANY_KEYS)


# --- decision ------------------------------------------------------------------------------


def decide(clues: Clues, lookup: Lookup) -> Decision:
    """Who the request is from; see the module docstring for the order of evidence."""
    addresses = [a for a in (clues.from_address, *clues.body_addresses) if a is not None]
    found = {lookup.by_address[a] for a in addresses if a in lookup.by_address}
    if found:
        from_matched = clues.from_address is not None and clues.from_address in lookup.by_address
        method = "from_address" if from_matched else "body_address"
        return Decision(customer_ids=tuple(sorted(found)), method=method, review_reason=None)
    for method, keys, table in (
        ("name", clues.name_keys, lookup.by_name),
        ("company", clues.company_keys, lookup.by_company),
    ):
        decision = _decide_by_keys(method, keys, table)
        if decision is not None:
            return decision
    return Decision(
        customer_ids=(),
        method="none",
        review_reason="no customer matches the sender, addresses or names",
    )


def _decide_by_keys(
    method: str, keys: tuple[str, ...], table: Mapping[str, tuple[int, ...]]
) -> Decision | None:
    """Honour every key that fits exactly one customer, unless some key fits several.

    A key inside a longer key that also matched is set aside: in "Mary Jane Smith" the
    customer is Mary Jane Smith, not a different customer called Jane Smith.
    """
    matched = {key: frozenset(table[key]) for key in keys if table.get(key)}
    if not matched:
        return None
    kept = [key for key in dict.fromkeys(keys) if key in matched]
    kept = [key for key in kept if not any(_within(key, other) for other in kept)]
    for key in kept:
        if len(matched[key]) > 1:
            return Decision(
                customer_ids=(),
                method=method,
                review_reason=f"{method} '{key}' matches {len(matched[key])} customers",
            )
    ids = {customer for key in kept for customer in matched[key]}
    return Decision(customer_ids=tuple(sorted(ids)), method=method, review_reason=None)


def _within(key: str, other: str) -> bool:
    """Whether `key` is a shorter run of whole words inside `other`."""
    return key != other and f" {key} " in f" {other} "
