"""SMTP: one `Session` per connection, opened by aiosmtplib, and our failures.

aiosmtplib opens the connection (implicit TLS or STARTTLS against the named CA, EHLO, AUTH)
and carries every transaction with a server that does not announce PIPELINING. With one that
does (Postfix, Exim, every relay a telecom runs), the transactions go through `_Replies`, a
reply reader installed on the same transport: MAIL, RCPT and DATA go out in one write (RFC
2920 §3.1) and the message in the next, two round trips a message instead of four, without
aiosmtplib's per-command regular expressions. aiosmtplib cannot read several replies to one
write (its protocol drops a reply that arrives while the previous one waits to be read), hence
the reader; `bench/campaign_bench.py` measures the difference.

A sender may hold the message back until the server has accepted the envelope (`BeforeData`):
the campaign sender waits there for the previous message's commit, so that round trip to the
database overlaps this one to the SMTP server instead of preceding it. A message withdrawn
there was never delivered: RSET ends the transaction before DATA; after the server's 354 only
dropping the connection does (RFC 5321 §4.1.1.4: the server discards an unfinished message).

Errors are split the way a sender must act on them (RFC 5321 §4.2.1): `TransientSmtpError`
(4xx replies, dropped connections, timeouts: try again later) and `PermanentSmtpError`
(5xx for this recipient or message: do not retry). Both carry the server's reply in one line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosmtplib

from mailer.errors import PermanentSmtpError, SmtpError, TransientSmtpError, unresolved_host
from mailer.mail.outgoing import crlf_lines
from mailer.settings import Settings

log = logging.getLogger(__name__)

# Awaited once the server has accepted the envelope, before the message goes out: True sends
# it, False withdraws it (nothing is delivered; `Session.send` returns None).
BeforeData = Callable[[], Awaitable[bool]]


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


async def connect(config: SmtpConfig) -> Session:
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
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
    except aiosmtplib.SMTPAuthenticationError as exc:
        client.close()
        raise PermanentSmtpError(f"SMTP {where}: login refused: {_reply(exc)}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        client.close()
        raise classify_error(exc, f"SMTP {where}: connect") from exc
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        client.close()
        detail = unresolved_host(exc, config.host) or f"cannot connect: {exc}"
        raise TransientSmtpError(f"SMTP {where}: {detail}") from exc
    return Session(client)


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {' '.join(str(exc.message).split())}"


def _error(code: int, text: str, what: str) -> SmtpError:
    """A reply that is not the one hoped for, as our error: 5xx permanent, else transient."""
    error = PermanentSmtpError if 500 <= code < 600 else TransientSmtpError
    return error(f"{what}: {code} {text}".rstrip())


def classify_error(exc: BaseException, what: str) -> SmtpError:
    """Map an aiosmtplib/OS error to Transient or Permanent, keeping the reply in one line."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        replies = [r for r in exc.recipients]
        if replies and all(500 <= r.code < 600 for r in replies):
            return PermanentSmtpError(f"{what}: {_reply(replies[0])}")
        if replies:
            return TransientSmtpError(f"{what}: {_reply(replies[0])}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _error(exc.code, " ".join(str(exc.message).split()), what)
    return TransientSmtpError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))


# An address that can go between < > on a command line as it is: printable ASCII, no spaces,
# no angle brackets, one @ (RFC 5321 §4.1.2 Mailbox, the dot-atom form).
_PLAIN_ADDRESS = re.compile(r"[!#-;=?A-~]+@[!#-;=?A-~]+")
# aiosmtplib's limit on a reply line; a longer one is not SMTP.
_MAX_LINE = 8192
_LEADING_DOT = re.compile(rb"(?m)^\.")


