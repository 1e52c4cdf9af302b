"""Deciding which customers an unsubscribe request is from.

This module owns the two pure halves of matching; the database lookup between them is
`mailer.inbox.lookup`:

    extract_clues(message)  -> Clues     addresses, name keys and company keys in the message
    lookup.look_up(clues)   -> Lookup    which of those clues exist, and for which customers
    decide(clues, lookup)   -> Decision  who is opted out, or why a person must review it

`decide` goes from the most certain clue to the least and stops at the first level that
identifies someone: addresses, then names, then companies. A name or company that fits more
than one customer sends the message to review rather than guess.

Names and companies are read from the From display name, from lines of their own (after a
lead-in such as "Name:" or "Regards,"), after "company:" / "on behalf of", and inside
sentences (`mentions`). A key found inside a sentence carries what the text said about it: a
partial fit ("Mary Jane Smith" for Jane Smith), a mention that does not ask ("Jane Smith told
me to write"), or one the sentence speaks against ("my colleague Jane Smith still wants
offers") is a doubt, and `decide` sends a message to review when any key that fits a customer
at the deciding level is in doubt. A strong doubt (negation, keep, contrast, someone else's
name, a greeting) outweighs the same key written cleanly elsewhere; a weak one (partial, not
asked) does not. The rules themselves are in the `mentions` docstring.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mailer.inbox.body import ParsedMessage
from mailer.inbox.mentions import Mention, read_mentions
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
    # Keys (among the above) that must not opt anyone out, with the reason: see `mentions`.
    name_doubts: Mapping[str, str] = field(default_factory=dict)
    company_doubts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lookup:
    """What the caller found in the database for each clue (only clues that exist)."""

    by_address: Mapping[str, int]
    by_name: Mapping[str, tuple[int, ...]]
    by_company: Mapping[str, tuple[int, ...]]

    def customer_ids(self) -> list[int]:
        """Every customer some clue names, in id order: those `decide` weighs."""
        ids = set(self.by_address.values())
        for table in (self.by_name, self.by_company):
            for found in table.values():
                ids.update(found)
        return sorted(ids)


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
    paragraphs = _lines(text)
    lines = [line for line in paragraphs if line is not None]
    body_addresses = _unique((a for a in _addresses(text) if a not in own), MAX_BODY_ADDRESSES)
    name_keys, name_doubts = _keys_and_doubts(
        _name_keys(message.headers.from_name, lines),
        read_mentions(paragraphs, "name"),
        MAX_NAME_KEYS,
        lambda key: normalise_name(key) == key and len(key.split()) >= 2,
    )
    company_keys, company_doubts = _keys_and_doubts(
        _company_keys(lines), read_mentions(paragraphs, "company"), MAX_COMPANY_KEYS,
        lambda key: normalise_company(key) == key,
    )
    return Clues(
        from_address=message.headers.from_address,
        body_addresses=body_addresses,
        name_keys=name_keys,
        company_keys=company_keys,
        name_doubts=name_doubts,
        company_doubts=company_doubts,
    )


def _lines(text: str) -> list[str | None]:
    """The first non-blank lines, each trimmed and cut short; None where blank lines were."""
    out: list[str | None] = []
    taken = 0
    for raw in text.splitlines():
        line = raw.strip()[:_MAX_LINE_CHARS]
        if line:
            if taken == _MAX_LINES:
                break
            out.append(line)
            taken += 1
        elif out and out[-1] is not None:
            out.append(None)
    return out


def _keys_and_doubts(
    standalone: tuple[str, ...], mentions: Iterable[Mention], limit: int,
    is_key: Callable[[str], bool],
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The keys to look up (standalone ones first, at most `limit`) and the doubts on them.
    Only keys in their normal form (`is_key`) are kept: a stored key is always one, so any
    other could never fit a customer (a sentence reading "0 Mr" is not the name "0").

    Every mention is weighed, not only those of the keys kept, so a doubt written late in a
    long message still counts against a key found early.
    """
    order = dict.fromkeys(standalone)
    fits = set(standalone)
    strong: dict[str, str] = {}
    weak: dict[str, str] = {}
    for mention in mentions:
        order.setdefault(mention.key)
        if mention.doubt is None:
            fits.add(mention.key)
        else:
            (strong if mention.strong else weak).setdefault(mention.key, mention.doubt)
    keys = tuple(key for key in order if is_key(key))[:limit]
    doubts = {key: strong[key] for key in keys if key in strong}
    for key in keys:
        if key in weak and key not in fits and key not in doubts:
            doubts[key] = weak[key]
    return keys, doubts


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
        for line in lines:
            key = normalise_name(_without_lead_in(line))
            if 2 <= len(key.split()) <= 5:
                yield key

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
    for method, keys, table, doubts in (
        ("name", clues.name_keys, lookup.by_name, clues.name_doubts),
        ("company", clues.company_keys, lookup.by_company, clues.company_doubts),
    ):
        decision = _decide_by_keys(method, keys, table, doubts)
        if decision is not None:
            return decision
    return Decision(
        customer_ids=(),
        method="none",
        review_reason="no customer matches the sender, addresses or names",
    )


def _decide_by_keys(
    method: str,
    keys: tuple[str, ...],
    table: Mapping[str, tuple[int, ...]],
    doubts: Mapping[str, str],
) -> Decision | None:
    """Honour every key that fits exactly one customer, unless some key fits several or is
    in doubt.

    A key inside a longer key that also matched is set aside: in "Mary Jane Smith" the
    customer is Mary Jane Smith, not a different customer called Jane Smith.
    """
    matched = {key: frozenset(table[key]) for key in keys if table.get(key)}
    if not matched:
        return None
    kept = [key for key in dict.fromkeys(keys) if key in matched]
    kept = [key for key in kept if not any(_within(key, other) for other in kept)]
    for key in kept:
        if key in doubts:
            return Decision(
                customer_ids=(), method=method, review_reason=f"{method} '{key}' {doubts[key]}"
            )
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
