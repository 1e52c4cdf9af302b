"""The server checks: the SMTP relay (answers, TLS that verifies for its name, our login),
the IMAP mailbox (logs in, has our folders), and the unsubscribe URL (https, its certificate
verifies, and mailer's listener answers the doctor's probe).

Each step is its own check, so the table says which one broke. Nothing is sent, posted or
created: the SMTP session ends after the login, the folders are only selected.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib
from aiohttp.abc import AbstractResolver, ResolveResult

from mailer.doctor.probe import PROBE_BODY, probe_url
from mailer.doctor.report import Check, failed, info, passed, warn
from mailer.doctor.resolver import Resolver
from mailer.errors import DnsError, ImapError
from mailer.inbox.imap import ImapClient
from mailer.inbox.worker import bounces_imap_config, imap_config
from mailer.mail.smtp import SmtpConfig, smtp_config
from mailer.settings import Settings

_TLS_FIX = ('set [smtp] security = "starttls" (port 587) or "tls" (port 465), with a relay '
            "whose certificate names [smtp] host")


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _tls_failure(where: str, exc: BaseException) -> Check:
    reason = getattr(exc, "verify_message", None) or str(exc)
    return failed("servers", "SMTP TLS", f"{where}: certificate does not verify: {reason}",
                  "install a certificate for [smtp] host signed by a public CA (or name the "
                  "CA in [smtp] ca_file)")


async def smtp_checks(config: SmtpConfig) -> list[Check]:
    where = f"{config.host}:{config.port}"
    context = _tls_context(str(config.ca_file) if config.ca_file else None)
    client = aiosmtplib.SMTP(hostname=config.host, port=config.port, timeout=config.timeout_s,
                             use_tls=config.security == "tls", start_tls=False,
                             tls_context=context if config.security == "tls" else None)
    checks: list[Check] = []
    try:
        try:
            reply = await client.connect()
        except aiosmtplib.SMTPConnectError as exc:
            if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                return [_tls_failure(where, exc.__cause__)]
            raise
        checks.append(passed("servers", "SMTP", f"{where}: {reply.code} "
                                                f"{' '.join(reply.message.split())[:60]}"))
        if config.security == "none":
            checks.append(failed("servers", "SMTP TLS", f"{where}: [smtp] security = \"none\": "
                                 "mail and the password cross the network in clear", _TLS_FIX))
        elif config.security == "starttls":
            await client.ehlo()
            if not client.supports_extension("starttls"):
                return [*checks, failed("servers", "SMTP TLS", f"{where}: STARTTLS not "
                                        "offered (RFC 3207)", _TLS_FIX)]
            try:
                await client.starttls(tls_context=context)
            except (ssl.SSLError, aiosmtplib.SMTPException) as exc:
                cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__ or exc
                return [*checks, _tls_failure(where, cause)]
        if config.security != "none":
            ssl_object = client.transport.get_extra_info("ssl_object") if client.transport \
                else None
            version = ssl_object.version() if ssl_object is not None else "TLS"
            how = "STARTTLS" if config.security == "starttls" else "implicit TLS"
            checks.append(passed("servers", "SMTP TLS", f"{where}: {how}, {version}, "
                                 f"certificate verifies for {config.host}"))
        checks.append(await _smtp_login(client, config, where))
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()  # RFC 5321 §4.1.1.10: end the session politely
    except (aiosmtplib.SMTPException, OSError) as exc:
        checks.append(failed("servers", "SMTP", f"{where}: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())}",
                             "check [smtp] host and port, and that this host may reach them"))
    finally:
        client.close()
    return checks


async def _smtp_login(client: aiosmtplib.SMTP, config: SmtpConfig, where: str) -> Check:
    if not config.username:
        return info("servers", "SMTP login", f"{where}: no [smtp] username: no login")
    try:
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        await client.login(config.username, config.password)
    except aiosmtplib.SMTPAuthenticationError as exc:
        return failed("servers", "SMTP login", f"{where}: {config.username} refused: "
                      f"{exc.code} {' '.join(exc.message.split())}",
                      "check [smtp] username and the password (MAILER_SMTP_PASSWORD)")
    except aiosmtplib.SMTPException as exc:
        return failed("servers", "SMTP login", f"{where}: {config.username}: {exc}",
                      "check [smtp] username and that the relay offers AUTH after TLS")
    return passed("servers", "SMTP login", f"{where}: {config.username} accepted")


async def imap_checks(settings: Settings) -> list[Check]:
    """Log in to each mailbox we read and select the folders we need there."""
    mailboxes = [("IMAP", imap_config(settings),
                  [settings.imap.folder],
                  [settings.imap.processed_folder, settings.imap.review_folder])]
    bounces = bounces_imap_config(settings)
    if settings.bounces.address:
        if bounces is None:
            mailboxes[0][3].append(settings.bounces.folder)
        else:
            assert settings.bounces.imap is not None
            mailboxes.append(("Bounces IMAP", bounces, [settings.bounces.imap.folder],
                              [settings.bounces.folder]))
    checks: list[Check] = []
    for name, config, needed, made in mailboxes:
        where = f"{config.host}:{config.port}"
        try:
            client = await ImapClient.connect(config)
        except ImapError as exc:
            checks.append(failed("servers", name, str(exc), "check the host, port, security, "
                                 "username and password of that mailbox's settings"))
            continue
        try:
            checks.append(passed("servers", name, f"{where}: logged in as {config.username}"))
            missing, absent = await _absent(client, needed), await _absent(client, made)
            if missing:
                checks.append(failed("servers", f"{name} folders", f"no folder "
                                     f"{', '.join(missing)}", "create it, or name an existing "
                                     "one in the settings ([imap] folder)"))
            elif absent:
                checks.append(warn("servers", f"{name} folders",
                                   f"not created yet: {', '.join(absent)}",
                                   "run `mailer inbox process` once: it creates them"))
            else:
                checks.append(passed("servers", f"{name} folders",
                                     ", ".join([*needed, *made])))
        finally:
            await client.close()
    return checks


async def _absent(client: ImapClient, folders: list[str]) -> list[str]:
    absent = []
    for folder in folders:
        try:
            await client.select(folder)
        except ImapError:
            absent.append(folder)
    return absent


class _DoctorResolver(AbstractResolver):
    """aiohttp's resolver asking the doctor's DNS, so the probe goes where receivers would."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            addresses = await self._resolver.addresses(host)
        except DnsError as exc:
            raise OSError(str(exc)) from exc
        if not addresses:
            raise OSError(f"{host}: no A or AAAA record")
        return [ResolveResult(hostname=host, host=a, port=port,
                              family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST) for a in addresses]

    async def close(self) -> None:
        return None