def data_block(message: bytes) -> bytes:
    """The message as it goes after DATA: CRLF line endings, a leading dot doubled (RFC 5321
    §4.5.2), ending in CRLF and the lone dot. Messages we build are CRLF throughout and rarely
    have a line starting with a dot, so the usual case is a few counts and a find."""
    message = crlf_lines(message)
    if message.startswith(b".") or b"\n." in message:
        message = _LEADING_DOT.sub(b"..", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


class _Replies(asyncio.Protocol):
    """Reads SMTP replies off a transport, however many one write asked for and however the
    bytes arrive: `read(n)` returns once n complete replies (continuation lines joined) are in.
    A malformed reply, an over-long line or the connection's end fails every later read."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._ready: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self.failure: str | None = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end]).rstrip(b"\r")
            start = end + 1
            if len(line) > _MAX_LINE or not line[:3].isdigit() or line[3:4] not in (b"", b" ",
                                                                                    b"-"):
                self._fail(f"malformed reply {line[:60]!r}")
                return
            self._lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                self._ready.append((int(line[:3]), " ".join(" ".join(self._lines).split())))
                self._lines = []
        del buffer[:start]
        if len(buffer) > _MAX_LINE:
            self._fail("reply line too long")
            return
        waiter = self._waiter
        if waiter is not None and len(self._ready) >= self._wanted and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail("connection closed by the server")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}" if exc else "connection lost")

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            self._transport.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def first_refusal(self) -> tuple[int, str] | None:
        """The first reply read but not yet taken that refuses (4xx or 5xx)."""
        return next((reply for reply in self._ready if reply[0] >= 400), None)

    async def read(self, count: int, timeout_s: float) -> list[tuple[int, str]]:
        """The next `count` replies; TransientSmtpError if the connection fails first,
        TimeoutError after `timeout_s`."""
        ready = self._ready
        if len(ready) < count and self.failure is None:
            self._wanted = count
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            finally:
                self._waiter = None
        if len(ready) < count:
            raise TransientSmtpError(self.failure or "connection lost")
        return [ready.popleft() for _ in range(count)]


class Session:
    """One open SMTP connection that carries one transaction at a time (see the module's
    docstring for who carries it)."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self._client = client
        self._pipelining = (client.supports_extension("pipelining")
                            and isinstance(client.transport, asyncio.Transport))
        self._size = client.supports_extension("size")
        self._replies: _Replies | None = None
        self._dropped = False

    @property
    def pipelining(self) -> bool:
        """Whether transactions go through the reply reader (the server announced it)."""
        return self._pipelining

    async def send(self, sender: str, recipient: str, message: bytes, timeout_s: float) -> str:
        """Send one message to one recipient; return the server's reply to the message."""
        reply = await self.send_held(sender, recipient, message, timeout_s, None)
        assert reply is not None, "only before_data withdraws a message"
        return reply

    async def send_held(self, sender: str, recipient: str, message: bytes, timeout_s: float,
                        before_data: BeforeData | None) -> str | None:
        """`send`, the message held back until `before_data` says it may go; None if it
        withdrew it (the connection may have been dropped for that)."""
        if not (_PLAIN_ADDRESS.fullmatch(sender) and _PLAIN_ADDRESS.fullmatch(recipient)):
            # aiosmtplib's sendmail parses and checks both addresses (and SMTPUTF8).
            self._hand_back()
            if before_data is not None and not await before_data():
                return None
            return await self._sendmail(sender, recipient, message, timeout_s)
        if self._pipelining:
            replies = self._replies or self._take_over(recipient)
            try:
                return await self._pipelined(replies, sender, recipient, message, timeout_s,
                                             before_data)
            except TimeoutError as exc:
                self.drop()
                raise TransientSmtpError(f"SMTP to <{recipient}>: timed out") from exc
        return await self._stepwise(sender, recipient, message, timeout_s, before_data)

    def _take_over(self, recipient: str) -> _Replies:
        try:
            transport = self._transport()
        except TransientSmtpError as exc:
            raise TransientSmtpError(f"SMTP to <{recipient}>: {exc}") from exc
        self._replies = replies = _Replies(transport)
        transport.set_protocol(replies)
        return replies

    def _hand_back(self) -> None:
        """Give the transport back to aiosmtplib's protocol (between transactions only); a
        connection the reader saw fail is closed instead, which aiosmtplib then reports."""
        replies, self._replies = self._replies, None
        if replies is not None:
            protocol = self._client.protocol
            if replies.failure is None and protocol is not None:
                self._transport().set_protocol(protocol)
            else:
                self.drop()

    async def _pipelined(self, replies: _Replies, sender: str, recipient: str, message: bytes,
                         timeout_s: float, before_data: BeforeData | None) -> str | None:
        what = f"SMTP to <{recipient}>"
        data = data_block(message)
        # RFC 1870: announce the size (the bytes that follow DATA, less the final dot).
        size = b" SIZE=%d" % (len(data) - 3) if self._size else b""
        try:
            write = self._transport().write
            write(b"MAIL FROM:<%s>%s\r\nRCPT TO:<%s>\r\nDATA\r\n"
                  % (sender.encode("ascii"), size, recipient.encode("ascii")))
            mail, rcpt, go = await replies.read(3, timeout_s)
            accepted = mail[0] == 250 and rcpt[0] in (250, 251) and go[0] == 354
            if accepted and before_data is not None and not await self._go_ahead(before_data):
                return None
            if accepted:
                write(data)
                code, text = (await replies.read(1, timeout_s))[0]
        except TransientSmtpError as exc:
            # A server that refuses and hangs up (421) has its say before the connection ends.
            refusal = replies.first_refusal()
            if refusal is not None:
                raise _error(*refusal, what) from exc
            raise TransientSmtpError(f"{what}: {exc}") from exc
        if accepted:
            if code == 250:
                return text
            raise _error(code, text, what)
        await self._abandon(replies, go[0] == 354, timeout_s)
        refused = mail if mail[0] != 250 else rcpt if rcpt[0] not in (250, 251) else go
        raise _error(*refused, what)

    async def _go_ahead(self, before_data: BeforeData) -> bool:
        """Ask `before_data` with the server waiting for the message; if it withdraws it (or
        fails), drop the connection: an unfinished message is discarded, never delivered."""
        try:
            go = await before_data()
        except BaseException:
            self.drop()
            raise
        if not go:
            self.drop()
        return go

    async def _abandon(self, replies: _Replies, started: bool, timeout_s: float) -> None:
        """After a refusal, make the connection ready for the next transaction: end the empty
        message if the server said go to DATA all the same (it refuses it for want of a
        recipient), else RSET (RFC 5321 §4.1.1.5). If that fails, drop the connection."""
        try:
            self._transport().write(b".\r\n" if started else b"RSET\r\n")
            if (await replies.read(1, timeout_s))[0][0] != 250 and not started:
                self.drop()
        except (TransientSmtpError, TimeoutError):
            self.drop()

    def _transport(self) -> asyncio.Transport:
        transport = self._client.transport
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            raise TransientSmtpError("connection closed")
        return transport

    async def _stepwise(self, sender: str, recipient: str, message: bytes,
                        timeout_s: float, before_data: BeforeData | None) -> str | None:
        """One command at a time through aiosmtplib, for a server without PIPELINING."""
        client = self._client
        what = f"SMTP to <{recipient}>"
        try:
            size = ((f"SIZE={len(message)}".encode("ascii"),) if self._size else ())
            reply = await client.execute_command(
                b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", *size, timeout=timeout_s)
            if reply.code != 250:
                await self._reset(timeout_s)
                raise classify_error(aiosmtplib.SMTPSenderRefused(reply.code, reply.message,
                                                                  sender), what)
            reply = await client.execute_command(
                b"RCPT", b"TO:<" + recipient.encode("ascii") + b">", timeout=timeout_s)
            if reply.code not in (250, 251):
                await self._reset(timeout_s)
                raise classify_error(aiosmtplib.SMTPRecipientRefused(
                    reply.code, reply.message, recipient), what)
            if before_data is not None and not await before_data():
                await self._reset(timeout_s)
                return None
            try:
                reply = await client.data(message, timeout=timeout_s)
            except aiosmtplib.SMTPResponseException:
                await self._reset(timeout_s)
                raise
        except SmtpError:
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise classify_error(exc, what) from exc
        return " ".join(reply.message.split())

    async def _reset(self, timeout_s: float) -> None:
        """RSET after a refusal, so the connection can carry the next transaction (RFC 5321
        §4.1.1.5); a failure here only means the connection is gone, which the next use
        sees."""
        client = self._client
        if client.is_connected:
            try:
                await client.rset(timeout=timeout_s)
            except (aiosmtplib.SMTPException, OSError):
                self.drop()

    async def _sendmail(self, sender: str, recipient: str, message: bytes,
                        timeout_s: float) -> str:
        """`send` through aiosmtplib's `sendmail`, which parses and checks both addresses."""
        try:
            errors, reply = await self._client.sendmail(sender, [recipient], message,
                                                        timeout=timeout_s)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise classify_error(exc, f"SMTP to <{recipient}>") from exc
        if errors:
            code_reply = next(iter(errors.values()))
            raise classify_error(
                aiosmtplib.SMTPResponseException(code_reply.code, code_reply.message),
                f"SMTP to <{recipient}>",
            )
        return " ".join(reply.split())

    def drop(self) -> None:
        """Close the connection at once, without QUIT."""
        self._dropped = True
        self._client.close()

    @property
    def dropped(self) -> bool:
        """Whether this session closed its connection (it cannot carry another message)."""
        return self._dropped

    async def close(self) -> None:
        """QUIT politely, or just drop the connection; never raises."""
        replies, self._replies = self._replies, None
        try:
            if replies is not None:
                if replies.failure is None:
                    self._transport().write(b"QUIT\r\n")
                    await replies.read(1, 5)
            elif self._client.is_connected:
                await self._client.quit(timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort by design
            pass
        self._client.close()
