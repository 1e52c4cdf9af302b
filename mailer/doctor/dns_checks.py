"""The DNS checks: SPF (`doctor.spf`), the DKIM key, DMARC and alignment, MX of the bounce
domain, the unsubscribe host, forward and reverse DNS of the relay, and the informational
records (MTA-STS, TLS-RPT, BIMI).

`Domains` is what the settings name (pure); each `judge_*` decides on looked-up facts alone,
and `dns_checks` is the one function that asks DNS and hands the facts over.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import urlsplit

from mailer.doctor.records import (
    RecordError,
    aligned,
    dkim_keys,
    dmarc_records,
    organizational_domain,
    parse_dkim_key,
    parse_dmarc,
)
from mailer.doctor.report import Check, failed, info, passed, warn
from mailer.doctor.resolver import Resolver
from mailer.doctor.spf import gather_spf, judge_spf
from mailer.errors import DnsError
from mailer.mail.dkim import Signer
from mailer.settings import Settings


@dataclass(frozen=True)
class Domains:
    """The names our mail is judged by."""

    from_domain: str  # RFC 5322 From: what DMARC protects
    envelope_domain: str  # MAIL FROM (the VERP bounce address, else From): what SPF checks
    smtp_host: str
    unsubscribe_host: str  # "" without [campaigns] unsubscribe_url


def domains_of(settings: Settings) -> Domains:
    from_domain = settings.smtp.sender_address.rpartition("@")[2]
    bounce = parseaddr(settings.bounces.address)[1].lower()
    return Domains(from_domain=from_domain,
                   envelope_domain=bounce.rpartition("@")[2] or from_domain,
                   smtp_host=settings.smtp.host,
                   unsubscribe_host=urlsplit(settings.campaigns.unsubscribe_url).hostname or "")


@dataclass(frozen=True)
class DkimFacts:
    name: str  # selector._domainkey.domain
    records: list[str]  # the key records found there


def judge_dkim(signer: Signer | None, facts: DkimFacts | None, *,
               configured: bool = False) -> Check:
    """Our public key is the one published. `configured`: `[dkim]` is set, though its key
    could not be loaded (no signer)."""
    if signer is None and configured:
        return failed("dns", "DKIM key", "[dkim] is set but its private key cannot be loaded",
                      "point [dkim] private_key_file at the key (or set MAILER_DKIM_KEY)")
    if signer is None or facts is None:
        return failed("dns", "DKIM key", "[dkim] domain is not set: messages go out unsigned",
                      "set [dkim] domain, selector and private_key_file, then publish the "
                      "record `mailer dkim dns` prints")
    publish = f"publish {signer.dns_record()}"
    if not facts.records:
        return failed("dns", "DKIM key", f"{facts.name}: no DKIM key record", publish)
    if len(facts.records) > 1:
        return failed("dns", "DKIM key", f"{facts.name}: {len(facts.records)} key records "
                      "(receivers pick one at random)", f"keep only this one: {publish}")
    ours = parse_dkim_key(signer.dns_value())
    try:
        theirs = parse_dkim_key(facts.records[0])
    except RecordError as exc:
        return failed("dns", "DKIM key", f"{facts.name}: {exc}", f"{publish} in its place")
    if not theirs.public_key:
        return failed("dns", "DKIM key", f"{facts.name}: the key is revoked (empty p=)",
                      f"{publish} in its place")
    if theirs != ours:
        return failed("dns", "DKIM key",
                      f"{facts.name}: the published {theirs.algorithm} key is not the public "
                      f"half of [dkim] private_key_file ({ours.algorithm})",
                      f"{publish} in its place (or set [dkim] to the key it belongs to)")
    return passed("dns", "DKIM key", f"{facts.name}: {ours.algorithm} key matches ours")


@dataclass(frozen=True)
class DmarcFacts:
    name: str  # the _dmarc name the record was found at (or first asked)
    records: list[str]


def judge_dmarc(facts: DmarcFacts, domains: Domains, dkim_domain: str) -> list[Check]:
    """The record, its rua=, and alignment (RFC 7489 §3.1) of From with DKIM d= or SPF."""
    suggestion = (f'publish _dmarc.{domains.from_domain}. IN TXT "v=DMARC1; p=none; '
                  f'rua=mailto:dmarc-reports@{domains.from_domain}"')
    if not facts.records:
        return [failed("dns", "DMARC", f"{facts.name}: no DMARC record", suggestion)]
    if len(facts.records) > 1:
        return [failed("dns", "DMARC", f"{facts.name}: {len(facts.records)} DMARC records "
                       "(RFC 7489 §6.6.3: receivers then apply none)",
                       f"keep one: {suggestion}")]
    try:
        dmarc = parse_dmarc(facts.records[0])
    except RecordError as exc:
        return [failed("dns", "DMARC", f'{facts.name}: "{facts.records[0]}": {exc}',
                       f"{suggestion} in its place")]
    checks = [passed("dns", "DMARC", f'{facts.name}: p={dmarc.policy} ("{dmarc.record}")')]
    if dmarc.rua:
        checks.append(passed("dns", "DMARC reports", f"rua={','.join(dmarc.rua)}"))
    else:
        checks.append(warn("dns", "DMARC reports", f"{facts.name}: no rua= (no aggregate "
                           "reports: failures elsewhere go unseen)",
                           f'add "rua=mailto:dmarc-reports@{domains.from_domain}" to the record'))
    dkim_ok = bool(dkim_domain) and aligned(domains.from_domain, dkim_domain, dmarc.adkim)
    spf_ok = aligned(domains.from_domain, domains.envelope_domain, dmarc.aspf)
    mode = {"r": "relaxed", "s": "strict"}
    if dkim_ok or spf_ok:
        how = [f"DKIM d={dkim_domain} ({mode[dmarc.adkim]})"] if dkim_ok else []
        how += [f"SPF {domains.envelope_domain} ({mode[dmarc.aspf]})"] if spf_ok else []
        checks.append(passed("dns", "DMARC alignment",
                             f"From {domains.from_domain} aligned with {' and '.join(how)}"))
    else:
        checks.append(failed(
            "dns", "DMARC alignment",
            f"From {domains.from_domain} aligns with neither DKIM d={dkim_domain or '(none)'} "
            f"({mode[dmarc.adkim]}) nor SPF {domains.envelope_domain} ({mode[dmarc.aspf]})",
            f'set [dkim] domain = "{domains.from_domain}" (and publish its key), or send From '
            f"an address at {organizational_domain(domains.envelope_domain)} ([smtp] sender)"))
    return checks


def judge_mx(domain: str, exchanges: list[tuple[int, str]]) -> Check:
    fix = (f"publish {domain}. IN MX 10 <the host that receives mail for {domain}>. "
           "(delivering to the mailbox [imap] or [bounces.imap] reads)")
    if not exchanges:
        return failed("dns", "MX", f"{domain}: no MX record (bounces and complaints cannot "
                      "come back)", fix)
    if [e for _, e in exchanges] == ["."]:
        return failed("dns", "MX", f"{domain}: a null MX (RFC 7505: accepts no mail)", fix)
    listed = ", ".join(f"{p} {e}" for p, e in exchanges)
    return passed("dns", "MX", f"{domain}: {listed}")


def judge_unsubscribe_host(host: str, addresses: list[str]) -> Check:
    if not host:
        return failed("dns", "Unsubscribe host", "[campaigns] unsubscribe_url is not set",
                      'set [campaigns] unsubscribe_url = "https://<your host>/unsubscribe"')
    if not addresses:
        return failed("dns", "Unsubscribe host", f"{host}: no A or AAAA record",
                      f"publish {host}. IN A <the address of the public listener's proxy>")
    return passed("dns", "Unsubscribe host", f"{host}: {', '.join(addresses)}")


def judge_reverse(host: str, names_by_address: dict[str, list[str]],
                  forward: dict[str, list[str]]) -> Check:
    """Forward-confirmed reverse DNS: each relay address has a PTR whose name leads back."""
    if not names_by_address:
        return info("dns", "Reverse DNS", f"{host}: no address to check from here (a relay "
                    "on this host sends from its own)")
    bad = []
    for address, names in names_by_address.items():
        confirmed = [n for n in names if address in forward.get(n, [])]
        if not confirmed:
            bad.append(f"{address} ({'PTR ' + ', '.join(names) if names else 'no PTR'})")
    if bad:
        return warn("dns", "Reverse DNS", f"{host}: {'; '.join(bad)} not forward-confirmed",
                    "ask whoever runs the relay's addresses for a PTR naming a host whose A "
                    "record is that address")
    return passed("dns", "Reverse DNS", f"{host}: every address has a PTR that leads back")


_INFORMATIONAL = (
    ("MTA-STS", "_mta-sts", "v=STSv1", '"v=STSv1; id=1" and serve the policy file (RFC 8461)'),
    ("TLS-RPT", "_smtp._tls", "v=TLSRPTv1", '"v=TLSRPTv1; rua=mailto:tls-reports@{domain}"'),
    ("BIMI", "default._bimi", "v=BIMI1", '"v=BIMI1; l=https://{domain}/logo.svg" (needs '
                                         "p=quarantine or reject)"),
)


def judge_informational(domain: str, found: dict[str, list[str]]) -> list[Check]:
    checks = []
    for name, label, version, record in _INFORMATIONAL:
        where = f"{label}.{domain}"
        matching = [t for t in found.get(where, []) if t.startswith(version)]
        if matching:
            checks.append(passed("dns", name, f'{where}: "{matching[0]}"'))
        else:
            checks.append(info("dns", name, f"{where}: none (optional)",
                               f"publish {where}. IN TXT {record.format(domain=domain)}"))
    return checks


async def find_dmarc(resolver: Resolver, domain: str) -> DmarcFacts:
    """The From domain's record, else its organizational domain's (RFC 7489 §6.6.3)."""
    names = [f"_dmarc.{domain}"]
    org = organizational_domain(domain)
    if org != domain:
        names.append(f"_dmarc.{org}")
    for name in names:
        records = dmarc_records(await resolver.txt(name))
        if records:
            return DmarcFacts(name, records)
    return DmarcFacts(names[0], [])


async def dns_checks(resolver: Resolver, settings: Settings, signer: Signer | None
                     ) -> tuple[list[Check], DkimFacts | None]:
    """Every DNS check, and the DKIM record found (the message checks verify against it)."""
    domains = domains_of(settings)
    checks: list[Check] = []
    dkim_facts: DkimFacts | None = None
    try:
        smtp_addresses = await resolver.addresses(domains.smtp_host)
        checks.append(judge_spf(await gather_spf(resolver, domains.envelope_domain),
                                domains.smtp_host, smtp_addresses))
        if signer is not None:
            dkim_facts = DkimFacts(signer.dns_name(),
                                   dkim_keys(await resolver.txt(signer.dns_name())))
        checks.append(judge_dkim(signer, dkim_facts, configured=settings.dkim.enabled))
        checks += judge_dmarc(await find_dmarc(resolver, domains.from_domain), domains,
                              signer.domain if signer else "")
        checks.append(judge_mx(domains.envelope_domain, await resolver.mx(domains.envelope_domain)))
        host = domains.unsubscribe_host
        checks.append(judge_unsubscribe_host(host, await resolver.addresses(host) if host else []))
        # A relay on this host (127.0.0.1) sends from an address not visible from here.
        public = [a for a in smtp_addresses if not ipaddress.ip_address(a).is_loopback]
        ptrs = {a: await resolver.ptr(a) for a in public}
        forward = {n: await resolver.addresses(n) for names in ptrs.values() for n in names}
        checks.append(judge_reverse(domains.smtp_host, ptrs, forward))
        optional: dict[str, list[str]] = {}
        for _, label, _, _ in _INFORMATIONAL:
            name = f"{label}.{domains.from_domain}"
            optional[name] = await resolver.txt(name)
        checks += judge_informational(domains.from_domain, optional)
    except DnsError as exc:
        checks.append(failed("dns", "DNS", f"cannot ask DNS: {exc}",
                             "check [doctor] nameservers (empty: the system's resolver) and "
                             "that this host can reach them"))
    return checks, dkim_facts
