"""The SPF check (RFC 7208) of the envelope domain: one record, that parses, within ten DNS
look-ups, covering the SMTP relay's addresses.

`gather_spf` asks DNS, following include: and redirect= the way a receiver would, and
collects the networks the record allows; `judge_spf` decides on those facts alone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mailer.doctor.records import RecordError, SpfTerm, parse_spf, spf_network, spf_records
from mailer.doctor.report import Check, failed, passed, warn
from mailer.doctor.resolver import Resolver

# RFC 7208 §4.6.4: more than 10 terms that cost a query is a permerror.
MAX_LOOKUPS = 10
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class SpfFacts:
    domain: str
    records: list[str]
    error: str = ""  # why the record (or one it includes) cannot be used
    lookups: int = 0
    networks: list[Network] = field(default_factory=list)


async def gather_spf(resolver: Resolver, domain: str) -> SpfFacts:
    """The SPF record(s) of `domain` and, when there is exactly one, what it allows."""
    facts = SpfFacts(domain=domain, records=spf_records(await resolver.txt(domain)))
    if len(facts.records) == 1:
        try:
            await _follow(resolver, domain, parse_spf(facts.records[0]), facts, seen={domain})
        except RecordError as exc:
            facts.error = f"{domain}: {exc}"
    return facts


async def _follow(resolver: Resolver, domain: str, terms: list[SpfTerm], facts: SpfFacts,
                  seen: set[str]) -> None:
    for term in terms:
        if term.costs_lookup:
            facts.lookups += 1
        if facts.lookups > MAX_LOOKUPS:
            return  # a receiver stops here with a permerror; so does the count
        target = term.value or domain
        if "%" in target:
            continue  # a macro (RFC 7208 §7) depends on the message: not followed
        if term.name in ("ip4", "ip6"):
            facts.networks.append(spf_network(term))
        elif term.name == "a":
            facts.networks.extend(_networks(await resolver.addresses(target), term.cidr))
        elif term.name == "mx":
            for _, exchange in await resolver.mx(target):
                facts.networks.extend(_networks(await resolver.addresses(exchange), term.cidr))
        elif term.name in ("include", "redirect"):
            if target in seen:
                raise RecordError(f"{term.name} {target} loops back to a record already read")
            records = spf_records(await resolver.txt(target))
            if len(records) != 1:
                # RFC 7208 §5.2 and §6.1: a missing target is a permerror.
                raise RecordError(f"{term.name} {target}: {len(records)} SPF records there")
            try:
                await _follow(resolver, target, parse_spf(records[0]), facts, seen | {target})
            except RecordError as exc:
                raise RecordError(f"{term.name} {target}: {exc}") from None


def _networks(addresses: list[str], cidr: str) -> list[Network]:
    """The networks `a/24` or `mx//64` names around each address (RFC 7208 §5.6)."""
    v4, _, v6 = cidr.partition("//")
    v4 = v4.lstrip("/")
    networks: list[Network] = []
    for address in addresses:
        ip = ipaddress.ip_address(address)
        bits = (v4 if ip.version == 4 else v6) or str(ip.max_prefixlen)
        networks.append(ipaddress.ip_network(f"{address}/{bits}", strict=False))
    return networks


def suggested_record(smtp_host: str, smtp_addresses: list[str]) -> str:
    """An SPF record allowing the relay: its addresses, else its name."""
    terms = [f"ip{ipaddress.ip_address(a).version}:{a}" for a in smtp_addresses]
    return f"v=spf1 {' '.join(terms or [f'a:{smtp_host}'])} ~all"


def judge_spf(facts: SpfFacts, smtp_host: str, smtp_addresses: list[str]) -> Check:
    domain = facts.domain
    where = f"publish {domain}. IN TXT"
    if not facts.records:
        return failed("dns", "SPF", f"{domain}: no SPF record",
                      f'{where} "{suggested_record(smtp_host, smtp_addresses)}"')
    if len(facts.records) > 1:
        merged = _merged(facts.records)
        return failed("dns", "SPF",
                      f"{domain}: {len(facts.records)} SPF records (RFC 7208 §4.5: receivers "
                      f"treat that as a permanent error)",
                      f'delete all but one, and make the one left "{merged}"')
    record = facts.records[0]
    if facts.error:
        return failed("dns", "SPF", f'{domain}: "{record}": {facts.error}',
                      f'{where} "{suggested_record(smtp_host, smtp_addresses)}" in its place')
    if any(w.lower() in ("all", "+all") for w in record.split()[1:]):
        # "+all" passes every server on the internet: receivers treat it as no SPF at all.
        return failed("dns", "SPF", f'{domain}: "{record}" allows any server to send (+all)',
                      f'{where} "{suggested_record(smtp_host, smtp_addresses)}" in its place')
    if facts.lookups > MAX_LOOKUPS:
        return failed("dns", "SPF",
                      f'{domain}: "{record}" needs more than {MAX_LOOKUPS} DNS look-ups '
                      f"(RFC 7208 §4.6.4: receivers treat that as a permanent error)",
                      "replace include:, a: and mx: terms by the ip4:/ip6: ranges they stand "
                      f"for until at most {MAX_LOOKUPS} remain, e.g. "
                      f'{where} "{suggested_record(smtp_host, smtp_addresses)}"')
    missing = [a for a in smtp_addresses
               if not any(ipaddress.ip_address(a) in n for n in facts.networks)]
    if missing:
        terms = " ".join(f"ip{ipaddress.ip_address(a).version}:{a}" for a in missing)
        return warn("dns", "SPF",
                    f'{domain}: "{record}" does not cover {", ".join(missing)} '
                    f"([smtp] host {smtp_host})",
                    f'add {terms} to the record (unless the relay sends from other addresses)')
    covers = f", covers {', '.join(smtp_addresses)}" if smtp_addresses else ""
    return passed("dns", "SPF", f'{domain}: "{record}" ({facts.lookups} of {MAX_LOOKUPS} '
                                f"look-ups{covers})")


def _merged(records: list[str]) -> str:
    """One record with the terms of all of them, `all` last."""
    terms: list[str] = []
    ending = "~all"
    for record in records:
        for word in record.split()[1:]:
            if word.lower().lstrip("+?~-") == "all":
                ending = word
            elif word not in terms:
                terms.append(word)
    return " ".join(["v=spf1", *terms, ending])
