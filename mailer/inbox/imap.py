"""The IMAP client the inbox worker talks through: a thin async wrapper over aioimaplib.

It owns the connection (TLS, STARTTLS, LOGIN), puts a timeout on every command, and turns every
failure into one of two exceptions, each a single line naming host:port and the command:

    ImapError            any failure: refused connection, TLS, NO/BAD, a malformed response
     +-- ConnectionLost  the connection is gone or unusable (dropped, BYE, a command timed out):
                         the caller throws this client away and connects a new one

The workarounds for aioimaplib's own bugs live in `mailer.inbox.aioimaplib_fixes`, and what is
sent and read on the wire (mailbox names, UID sets, FETCH items) in `mailer.inbox.imap_wire`.
One client serves one task at a time; `close()` may be called from another task to end a
running `idle()`.

The connection's state and the plumbing every command goes through (one command at a time,
the timeout, the translation of failures) are `ImapSession`, in `mailer.inbox.imap_session`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from aioimaplib import aioimaplib as upstream

from mailer.errors import ConnectionLost, ImapError
from mailer.inbox.aioimaplib_fixes import PatchedProtocol
from mailer.inbox.imap_session import ImapConfig, ImapSession, ssl_context
from mailer.inbox.imap_wire import (
    FetchedHeader,
    encode_mailbox_name,
    fetched_bodies,
    fetched_headers,
    one_line,
    search_uids,
    uid_set,
    uidvalidity,
)

__all__ = ["ImapClient", "ImapConfig"]

log = logging.getLogger(__name__)

_LOGOUT_TIMEOUT_S = 5.0


class ImapClient(ImapSession):
    """One logged-in IMAP connection. Create with `await ImapClient.connect(config)`."""

    # -- connecting ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, config: ImapConfig) -> ImapClient:
        """Connect, secure, LOGIN (unless username is ""), then learn the capabilities."""
        loop = asyncio.get_running_loop()
        protocol = PatchedProtocol(loop)
        client = cls(config, protocol)
        context = ssl_context(config) if config.security in ("tls", "starttls") else None
        try:
            await client._run(
                "connect",
                lambda: loop.create_connection(
                    lambda: protocol,
                    config.host,
                    config.port,
                    ssl=context if config.security == "tls" else None,
                ),
            )
            await client._run("greeting", client._greeting)
            if config.security == "starttls":
                if "STARTTLS" not in client._server_capabilities():
                    raise ImapError(f"{client._where}: server does not offer STARTTLS")
                assert context is not None
                await client._ok("STARTTLS", lambda: protocol.starttls(context, config.host))
            if config.username and protocol.state == upstream.NONAUTH:
                if "LOGINDISABLED" in client._server_capabilities():
                    raise ImapError(
                        f"{client._where}: server refuses LOGIN on this connection "
                        "(LOGINDISABLED); use security tls or starttls"
                    )
                await client._ok(
                    f"LOGIN as {config.username!r}",
                    lambda: protocol.login(config.username, config.password),
                )
            await client._run("CAPABILITY", protocol.capability)
        except BaseException:
            client._abort()
            raise
        client.capabilities = client._server_capabilities()
        log.info(
            "IMAP connected to %s:%s as %r (%s)",
            config.host,
            config.port,
            config.username,
            config.security,
        )
        log.debug("IMAP capabilities: %s", " ".join(sorted(client.capabilities)))
        return client

    async def __aenter__(self) -> ImapClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- commands -----------------------------------------------------------------------------

    async def ensure_folder(self, name: str) -> None:
        """CREATE the folder unless it exists already."""
        mailbox = encode_mailbox_name(name)
        with self._exclusive("CREATE"):
            response = await self._run(
                f"CREATE {mailbox}", lambda: self._protocol.simple_command("CREATE", mailbox)
            )
            if response.result == "OK":
                log.info("IMAP created folder %r", name)
                return
            # [ALREADYEXISTS] (RFC 5530) is not sent by every server: ask LIST instead.
            listed = await self._ok(
                f"LIST {mailbox}", lambda: self._protocol.simple_command("LIST", '""', mailbox)
            )
            if len(listed.lines) < 2:  # no "* LIST" line before the tagged status
                raise ImapError(self._refused(f"CREATE {mailbox}", response))

    async def select(self, folder: str) -> int:
        """SELECT the folder; returns its UIDVALIDITY."""
        mailbox = encode_mailbox_name(folder)
        with self._exclusive("SELECT"):
            response = await self._ok(f"SELECT {mailbox}", lambda: self._protocol.select(mailbox))
        # SELECT's EXISTS describes the mailbox as it is, not news (see `idle`).
        self._protocol.new_mail_hint = False
        validity = uidvalidity(response.lines)
        if validity is None:
            raise ImapError(f"{self._where}: SELECT {mailbox} returned no UIDVALIDITY")
        return validity

    async def uids_above(self, last_uid: int) -> list[int]:
        """UIDs greater than last_uid in the selected folder, ascending."""
        criteria = f"{last_uid + 1}:*"
        uids: set[int] = set()
        with self._exclusive("UID SEARCH"):
            # A server may announce mail that arrived since the last command only after the
            # SEARCH results (Dovecot does), leaving it out of them: search again once it has.
            for _ in range(3):
                self._protocol.new_mail_hint = False
                response = await self._ok(
                    f"UID SEARCH UID {criteria}",
                    lambda: self._protocol.search("UID", criteria, charset=None, by_uid=True),
                )
                uids = search_uids(response.lines)
                if not self._protocol.new_mail_hint:
                    break
        # "N:*" always includes the highest UID even when it is below N (RFC 3501 6.4.8).
        return sorted(uid for uid in uids if uid > last_uid)

    async def uids_with_message_id(self, message_id: str) -> list[int]:
        """UIDs in the selected folder whose Message-ID header holds `message_id`
        (UID SEARCH HEADER, a substring match: RFC 3501 6.4.4)."""
        if not message_id or not message_id.isascii() or any(c in message_id for c in "\r\n"):
            return []
        value = '"' + message_id.replace("\\", "\\\\").replace('"', '\\"') + '"'
        with self._exclusive("UID SEARCH"):
            response = await self._ok(
                f"UID SEARCH HEADER Message-ID {value}",
                lambda: self._protocol.search(
                    "HEADER", "Message-ID", value, charset=None, by_uid=True
                ),
            )
        return sorted(search_uids(response.lines))

    async def uids_search(self, *criteria: str) -> list[int]:
        """UIDs in the selected folder matching SEARCH `criteria` (RFC 3501 6.4.4), e.g.
        `("TEXT", quoted(term))` for data rights, `("BEFORE", "1-Jan-2026")` for retention."""
        with self._exclusive("UID SEARCH"):
            response = await self._ok(
                f"UID SEARCH {' '.join(criteria)}",
                lambda: self._protocol.search(*criteria, charset="UTF-8", by_uid=True),
            )
        return sorted(search_uids(response.lines))

    async def delete_many(self, uids: Sequence[int]) -> None:
        """Remove messages for good: UID STORE \\Deleted, then UID EXPUNGE of just those UIDs
        (RFC 4315; a plain EXPUNGE would also remove what other clients flagged). Gone UIDs
        are a no-op, so a retried clean-up is harmless."""
        if not uids:
            return
        selection = uid_set(sorted(set(uids)))
        with self._exclusive("UID EXPUNGE"):
            await self._ok_synced(
                f"UID STORE {selection} +FLAGS.SILENT (\\Deleted)",
                lambda: self._protocol.store(selection, "+FLAGS.SILENT", r"(\Deleted)",
                                             by_uid=True))
            if "UIDPLUS" not in self.capabilities:
                raise ImapError(f"{self._where}: no UIDPLUS: cannot expunge only our messages")
            await self._ok_synced(f"UID EXPUNGE {selection}",
                                  lambda: self._protocol.expunge(selection, by_uid=True))

    async def fetch_headers(self, uids: Sequence[int], batch: int = 200) -> list[FetchedHeader]:
        """Header block and size of each UID still present, ascending; never sets \\Seen.

        Fetched `batch` UIDs at a time: aioimaplib cannot take very long responses (see
        aioimaplib_fixes, fix 1) and a batch bounds the memory one response takes.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        wanted = sorted(set(uids))
        result: list[FetchedHeader] = []
        with self._exclusive("UID FETCH"):
            for start in range(0, len(wanted), batch):
                chunk = wanted[start : start + batch]
                selection = uid_set(chunk)
                label = f"UID FETCH {selection} (BODY.PEEK[HEADER])"
                response = await self._ok(
                    label,
                    functools.partial(
                        self._protocol.fetch,
                        selection,
                        "(UID RFC822.SIZE BODY.PEEK[HEADER])",
                        by_uid=True,
                    ),
                )
                found = fetched_headers(response.lines, set(chunk))
                result.extend(found[uid] for uid in sorted(found))
        log.debug("IMAP fetched %d of %d headers", len(result), len(wanted))
        return result

    async def fetch_message(self, uid: int) -> bytes | None:
        """The whole raw message (BODY.PEEK[], never sets \\Seen); None if the UID is gone."""
        return (await self.fetch_messages([uid])).get(uid)

    async def fetch_messages(self, uids: Sequence[int], batch: int = 200) -> dict[int, bytes]:
        """Whole raw messages by UID (BODY.PEEK[]), `batch` per command; gone UIDs are absent."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        wanted = sorted(set(uids))
        result: dict[int, bytes] = {}
        with self._exclusive("UID FETCH"):
            for start in range(0, len(wanted), batch):
                chunk = wanted[start : start + batch]
                selection = uid_set(chunk)
                response = await self._ok(
                    f"UID FETCH {selection} (BODY.PEEK[])",
                    functools.partial(
                        self._protocol.fetch, selection, "(UID BODY.PEEK[])", by_uid=True
                    ),
                )
                result.update(fetched_bodies(response.lines, set(chunk)))
        return result

    async def move(self, uid: int, folder: str) -> None:
        """Move one message; see move_many."""
        await self.move_many([uid], folder)

    async def move_many(self, uids: Sequence[int], folder: str) -> None:
        """Move messages; UIDs that no longer exist are a no-op (RFC 3501 6.4.8), also when
        another session removed them a moment ago (see `_ok_synced`).

        UID MOVE (RFC 6851) where offered; otherwise UID COPY, then UID STORE \\Deleted, then
        UID EXPUNGE of just those UIDs (RFC 4315) -- a plain EXPUNGE would also remove messages
        other clients flagged, so without UIDPLUS the originals are left flagged \\Deleted.
        """
        if not uids:
            return
        mailbox = encode_mailbox_name(folder)
        selection = uid_set(sorted(set(uids)))
        with self._exclusive("UID MOVE"):
            if "MOVE" in self.capabilities:
                await self._ok_synced(
                    f"UID MOVE {selection} {mailbox}",
                    lambda: self._protocol.move(selection, mailbox, by_uid=True),
                )
                return
            await self._ok_synced(
                f"UID COPY {selection} {mailbox}",
                lambda: self._protocol.copy(selection, mailbox, by_uid=True),
            )
            await self._ok_synced(
                f"UID STORE {selection} +FLAGS.SILENT (\\Deleted)",
                lambda: self._protocol.store(
                    selection, "+FLAGS.SILENT", r"(\Deleted)", by_uid=True
                ),
            )
            if "UIDPLUS" in self.capabilities:
                await self._ok_synced(
                    f"UID EXPUNGE {selection}",
                    lambda: self._protocol.expunge(selection, by_uid=True),
                )
            else:
                log.warning(
                    "IMAP %s:%s has no UIDPLUS: %d message(s) copied to %r and left flagged "
                    "\\Deleted",
                    self._config.host,
                    self._config.port,
                    len(uids),
                    folder,
                )

    async def append(self, folder: str, message: bytes) -> None:
        """APPEND a raw message (for tests, the demo and benchmarks)."""
        mailbox = encode_mailbox_name(folder)
        with self._exclusive("APPEND"):
            await self._ok(
                f"APPEND {mailbox} ({len(message)} bytes)",
                lambda: self._protocol.append(message, mailbox),
            )

    async def noop(self) -> None:
        with self._exclusive("NOOP"):
            await self._ok("NOOP", lambda: self._protocol.simple_command("NOOP"))

    async def idle(self, timeout_s: float, *, idling: asyncio.Event | None = None) -> bool:
        """Wait in IDLE (RFC 2177) until the server announces new mail (True) or timeout_s.

        New mail is an EXISTS that makes the mailbox grow; expunges and RECENT alone are not.
        Ends with DONE and the tagged OK. Raises ConnectionLost on BYE or a dropped connection.
        Mail announced while another command ran since the last `uids_above` counts as news
        too: it returns True at once, since the server will not announce it a second time.
        The caller keeps timeout_s under RFC 2177's 29 minutes.

        `idling`, when given, is set while the server has accepted IDLE (its "+" continuation,
        RFC 2177 3) and cleared when the IDLE ends: from the moment it is set, new mail is
        announced, so whoever waits on it (a test) knows a delivery will be noticed.
        """
        if "IDLE" not in self.capabilities:
            raise ImapError(f"{self._where}: server does not support IDLE")
        protocol = self._protocol
        with self._exclusive("IDLE"):
            if protocol.new_mail_hint:
                protocol.new_mail_hint = False
                return True
            while not protocol.idle_queue.empty():  # leftovers from an earlier IDLE
                protocol.idle_queue.get_nowait()
            idle_task = await self._run("IDLE", self._start_idle)
            if idling is not None:
                idling.set()
            try:
                news = await self._wait_for_news(idle_task, timeout_s)
            except asyncio.CancelledError:
                # No awaiting here: the next command waits for IDLE's tagged OK by itself.
                if not idle_task.done() and not protocol.lost.is_set():
                    protocol.idle_done()
                raise
            except BaseException:
                self._abort()
                raise
            finally:
                if idling is not None:
                    idling.clear()
            if not idle_task.done():
                protocol.idle_done()
            await self._ok("DONE", lambda: idle_task)
        if news:
            protocol.new_mail_hint = False
        return news

    async def _start_idle(self) -> asyncio.Future[Any]:
        protocol = self._protocol
        idle_task: asyncio.Future[Any] = asyncio.ensure_future(protocol.idle())
        idle_task.add_done_callback(_consume_exception)
        accepted = asyncio.ensure_future(protocol.wait_for_idle_response())
        try:
            await asyncio.wait({idle_task, accepted}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Half-started IDLE: the connection's state is unknown, so it is dropped.
            idle_task.cancel()
            self._abort()
            raise
        finally:
            accepted.cancel()
        if idle_task.done():  # no "+ idling": refused, or the connection went
            response = idle_task.result()
            raise ImapError(self._refused("IDLE", response))
        return idle_task

    async def _wait_for_news(self, idle_task: asyncio.Future[Any], timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        queue = self._protocol.idle_queue
        while (remaining := deadline - loop.time()) > 0:
            getter = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait(
                    {getter, idle_task}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                getter.cancel()
            if getter.done() and not getter.cancelled():
                lines = [bytes(line) for line in getter.result()]
                bye = next((line for line in lines if line.upper().startswith(b"BYE")), None)
                if bye is not None:
                    raise ConnectionLost(f"{self._where}: server said {one_line(bye)} during IDLE")
                if self._protocol.new_mail_hint:  # EXISTS grew
                    return True
                continue  # "* OK Still here", EXPUNGE, RECENT, flag changes: not new mail
            if idle_task.done():  # IDLE ended without our DONE
                if idle_task.cancelled():
                    raise ConnectionLost(f"{self._where}: IDLE was cancelled")
                error = idle_task.exception()
                if error is not None:
                    raise self._translate("IDLE", error) from error
                raise ConnectionLost(self._refused("IDLE ended by the server", idle_task.result()))
        return False


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # IDLE's own future fails when the connection drops; that is reported by `idle` instead.
    if not future.cancelled():
        future.exception()
