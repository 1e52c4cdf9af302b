"""One reader per mailbox, whatever the number of daemons and hosts: the inbox lease.

Two sessions passing over one folder at once both decide nothing twice (the Message-ID is the
key), but both MOVE the same messages, and a server that moves by copying and expunging then
leaves two copies in Processed. So a mailbox is read by the daemon holding its lease
(`store.leases`, named `inbox`, or `inbox:<account>` for `[bounces.imap]`):

    stand by     try to take it every `ttl_s / 3`, and at once when a holder releases it (it
                 notifies `mailer_inbox` on PostgreSQL, `store.notify`)
    hold         renew it every `ttl_s / 3` on a connection of its own; each batch's transaction
                 checks it is still ours, so a holder that lost it (paused past its expiry)
                 decides nothing more; losing it ends the session, which stands by again
    release      when the session ends (stop, or a failure the supervisor retries), so another
                 daemon takes over at once

A holder that dies without releasing (kill -9, its host gone) is replaced within `ttl_s`
(at once by a daemon on the same host, which sees that the pid is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import StoreError
from mailer.inbox.config import InboxConfig
from mailer.lifecycle.supervise import describe, wait_any
from mailer.store import leases
from mailer.store.db import Connection, Location, open_db, transaction
from mailer.store.leases import Holder, new_holder
from mailer.store.notify import INBOX_CHANNEL, notify, wake_on

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0


def lease_name(config: InboxConfig) -> str:
    """`inbox` for the `[imap]` mailbox, `inbox:bounces` for `[bounces.imap]`."""
    return f"inbox:{config.account}" if config.account else "inbox"


@dataclass
class InboxLease:
    """One mailbox's lease as one daemon holds it (see the module docstring)."""

    db_location: Location
    name: str
    ttl_s: float = DEFAULT_TTL_S
    holder: Holder = field(default_factory=new_holder)
    clock: Clock = SYSTEM_CLOCK

    async def try_take(self, conn: Connection) -> bool:
        """Take the lease if it is free, expired, ours or its local holder is dead."""
        async with transaction(conn, f"taking the lease {self.name}"):
            # The database's clock on PostgreSQL: every host judges the lease by one clock.
            return await leases.acquire(conn, self.name, self.holder,
                                        now_s=await leases.now_s(conn, self.clock),
                                        ttl_s=self.ttl_s)

    async def wait_for_turn(self, conn: Connection, stop: asyncio.Event,
                            on_standby: Callable[[], None] = lambda: None) -> bool:
        """Stand by until we hold the lease (True) or `stop` is set (False); `on_standby` is
        called once if another daemon holds it now."""
        wake = asyncio.Event()
        listener = asyncio.ensure_future(wake_on(self.db_location, INBOX_CHANNEL, wake))
        try:
            told = False
            while not stop.is_set():
                wake.clear()
                if await self.try_take(conn):
                    log.info("%s: lease taken by %s", self.name, self.holder)
                    return True
                if not told:
                    current = await leases.lease_of(conn, self.name)
                    log.info("%s: standing by; %s holds the lease", self.name,
                             current.holder if current else "nobody")
                    told = True
                    on_standby()
                await wait_any(stop, wake, self.ttl_s / 3)
            return False
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def check(self, conn: Connection) -> None:
        """Inside a transaction about to record decisions: StoreError unless it is still ours
        (another daemon took it over after ours expired)."""
        if not await leases.holds(conn, self.name, self.holder):
            raise StoreError(f"{self.name}: the lease was taken over by another daemon; "
                             "standing by")

    @contextlib.asynccontextmanager
    async def held(self, conn: Connection, stop: asyncio.Event) -> AsyncIterator[asyncio.Event]:
        """While the body runs, renew the lease; yields an event set when `stop` is set or the
        lease is lost (the session's own stop). Releases the lease afterwards."""
        session_stop = asyncio.Event()
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep(stop, session_stop, lost),
                                     name=f"{self.name} keeper")
        try:
            yield session_stop
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await self.release(conn)
        if lost.is_set() and not stop.is_set():
            raise StoreError(f"{self.name}: the lease could not be renewed; standing by")

    async def _keep(self, stop: asyncio.Event, session_stop: asyncio.Event,
                    lost: asyncio.Event) -> None:
        # Its own connection: a renewal must not run inside the session's batch transaction.
        try:
            async with open_db(self.db_location) as conn:
                while not stop.is_set():
                    await wait_any(stop, asyncio.Event(), self.ttl_s / 3)
                    if stop.is_set():
                        break
                    async with transaction(conn, f"renewing the lease {self.name}"):
                        renewed = await leases.renew(
                            conn, self.name, self.holder,
                            now_s=await leases.now_s(conn, self.clock), ttl_s=self.ttl_s)
                    if not renewed:
                        log.warning("%s: the lease was taken over by another daemon", self.name)
                        lost.set()
                        break
        except StoreError as exc:
            # Unable to prove we hold it: stop reading rather than risk a second reader.
            log.warning("%s: cannot renew the lease: %s", self.name, describe(exc))
            lost.set()
        finally:
            session_stop.set()

    async def release(self, conn: Connection) -> None:
        """Give the lease up and wake the daemons standing by; a failure is only logged (the
        lease then expires by itself)."""
        try:
            async with transaction(conn, f"releasing the lease {self.name}"):
                await leases.release(conn, self.name, self.holder)
                await notify(conn, INBOX_CHANNEL)
        except StoreError as exc:
            log.warning("%s: could not release the lease: %s", self.name, describe(exc))
