"""The senders of one campaign: every daemon that is up sends it, each under a lease of its own.

A sender holds the lease `campaign:{id}:{holder}` (`store.leases`) and renews it as long as it
sends; each row it claims names it (`campaign_recipients.claimed_by`). Rows left in 'sending'
by a sender that is gone go back to pending: its lease has expired (or its process is seen dead
on this host), the lease is removed first (conditional on it still being expired, so a renewal
that got in first wins, and a sender that was only slow finds its lease gone and stops), then
its rows are requeued, behind the fresh ones. A live sender's rows are never taken back.

Lease times come from `store.leases.now_s`: the database's clock on PostgreSQL.
"""

from __future__ import annotations

import logging

from mailer.clock import Clock
from mailer.store import campaigns as store
from mailer.store import leases
from mailer.store.db import transaction
from mailer.store.engine import Connection
from mailer.store.leases import Holder

log = logging.getLogger(__name__)


def senders_prefix(campaign_id: int) -> str:
    return f"campaign:{campaign_id}:"


def sender_lease(campaign_id: int, holder_id: str) -> str:
    """The lease one sender of the campaign holds while it sends."""
    return f"{senders_prefix(campaign_id)}{holder_id}"


async def has_work(conn: Connection, campaign_id: int, *, now_s: float, me: Holder) -> bool:
    """Whether `me` joining the campaign (status 'sending') would do anything: rows pending,
    rows of a gone sender to take back, or nothing left at all ('sent' is still to be
    written). False while every row left is in flight with a live sender."""
    if await store.has_pending(conn, campaign_id):
        return True
    claimants = await store.claimants(conn, campaign_id)
    if not claimants:
        return True
    for claimant in claimants:
        lease = await leases.lease_of(conn, sender_lease(campaign_id, claimant))
        if leases.takeable(lease, me, now_s=now_s):
            return True
    return False


async def requeue_abandoned(conn: Connection, campaign_id: int, *, now_s: float,
                            me: Holder) -> int:
    """Return to pending the rows of every sender of the campaign that is gone; how many.
    Runs inside the caller's transaction."""
    requeued = 0
    for claimant in await store.claimants(conn, campaign_id):
        if claimant == me.id:
            continue
        lease = await leases.lease_of(conn, sender_lease(campaign_id, claimant))
        if lease is not None and not await leases.break_lease(conn, lease, now_s=now_s,
                                                              host=me.host):
            continue  # alive (or renewed just now)
        # No lease: it was released or broken already (or the rows predate sender leases).
        count = await store.requeue_claims_of(conn, campaign_id, claimant)
        requeued += count
        log.warning("campaign %s: %s recipient(s) left in flight by sender %s, which is gone, "
                    "returned to pending after the fresh ones", campaign_id, count,
                    lease.holder if lease else claimant or "of an earlier version")
    return requeued


async def renew(conn: Connection, campaign_id: int, me: Holder, *, ttl_s: float,
                clock: Clock) -> int:
    """Renew `me`'s lease and take back the rows of senders that are gone; how many senders
    are live now, `me` included (0: `me`'s lease is gone, broken by another sender)."""
    async with transaction(conn, f"campaign {campaign_id}", exclusive=False):
        now = await leases.now_s(conn, clock)
        if not await leases.renew(conn, sender_lease(campaign_id, me.id), me, now_s=now,
                                  ttl_s=ttl_s):
            return 0
        await requeue_abandoned(conn, campaign_id, now_s=now, me=me)
        return await leases.live_count(conn, senders_prefix(campaign_id), now_s=now)


async def take_back_abandoned(conn: Connection, campaign_id: int, me: Holder, *,
                              clock: Clock) -> int:
    """`requeue_abandoned` in a transaction of its own."""
    async with transaction(conn, f"campaign {campaign_id}", exclusive=False):
        now = await leases.now_s(conn, clock)
        return await requeue_abandoned(conn, campaign_id, now_s=now, me=me)
