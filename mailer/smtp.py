"""SMTP: connecting with aiosmtplib and sorting its failures into ours.

Errors are split the way a sender must act on them (RFC 5321 §4.2.1): `TransientSmtpError`
(4xx replies, dropped connections, timeouts: try again later) and `PermanentSmtpError`
(5xx for this recipient or message: do not retry). Both carry the server's reply in one line.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosmtplib

from mailer.errors import PermanentSmtpError as PermanentSmtpError
from mailer.errors import SmtpError as SmtpError
from mailer.errors import TransientSmtpError as TransientSmtpError
from mailer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: Literal["tls", "starttls", "none"]
    username: str = ""
    password: str = ""
    ca_file: Path | None = None
    timeout_s: float = 30.0


def smtp_config(settings: Settings) -> SmtpConfig:
    s = settings.smtp
    return SmtpConfig(host=s.host, port=s.port, security=s.security, username=s.username,
                      password=s.password, ca_file=s.ca_file, timeout_s=s.timeout_s)


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    return context


async def connect(config: SmtpConfig) -> aiosmtplib.SMTP:
    """Open, secure and (if a username is set) authenticate one SMTP connection."""
    client = aiosmtplib.SMTP(
        hostname=config.host,
        port=config.port,
        timeout=config.timeout_s,
        use_tls=config.security == "tls",
        start_tls=config.security == "starttls",
        tls_context=None if config.security == "none" else _tls_context(config),
    )
    where = f"{config.host}:{config.port}"
    try:
        await client.connect()
        if config.username:
            await client.login(config.username, config.password)
    except aiosmtplib.SMTPAuthenticationError as exc:
        await close(client)
        raise PermanentSmtpError(f"SMTP {where}: login refused: {_reply(exc)}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        await close(client)
        raise classify_error(exc, f"SMTP {where}: connect") from exc
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        await close(client)
        raise TransientSmtpError(f"SMTP {where}: cannot connect: {exc}") from exc
    return client


async def close(client: aiosmtplib.SMTP) -> None:
    """QUIT politely, or just drop the connection; never raises."""
    try:
        if client.is_connected:
            await client.quit(timeout=5)
    except Exception:  # noqa: BLE001 - closing is best effort by design
        client.close()


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {' '.join(str(exc.message).split())}"


def classify_error(exc: BaseException, what: str) -> SmtpError:
    """Map an aiosmtplib/OS error to Transient or Permanent, keeping the reply in one line."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        replies = [r for r in exc.recipients]
        if replies and all(500 <= r.code < 600 for r in replies):
            return PermanentSmtpError(f"{what}: {_reply(replies[0])}")
        if replies:
            return TransientSmtpError(f"{what}: {_reply(replies[0])}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 500 <= exc.code < 600:
            return PermanentSmtpError(f"{what}: {_reply(exc)}")
        return TransientSmtpError(f"{what}: {_reply(exc)}")
    return TransientSmtpError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))


# An address that can go between < > on a command line as it is: printable ASCII, no spaces,
# no angle brackets, one @ (RFC 5321 §4.1.2 Mailbox, the dot-atom form).
_PLAIN_ADDRESS = re.compile(r"[!#-;=?A-~]+@[!#-;=?A-~]+")


async def send(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes, timeout_s: float
) -> str:
    """Send one message to one recipient; return the server's reply to DATA."""
    if not (_PLAIN_ADDRESS.fullmatch(sender) and _PLAIN_ADDRESS.fullmatch(recipient)):
        return await _sendmail(client, sender, recipient, message, timeout_s)
    what = f"SMTP to <{recipient}>"
    try:
        if client.is_ehlo_or_helo_needed:
            await client.ehlo(timeout=timeout_s)
        # RFC 1870: announce the size (the message is CRLF throughout already).
        size = ((f"SIZE={len(message)}".encode("ascii"),)
                if client.supports_extension("size") else ())
        reply = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">",
                                             *size, timeout=timeout_s)
        if reply.code != 250:
            await _reset(client, timeout_s)
            raise classify_error(aiosmtplib.SMTPSenderRefused(reply.code, reply.message,
                                                              sender), what)
        reply = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">",
                                             timeout=timeout_s)
        if reply.code not in (250, 251):
            await _reset(client, timeout_s)
            raise classify_error(aiosmtplib.SMTPRecipientRefused(reply.code, reply.message,
                                                                 recipient), what)
        try:
            reply = await client.data(message, timeout=timeout_s)
        except aiosmtplib.SMTPResponseException:
            await _reset(client, timeout_s)
            raise
    except SmtpError:
        raise
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise classify_error(exc, what) from exc
    return " ".join(reply.message.split())


async def _reset(client: aiosmtplib.SMTP, timeout_s: float) -> None:
    """RSET after a refusal, so the connection can carry the next transaction (RFC 5321
    §4.1.1.5); a failure here only means the connection is gone, which the next use sees."""
    if client.is_connected:
        try:
            await client.rset(timeout=timeout_s)
        except (aiosmtplib.SMTPException, OSError):
            client.close()


async def _sendmail(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes, timeout_s: float
) -> str:
    """`send` through aiosmtplib's `sendmail`, which parses and checks both addresses."""
    try:
        errors, reply = await client.sendmail(sender, [recipient], message, timeout=timeout_s)
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise classify_error(exc, f"SMTP to <{recipient}>") from exc
    if errors:
        code_reply = next(iter(errors.values()))
        raise classify_error(
            aiosmtplib.SMTPResponseException(code_reply.code, code_reply.message),
            f"SMTP to <{recipient}>",
        )
    return " ".join(reply.split())
