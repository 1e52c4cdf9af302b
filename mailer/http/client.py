"""Who is asking: the client's address after trusted proxies, and the key limits count it by.

- **Address**: the peer's address, unless the peer is a trusted proxy (`[http] trusted_proxies`,
  used by both listeners), in which case the right-most address of X-Forwarded-For that is not
  itself a trusted proxy: the left-most entries are whatever the client chose to send.
- **An untrusted proxy**: X-Forwarded-For from a peer that is not trusted is ignored (anyone
  can send it), and logged once as a warning, since it usually means a proxy was put in front
  and `trusted_proxies` was not set: every customer then looks like the proxy's one address.
- **Limit key**: an IPv4 address as it is; an IPv6 address by its /64, the smallest block an
  end site is given (RFC 6177 §2), so a client cannot step past a limit by using the 2^64
  addresses of its own network. IPv4-mapped IPv6 addresses count as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from aiohttp import web

log = logging.getLogger(__name__)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDED_FOR = "X-Forwarded-For"


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def limit_key(address: str) -> str:
    """What a limit counts `address` by: the IPv4 address, or the IPv6 /64 it is in."""
    ip = _ip(address)
    if ip is None:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class ClientAddress:
    """Finds the client's address, believing X-Forwarded-For only from trusted proxies."""

    def __init__(self, trusted_proxies: Sequence[str], listener: str) -> None:
        self._trusted: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self._listener = listener
        self._warned = False

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self._trusted)

    def of(self, request: web.Request) -> str:
        peer = request.remote or ""
        if not self._is_trusted(peer):
            if not self._warned and _FORWARDED_FOR in request.headers:
                self._warned = True
                # The peer's address only; what it forwarded may be anyone's.
                log.warning("%s: requests arrive with X-Forwarded-For from %s, which is not "
                            "in [http] trusted_proxies: every client behind it is counted as "
                            "that one address (add the proxy to trusted_proxies)",
                            self._listener, peer or "an unknown peer")
            return peer
        hops = [h.strip() for v in request.headers.getall(_FORWARDED_FOR, [])
                for h in v.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer
