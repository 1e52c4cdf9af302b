"""The DNS records the doctor reads, parsed: SPF (RFC 7208), DMARC (RFC 7489), DKIM keys
(RFC 6376 §3.6.1), and the alignment rule DMARC applies to them.

Pure: text in, values out; nothing here asks DNS. A record that cannot be parsed raises
`RecordError` (a ValueError) whose message says what is wrong in one line, so the check that
read it can show it. These parse what strangers publish (a provider's SPF include), so
property tests feed them arbitrary text.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "LOOKUP_MECHANISMS",
    "DkimKey",
    "Dmarc",
    "RecordError",
    "SpfTerm",
    "aligned",
    "dkim_keys",
    "dmarc_records",
    "organizational_domain",
    "parse_dkim_key",
    "parse_dmarc",
    "parse_spf",
    "spf_records",
]


class RecordError(ValueError):
    """A record that does not parse; str() is one line saying why."""


# RFC 7208 §4.6.4: these terms cost a DNS query each, and at most 10 are allowed.
LOOKUP_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_NEEDS_VALUE = frozenset({"include", "ip4", "ip6", "exists"})
_SPF_VERSION = re.compile(r"v=spf1(?:\s|$)", re.IGNORECASE)
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
# RFC 7208 §5.6 dual-cidr-length: "/24", "//64" or "/24//64" after a (name:)domain.
_MECHANISM = re.compile(r"([+?~-]?)([A-Za-z][A-Za-z0-9_.-]*)(?::(.*?))?((?:/\d{1,3})?(?://\d{1,3})?)")


@dataclass(frozen=True)
class SpfTerm:
    """One term of an SPF record: a mechanism (`qualifier` + `name`) or a modifier."""

    name: str  # lower-cased: "ip4", "include", "redirect", ...
    value: str = ""  # the domain or network after ":" or "="
    qualifier: str = "+"
    cidr: str = ""  # "/24" of "a:/24"
    modifier: bool = False

    @property
    def costs_lookup(self) -> bool:
        return self.name in LOOKUP_MECHANISMS


def spf_records(texts: list[str]) -> list[str]:
    """The SPF records among a name's TXT strings (RFC 7208 §4.5: "v=spf1" then a space)."""
    return [text for text in texts if _SPF_VERSION.match(text)]


def parse_spf(record: str) -> list[SpfTerm]:
    """The terms of an SPF record; RecordError for a term RFC 7208 §12 does not allow."""
    words = record.split()
    if not words or words[0].lower() != "v=spf1":
        raise RecordError('does not start with "v=spf1"')
    terms: list[SpfTerm] = []
    for word in words[1:]:
        modifier = _MODIFIER.fullmatch(word)
        if modifier is not None and ":" not in modifier.group(1):
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp") and not value:
                raise RecordError(f'"{_shown(word)}": {name}= needs a domain')
            terms.append(SpfTerm(name=name, value=value, modifier=True))
            continue
        mechanism = _MECHANISM.fullmatch(word)
        if mechanism is None or mechanism.group(2).lower() not in _MECHANISMS:
            raise RecordError(f'"{_shown(word)}" is not an SPF mechanism')
        qualifier, name, value, cidr = mechanism.groups()
        name = name.lower()
        if name in _NEEDS_VALUE and not value:
            raise RecordError(f'"{_shown(word)}": {name} needs a value')
        if name == "all" and (value is not None or cidr):
            raise RecordError(f'"{_shown(word)}": all takes no value')
        if name in ("ip4", "ip6"):
            _network(word, name, (value or "") + (cidr or ""))
        terms.append(SpfTerm(name=name, value=value or "", qualifier=qualifier or "+",
                             cidr=cidr or ""))
    redirects = [t for t in terms if t.name == "redirect"]
    if len(redirects) > 1:
        raise RecordError("more than one redirect= modifier")
    return terms


def _network(word: str, name: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise RecordError(f'"{_shown(word)}": not an {name} network') from None
    if (name == "ip4") != (network.version == 4):
        raise RecordError(f'"{_shown(word)}": not an {name} network')
    return network


def spf_network(term: SpfTerm) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network an ip4/ip6 term names (parse_spf has checked it)."""
    return _network(term.name, term.name, term.value + term.cidr)


# -- DMARC ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dmarc:
    policy: str  # none | quarantine | reject
    rua: tuple[str, ...]
    adkim: str  # r | s
    aspf: str
    record: str


def dmarc_records(texts: list[str]) -> list[str]:
    """The DMARC records among TXT strings (RFC 7489 §6.6.3: those starting v=DMARC1)."""
    return [t for t in texts if re.match(r"v\s*=\s*DMARC1\s*(;|$)", t)]


def _shown(text: str) -> str:
    """Published text as it can go into a one-line message: whitespace runs made one space,
    at most 60 characters."""
    one = " ".join(text.split())
    return one if len(one) <= 60 else one[:57] + "..."


def _tags(record: str) -> dict[str, str]:
    """RFC 6376 §3.2 tag=value list (DMARC uses the same syntax)."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name = name.strip()
        if not equals or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise RecordError(f'"{_shown(part)}" is not a tag=value')
        if name in tags:
            raise RecordError(f'tag "{_shown(name)}" appears twice')
        tags[name] = value.strip()
    return tags


def parse_dmarc(record: str) -> Dmarc:
    """A DMARC record; RecordError when it has no valid p= (RFC 7489 §6.3: required)."""
    tags = _tags(record)
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        given = _shown(tags.get("p", ""))
        raise RecordError(f'p= must be none, quarantine or reject, got "{given}"')
    alignment = {}
    for tag in ("adkim", "aspf"):
        mode = tags.get(tag, "r").lower()
        if mode not in ("r", "s"):
            raise RecordError(f'{tag}= must be r or s, got "{_shown(tags[tag])}"')
        alignment[tag] = mode
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    return Dmarc(policy=policy, rua=rua, adkim=alignment["adkim"], aspf=alignment["aspf"],
                 record=record)


# Second-level labels under which UK and a few other registries sell names (co.uk, org.uk):
# the doctor has no Public Suffix List, so relaxed alignment (RFC 7489 §3.2) uses this rule.
_SECOND_LEVEL = frozenset({"co", "org", "ac", "gov", "ltd", "plc", "me", "net", "nhs", "sch",
                           "com", "edu"})


def organizational_domain(domain: str) -> str:
    """The registered domain of `domain`: `imperial.co.uk` of `mail.imperial.co.uk`."""
    labels = domain.lower().rstrip(".").split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-keep:])


def aligned(from_domain: str, other: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict, the same name; relaxed, the same organizational domain."""
    a, b = from_domain.lower().rstrip("."), other.lower().rstrip(".")
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


# -- DKIM keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    algorithm: str  # k=: rsa | ed25519
    public_key: bytes  # p= decoded; empty: the key is revoked (RFC 6376 §3.6.1)


def dkim_keys(texts: list[str]) -> list[str]:
    """The TXT strings at a selector that may be keys (not every publisher writes v=)."""
    return [t for t in texts if "p=" in t]


def parse_dkim_key(record: str) -> DkimKey:
    tags = _tags(record)
    if "v" in tags and tags["v"] != "DKIM1":
        raise RecordError(f'v= must be DKIM1, got "{_shown(tags["v"])}"')
    if "p" not in tags:
        raise RecordError("no p= (public key) tag")
    try:
        key = base64.b64decode("".join(tags["p"].split()), validate=True)
    except (binascii.Error, ValueError):
        raise RecordError("p= is not base64") from None
    return DkimKey(algorithm=tags.get("k", "rsa").lower(), public_key=key)
