"""One IMAP connection's state and the plumbing every command goes through.

`ImapSession` owns what all of `ImapClient`'s commands share: the connection's settings, the
command in flight (one task at a time), the closed flag, the timeout around each step, and the
translation of every failure (aioimaplib's, the socket's, TLS's, a NO or BAD answer) into one of
`mailer.errors`' two IMAP errors, a single line naming host:port and the command. `ImapClient`
(`mailer.inbox.imap`) adds the connecting and the commands on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aioimaplib import aioimaplib as upstream

from mailer.errors import ConnectionLost, ImapError, unresolved_host
from mailer.inbox.aioimaplib_fixes import ConnectionLostError, PatchedProtocol
from mailer.inbox.imap_wire import one_line

log = logging.getLogger("mailer.inbox.imap")

_LOGOUT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    security: Literal["tls", "starttls", "none"]
    username: str
    password: str = field(repr=False)  # kept out of logs and tracebacks
    ca_file: str | None = None  # replaces the system CA store when given
    timeout_s: float = 30.0  # for each command, and for each step of connecting


def ssl_context(config: ImapConfig) -> ssl.SSLContext:
    # Certificates and host names are always verified; a private CA comes in as ca_file.
    return ssl.create_default_context(cafile=config.ca_file)


class ImapSession:
    """The state and plumbing under `ImapClient`'s commands (see the module docstring)."""

    capabilities: frozenset[str]

    def __init__(self, config: ImapConfig, protocol: PatchedProtocol) -> None:
        self._config = config
        self._protocol = protocol
        self._where = f"IMAP {config.host}:{config.port}"
        self._busy: str | None = None
        self._closed = False
        self.capabilities = frozenset()

    async def _greeting(self) -> None:
        # aioimaplib reads the greeting (and CAPABILITY) in a task of its own; a BYE greeting or
        # a dropped connection would leave us waiting, so race it against the loss.
        waiter = asyncio.ensure_future(self._protocol.wait("AUTH|NONAUTH"))
        lost = asyncio.ensure_future(self._protocol.lost.wait())
        try:
            await asyncio.wait({waiter, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            lost.cancel()
        if self._protocol.lost.is_set():
            raise ConnectionLostError(self._protocol.lost_reason or "connection closed")

    def _server_capabilities(self) -> frozenset[str]:
        return frozenset(str(c).upper() for c in self._protocol.capabilities)

    async def close(self) -> None:
        """LOGOUT with a short timeout and drop the connection; never raises.

        Called while another task is in `idle()`, it drops the connection, which ends that
        `idle()` with ConnectionLost.
        """
        if self._closed:
            return
        self._closed = True
        protocol = self._protocol
        try:
            if self._busy is None and not protocol.lost.is_set() and protocol.transport:
                async with asyncio.timeout(min(_LOGOUT_TIMEOUT_S, self._config.timeout_s)):
                    await protocol.logout()
        except Exception as exc:  # closing must not fail; CancelledError still propagates
            log.debug("%s: LOGOUT failed: %s", self._where, one_line(exc))
        finally:
            self._abort()

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self, command: str) -> Iterator[None]:
        if self._closed:
            raise ConnectionLost(f"{self._where}: {command} on a closed client")
        if self._busy is not None:
            raise ImapError(
                f"{self._where}: {command} while {self._busy} is running; "
                "an ImapClient serves one task at a time"
            )
        self._busy = command
        try:
            yield
        finally:
            self._busy = None

    async def _ok(self, label: str, start: Callable[[], Awaitable[Any]]) -> Any:
        response = await self._run(label, start)
        if response.result != "OK":
            raise ImapError(self._refused(label, response))
        return response

    async def _ok_synced(self, label: str, start: Callable[[], Awaitable[Any]]) -> Any:
        """`_ok`, except that a NO [EXPUNGEISSUED] is answered with a NOOP and one more try.

        That code (RFC 5530 section 3) says another session expunged some of the messages
        named, and this session has not been told yet; Dovecot refuses the whole command then.
        A NOOP delivers the pending EXPUNGEs (RFC 3501 section 6.1.2), after which the gone UIDs
        are simply absent from the UID set (section 6.4.8): two processes filing the same
        messages (a cron pass beside the daemon) both succeed.
        """
        response = await self._run(label, start)
        if response.result == "NO" and response.lines and (
            b"[EXPUNGEISSUED]" in bytes(response.lines[-1]).upper()
        ):
            log.debug("%s: %s: messages expunged by another session; NOOP and again",
                      self._where, label)
            await self._ok("NOOP", lambda: self._protocol.simple_command("NOOP"))
            response = await self._run(label, start)
        if response.result != "OK":
            raise ImapError(self._refused(label, response))
        return response

    async def _run(self, label: str, start: Callable[[], Awaitable[Any]]) -> Any:
        """Run one step under the command timeout, translating every failure."""
        if self._protocol.lost.is_set():
            raise ConnectionLost(f"{self._where}: {label}: {self._protocol.lost_reason}")
        try:
            async with asyncio.timeout(self._config.timeout_s):
                return await start()
        except TimeoutError as exc:
            # The command may still complete later; the connection's state is unknown.
            self._abort()
            raise ConnectionLost(
                f"{self._where}: {label} timed out after {self._config.timeout_s:g} s"
            ) from exc
        except (upstream.AioImapException, OSError, ValueError) as exc:
            raise self._translate(label, exc) from exc

    def _translate(self, label: str, exc: BaseException) -> ImapError:
        if isinstance(exc, ssl.SSLError):  # before the loss it causes
            self._abort()
            return ImapError(f"{self._where}: {label}: TLS failed: {one_line(exc)}")
        if isinstance(exc, ConnectionLostError) or self._protocol.lost.is_set():
            self._abort()
            reason = self._protocol.lost_reason or one_line(exc)
            return ConnectionLost(f"{self._where}: {label}: {reason}")
        detail = one_line(exc) or type(exc).__name__
        unresolved = unresolved_host(exc, self._config.host)
        if unresolved is not None:
            return ImapError(f"{self._where}: {label}: {unresolved}")
        if isinstance(exc, OSError) and exc.errno:
            detail = os.strerror(exc.errno)  # asyncio's own text is "Connect call failed (...)"
        if isinstance(exc, OSError) and self._protocol.transport is not None:
            self._abort()
            return ConnectionLost(f"{self._where}: {label}: {detail}")
        return ImapError(f"{self._where}: {label}: {detail}")

    def _refused(self, label: str, response: Any) -> str:
        text = one_line(response.lines[-1]) if response.lines else ""
        return f"{self._where}: {label} failed: {response.result} {text}".rstrip()

    def _abort(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
