"""A real authoritative DNS server on loopback for the doctor's tests: dnslib's server on UDP
and TCP (one port), answering from a `Zone` the test builds and may change while it runs.

    with DnsServer(Zone()) as dns:
        dns.zone.txt("imperial.test", "v=spf1 ip4:127.0.0.1 ~all")
        settings -> [doctor] nameservers = [dns.address]

Names the zone holds answer with their records (none of the asked type: an empty answer);
other names answer NXDOMAIN, as an authoritative server for everything would.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from dnslib import AAAA, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from tests.servers import free_port


class Zone:
    """Records by (name, type); safe to change while the server answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], list[Any]] = defaultdict(list)

    @staticmethod
    def _key(name: str, rtype: str) -> tuple[str, str]:
        return name.lower().rstrip("."), rtype

    def add(self, name: str, rtype: str, rdata: Any) -> None:
        with self._lock:
            self._records[self._key(name, rtype)].append(rdata)

    def remove(self, name: str, rtype: str) -> None:
        with self._lock:
            self._records.pop(self._key(name, rtype), None)

    def txt(self, name: str, text: str) -> None:
        """A TXT record, split into strings of 255 octets (RFC 7208 §3.3) when longer."""
        data = text.encode("utf-8")
        self.add(name, "TXT", TXT([data[i:i + 255] for i in range(0, len(data), 255)]))

    def a(self, name: str, address: str) -> None:
        self.add(name, "AAAA" if ":" in address else "A",
                 AAAA(address) if ":" in address else A(address))

    def mx(self, name: str, preference: int, exchange: str) -> None:
        self.add(name, "MX", MX(exchange.rstrip(".") + ".", preference))

    def ptr(self, address: str, name: str) -> None:
        reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
        self.add(reverse, "PTR", PTR(name.rstrip(".") + "."))

    def answer(self, name: str, rtype: str) -> tuple[bool, list[Any]]:
        """(the name exists, its records of `rtype`)."""
        name = name.lower().rstrip(".")
        with self._lock:
            exists = any(key[0] == name and value for key, value in self._records.items())
            return exists, list(self._records.get((name, rtype), []))


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()  # aa=1: this server is authoritative
        qname = request.q.qname
        exists, records = self.zone.answer(str(qname), QTYPE[request.q.qtype])
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        for rdata in records:
            reply.add_answer(RR(qname, request.q.qtype, rdata=rdata, ttl=60))
        return reply


class DnsServer:
    """dnslib's DNSServer on 127.0.0.1:<port>, UDP and TCP, answering from `zone`."""

    host = "127.0.0.1"

    def __init__(self, zone: Zone | None = None) -> None:
        self.zone = zone or Zone()
        self.port = free_port()
        resolver = _Resolver(self.zone)
        self._servers = [DNSServer(resolver, address=self.host, port=self.port, tcp=tcp,
                                   logger=_Quiet()) for tcp in (False, True)]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        for server in self._servers:
            server.start_thread()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Quiet:
    """dnslib's logger interface, saying nothing (its default prints every query)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
