"""DNS for the doctor: dnspython's asyncio resolver pointed at `[doctor] nameservers` (the
system's resolver when empty), answering in plain values.

"No such record" (NXDOMAIN, or the name has no record of that type) is an empty list: to the
checks that is a finding, not an error. A server that cannot be reached, times out or fails
(SERVFAIL) is `DnsError`, one line naming the query: nothing can be concluded from it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import dns.reversename

from mailer.errors import DnsError
from mailer.settings import DoctorSettings

__all__ = ["Resolver"]

_TIMEOUT_S = 5.0


class Resolver:
    """Asks DNS for the few record types the doctor needs."""

    def __init__(self, settings: DoctorSettings, *, timeout_s: float = _TIMEOUT_S) -> None:
        servers = settings.addresses()
        resolver = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)
                                    for address, port in servers]
        resolver.timeout = timeout_s
        resolver.lifetime = timeout_s
        resolver.cache = None  # each run sees DNS as it is now
        self._resolver = resolver

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as exc:
            raise DnsError(f"DNS {rdtype} {name}: no answer in {self._resolver.lifetime:g} s"
                           ) from exc
        except dns.exception.DNSException as exc:
            raise DnsError(f"DNS {rdtype} {name}: {exc}") from exc
        return list(answer)

    async def _answer(self, name: str, rdtype: str) -> list[str]:
        return [rdata.to_text() for rdata in await self._query(name, rdtype)]

    async def txt(self, name: str) -> list[str]:
        """Each TXT record at `name`, its strings joined (RFC 7208 §3.3: one record may be
        split into strings of 255 octets)."""
        return [b"".join(rdata.strings).decode("utf-8", "replace")
                for rdata in await self._query(name, "TXT")]

    async def addresses(self, name: str) -> list[str]:
        """The IPv4 and IPv6 addresses of `name` (itself when it is an address)."""
        try:
            return [str(ipaddress.ip_address(name))]
        except ValueError:
            pass
        return [*await self._answer(name, "A"), *await self._answer(name, "AAAA")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) of each MX record, exchange without the final dot."""
        records = []
        for text in await self._answer(name, "MX"):
            preference, _, exchange = text.partition(" ")
            records.append((int(preference), exchange.rstrip(".") or "."))
        return sorted(records)

    async def ptr(self, address: str) -> list[str]:
        """The names a reverse lookup of `address` gives, without the final dot."""
        name = dns.reversename.from_address(address).to_text()
        return [n.rstrip(".") for n in await self._answer(name, "PTR")]