async def unsubscribe_check(url: str, resolver: Resolver, timeout_s: float = 10.0) -> Check:
    if not url:
        return failed("servers", "Unsubscribe URL", "[campaigns] unsubscribe_url is not set",
                      'set [campaigns] unsubscribe_url = "https://<your host>/unsubscribe"')
    if urlsplit(url).scheme != "https":
        # RFC 8058 §3.1: the one-click URI must be https.
        return failed("servers", "Unsubscribe URL", f"{url} is not https (RFC 8058 §3.1)",
                      "serve the public listener behind TLS and set [campaigns] unsubscribe_url "
                      'to its "https://" URL')
    target = probe_url(url)
    connector = aiohttp.TCPConnector(resolver=_DoctorResolver(resolver),
                                     ssl=_tls_context(None))
    try:
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
                http.get(target, allow_redirects=False) as response:
            body = await response.text(errors="replace")
    except aiohttp.ClientConnectorCertificateError as exc:
        return failed("servers", "Unsubscribe URL", f"{target}: certificate does not verify: "
                      f"{getattr(exc.certificate_error, 'verify_message', exc)}",
                      "install a certificate for that host signed by a public CA")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return failed("servers", "Unsubscribe URL", f"{target}: {type(exc).__name__}: "
                      f"{' '.join(str(exc).split()) or 'timed out'}",
                      "check that the public listener ([http]) runs and the proxy forwards "
                      "the unsubscribe URL's path to it")
    if response.status != 200 or body != PROBE_BODY:
        return warn("servers", "Unsubscribe URL", f"{target}: certificate verifies, but the "
                    f"answer ({response.status}) is not mailer's",
                    "make the proxy forward the unsubscribe URL's path (and below) to the "
                    "public listener ([http] host and port)")
    return passed("servers", "Unsubscribe URL", f"{target}: https, certificate verifies, "
                                                "the listener answers")


async def server_checks(settings: Settings, resolver: Resolver) -> list[Check]:
    return [*await smtp_checks(smtp_config(settings)), *await imap_checks(settings),
            await unsubscribe_check(settings.campaigns.unsubscribe_url, resolver)]
