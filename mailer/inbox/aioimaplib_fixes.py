"""Every workaround for aioimaplib 2.0.3 that `mailer.inbox.imap` relies on, in one place.

They all live on `PatchedProtocol`, a subclass of aioimaplib's `IMAP4ClientProtocol`, so each can
be deleted on its own once upstream fixes it. `tests/inbox/test_imap.py` holds a "still broken
upstream" test per fix: when one of those starts failing, the matching fix can go.

1. `_handle_responses` recurses once per response line, so a response of about a thousand lines
   in one read raises RecursionError inside `data_received`; asyncio then closes the transport
   and the waiting command hangs (iroco-co/aioimaplib#110). Fixed: the same parser as a loop.
   The client still fetches in batches, which also bounds memory.
2. A lost connection only calls `conn_lost_cb`: pending commands (IDLE included) wait forever,
   and commands sent afterwards are written into a dead transport (#118). Fixed:
   `connection_lost` fails every pending command with `ConnectionLostError`, `lost` is set, and
   `execute` refuses new commands at once. An unsolicited BYE (greeting included, where
   upstream raises it inside a task nobody awaits) is remembered for the error message.
3. `LOGIN` does not quote the user name, and the debug log scrubs the raw password although the
   quoted one is sent, so a password holding `"` or `\\` is logged. Fixed: `login` quotes both
   and scrubs what is actually sent.
4. There is no STARTTLS. Added: `starttls` on `loop.start_tls`, dropping the capabilities learned
   before it (RFC 3501 section 6.2.1).
5. Untagged EXISTS arriving outside IDLE (RFC 3501 section 7.3.1 lets a server send it after
   any command) is logged and dropped, so mail announced during a FETCH would only be seen at the
   next IDLE timeout. Added: `exists` follows the mailbox size (EXISTS sets it, each EXPUNGE
   takes one off, section 7.4.1) and `new_mail_hint` is set whenever EXISTS makes it grow.
6. `FetchCommand.wait_data` rescans every line received so far on every new line, so a FETCH
   response costs time quadratic in its length (two thirds of a 200-message header fetch).
   Fixed: `LinearFetchCommand` looks back only to the last "N FETCH (" line, which is the same
   answer, and `execute` gives every FETCH that class.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from typing import Any

from aioimaplib import aioimaplib as upstream

__all__ = ["ConnectionLostError", "LinearFetchCommand", "PatchedProtocol"]

_SIZE_RE = re.compile(rb"^\* (\d+) (EXISTS|EXPUNGE)\s*$", re.IGNORECASE)
_BYE_RE = re.compile(rb"^\* BYE\b ?(.*)$", re.IGNORECASE)


class ConnectionLostError(upstream.AioImapException):  # type: ignore[misc]  # untyped base
    """The connection is gone: raised by pending and later commands (fix 2)."""


# aioimaplib ships no type information, so its classes are `Any` to mypy.
class LinearFetchCommand(upstream.FetchCommand):  # type: ignore[misc]  # untyped base
    """Fix 6: upstream's `wait_data` answer, looking back only to the last FETCH line."""

    def wait_data(self) -> bool:
        lines: list[Any] = self._resp_lines
        start = 0
        for index in range(len(lines) - 1, -1, -1):
            line = lines[index]
            if isinstance(line, bytes) and self.FETCH_MESSAGE_DATA_RE.match(line):
                start = index
                break
        tail = b"".join(line for line in lines[start:] if isinstance(line, bytes))
        return not upstream.matched_parenthesis(tail)


