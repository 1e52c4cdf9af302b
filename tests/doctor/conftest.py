"""The doctor's test world: a correct setup on loopback that every check passes, which each
test breaks in one place.

    DNS       dnslib authoritative on 127.0.0.1 (UDP and TCP) serving imperial.test
    SMTP      aiosmtpd with STARTTLS and AUTH, its certificate from a trustme CA
    IMAP      Dovecot (or pymap) with the folders the inbox worker uses
    https     the real public app (mailer.public) behind TLS, at unsubscribe.imperial.test
    keys      a DKIM key (RSA 2048) published in the zone
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.mail.dkim import load_signer
from mailer.public import make_app
from mailer.settings import Settings, load
from tests.doctor.dns_zone import DnsServer, Zone
from tests.helpers import ROOT, write_settings
from tests.servers import HOST, ImapTestServer, RawImap, free_port

DOMAIN = "imperial.test"
SELECTOR = "mail2026"
UNSUBSCRIBE_HOST = f"unsubscribe.{DOMAIN}"
SMTP_USER, SMTP_PASSWORD = "news", "relay-password"
SECRET = "doctor-test-secret"


@functools.cache
def rsa_pem(which: int = 0) -> bytes:
    """An RSA 2048 key in PEM, made once per run (`which` tells two keys apart)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Relay:
    """aiosmtpd on loopback with TLS (STARTTLS, or implicit with `implicit=True`) and AUTH
    accepting one user; it records nothing, as the doctor sends nothing."""

    def __init__(self, context: ssl.SSLContext, *, implicit: bool = False) -> None:
        self.port = free_port()
        # aiosmtpd's auth_require_tls only knows STARTTLS; on implicit TLS the whole
        # session is encrypted, so AUTH is offered from the start.
        tls: dict[str, Any] = ({"ssl_context": context, "auth_require_tls": False} if implicit
                               else {"tls_context": context, "auth_require_tls": True})
        self._controller = Controller(self, hostname=HOST, port=self.port,
                                      authenticator=self._authenticate, **tls)

    @staticmethod
    def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and data.login == SMTP_USER.encode()
              and data.password == SMTP_PASSWORD.encode())
        return AuthResult(success=ok, handled=False)

    def __enter__(self) -> Relay:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def correct_zone(zone: Zone, dkim_record: str) -> None:
    """Every record the doctor wants, right."""
    zone.txt(DOMAIN, "v=spf1 ip4:127.0.0.1 ~all")
    zone.mx(DOMAIN, 10, f"mx.{DOMAIN}")
    zone.a(f"mx.{DOMAIN}", "127.0.0.1")
    zone.txt(f"{SELECTOR}._domainkey.{DOMAIN}", dkim_record)
    zone.txt(f"_dmarc.{DOMAIN}", f"v=DMARC1; p=none; rua=mailto:dmarc@{DOMAIN}")
    zone.a(UNSUBSCRIBE_HOST, "127.0.0.1")


@dataclass
class World:
    path: Path  # the settings file
    zone: Zone
    ca_file: Path
    sections: dict[str, dict[str, Any]]

    def settings(self, **overrides: dict[str, Any]) -> Settings:
        """The settings, with `overrides` merged into their sections."""
        sections = {name: dict(values) for name, values in self.sections.items()}
        for name, values in overrides.items():
            sections.setdefault(name, {}).update(values)
        return load(write_settings(self.path, sections))


@pytest.fixture
def ca() -> trustme.CA:
    """A test certificate authority: the relay's and the listener's certificates come from it."""
    return trustme.CA()


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def relay(ca: trustme.CA) -> Iterator[Relay]:
    with Relay(server_context(ca, HOST)) as server:
        yield server


@pytest.fixture
def world(tmp_path: Path, ca: trustme.CA, dns: DnsServer, relay: Relay,
          imap_server: ImapTestServer, monkeypatch: pytest.MonkeyPatch) -> World:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # The unsubscribe URL's certificate is checked against the system's CAs, which OpenSSL
    # reads from SSL_CERT_FILE when it is set: here, the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(rsa_pem())
    with RawImap.for_server(imap_server) as raw:
        for folder in ("Processed", "Review", "Bounces"):
            raw.command(f"CREATE {folder}")
    sections: dict[str, dict[str, Any]] = {
        "database": {"path": str(tmp_path / "mailer.db")},
        "imap": {"host": imap_server.host, "port": imap_server.port, "security": "none",
                 "username": imap_server.username, "password": imap_server.password,
                 "timeout_s": 10.0},
        "smtp": {"host": HOST, "port": relay.port, "security": "starttls",
                 "username": SMTP_USER, "password": SMTP_PASSWORD, "ca_file": str(ca_file),
                 "sender": f"Imperial Telecom <news@{DOMAIN}>", "timeout_s": 10.0},
        "unsubscribe": {"address": f"unsubscribe@{DOMAIN}"},
        "templates": {"dir": str(ROOT / "templates")},
        "campaigns": {"secret": SECRET,
                      "unsubscribe_url": f"https://{UNSUBSCRIBE_HOST}:{free_port()}/unsubscribe"},
        "bounces": {"address": f"bounces@{DOMAIN}"},
        "dkim": {"domain": DOMAIN, "selector": SELECTOR, "private_key_file": str(key_file)},
        "doctor": {"nameservers": [dns.address]},
    }
    world = World(tmp_path / "settings.toml", dns.zone, ca_file, sections)
    signer = load_signer(world.settings().dkim)
    assert signer is not None
    correct_zone(dns.zone, signer.dns_value())
    return world


@pytest.fixture
async def listener(world: World, ca: trustme.CA) -> AsyncIterator[None]:
    """The real public app over TLS at the unsubscribe URL's port."""
    settings = world.settings()
    port = int(settings.campaigns.unsubscribe_url.split(":")[2].split("/")[0])
    runner = web.AppRunner(make_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, HOST, port,
                       ssl_context=server_context(ca, UNSUBSCRIBE_HOST))
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()