class PatchedProtocol(upstream.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol with the fixes listed in the module docstring."""

    pending_sync_command: Any
    transport: Any

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn_lost_cb: Callable[[Exception | None], None] | None = None,
    ) -> None:
        super().__init__(loop, conn_lost_cb)
        self.lost = asyncio.Event()
        self.lost_reason: str | None = None
        self.bye_text: str | None = None
        self.exists: int | None = None
        self.new_mail_hint = False

    # Fix 1: the upstream parser with its tail recursion turned into a loop, statement for
    # statement (every recursive call there is the last thing the function does).
    def _handle_responses(
        self,
        data: bytes,
        line_handler: Callable[[bytes, Any], Any],
        current_cmd: Any = None,
    ) -> None:
        while True:
            if not data:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise upstream.IncompleteRead(current_cmd)
                return

            if current_cmd is not None and current_cmd.wait_literal_data():
                data = current_cmd.append_literal_data(data)
                if current_cmd.wait_literal_data():
                    raise upstream.IncompleteRead(current_cmd)

            line, separator, tail = data.partition(upstream.CRLF)
            if not separator:
                raise upstream.IncompleteRead(current_cmd, data)

            cmd = line_handler(line, current_cmd)

            begin_literal = upstream.literal_data_re.match(line)
            if begin_literal:
                size = int(begin_literal.group("size"))
                if cmd is None:
                    cmd = upstream.Command("NIL", "unused")
                cmd.begin_literal_data(size)
                data, current_cmd = tail, cmd
            elif cmd is not None and cmd.wait_data():
                data, current_cmd = tail, cmd
            else:
                data, current_cmd = tail, None

    # Fix 2: fail what is pending, refuse what comes next.
    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.describe_loss(exc)
        self.lost_reason = reason
        pending = [self.pending_sync_command, *self.pending_async_commands.values()]
        self.pending_sync_command = None
        self.pending_async_commands.clear()
        for command in pending:
            if command is not None and not command._event.is_set():
                command._exception = ConnectionLostError(reason)
                command.close(reason.encode(), "BYE")
        self.lost.set()
        super().connection_lost(exc)

    def describe_loss(self, exc: BaseException | None) -> str:
        if self.bye_text is not None:
            return f"server said BYE: {self.bye_text}"
        if exc is not None:
            return f"connection lost: {exc}"
        return "connection closed by the server"

    async def execute(self, command: Any, scrub: str | None = None) -> Any:
        if self.lost.is_set() or self.transport is None or self.transport.is_closing():
            raise ConnectionLostError(self.lost_reason or "connection closed")
        if type(command) is upstream.FetchCommand:  # fix 6
            command.__class__ = LinearFetchCommand
        return await super().execute(command, scrub=scrub)

    async def welcome(self, command: bytes) -> None:
        bye = _BYE_RE.match(command)
        if bye:  # e.g. "too many connections"; the server closes the connection next
            self.bye_text = bye.group(1).decode("utf-8", "replace").strip() or "(no text)"
            return
        await super().welcome(command)

    # Fixes 2 and 5 both watch untagged responses before aioimaplib routes (or drops) them.
    def _untagged_response(self, line: bytes) -> Any:
        size = _SIZE_RE.match(line)
        if size:
            number = int(size.group(1))
            if size.group(2).upper() == b"EXISTS":
                if self.exists is None or number > self.exists:
                    self.new_mail_hint = True
                self.exists = number
            elif self.exists:
                self.exists -= 1
        else:
            bye = _BYE_RE.match(line)
            sync = self.pending_sync_command
            if bye and not (sync is not None and sync.name == "LOGOUT"):
                self.bye_text = bye.group(1).decode("utf-8", "replace").strip() or "(no text)"
        return super()._untagged_response(line)

    # Fix 3
    async def login(self, user: str, password: str) -> Any:
        secret = upstream.quoted(password)
        async with self.state_condition:
            command = upstream.Command(
                "LOGIN", self.new_tag(), upstream.quoted(user), secret, loop=self.loop
            )
            response = await self.execute(command, scrub=secret)
            if response.result == "OK":
                self.state = upstream.AUTH
            self.state_condition.notify_all()
        return response

    # Fix 4
    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> Any:
        response = await self.execute(upstream.Command("STARTTLS", self.new_tag(), loop=self.loop))
        if response.result != "OK":
            return response
        # Anything the server sent after its OK but before the handshake is plaintext that an
        # attacker could have injected; it must not be read as if it came over TLS.
        self.incomplete_line = b""
        self.transport = await self.loop.start_tls(
            self.transport, self, context, server_hostname=server_hostname
        )
        await self.capability()
        return response
