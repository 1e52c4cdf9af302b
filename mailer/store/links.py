"""The ledger's answer to a link: was the message that carried it sent to that customer?

A signed token proves only that we made it, not that we mailed it: a preview or a draft makes
tokens too. The public pages open (and change consent) only for a link whose message the
ledger shows as sent to the customer the token names: a campaign message (`campaign_recipients`
row 'sent'), a confirmation (`outbox` row 'sent'), or, for the first kind of token (a category,
no campaign), any campaign message sent to that customer.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailer.store.edge import translated
from mailer.store.engine import Connection


@translated("links: was the message sent")
async def campaign_message_sent(conn: Connection, customer_id: int,
                                campaign_id: int | None) -> bool:
    """Whether campaign `campaign_id`'s message went to this customer (`None`: any campaign's,
    for category tokens, which do not name their campaign)."""
    if campaign_id is None:
        # One primary-key lookup per campaign (there are few), not a scan of the ledger.
        sql = ("SELECT 1 FROM campaigns c WHERE EXISTS (SELECT 1 FROM campaign_recipients r "
               "WHERE r.campaign_id = c.id AND r.customer_id = ? AND r.status = 'sent') LIMIT 1")
        parameters: tuple[int, ...] = (customer_id,)
    else:
        sql = ("SELECT 1 FROM campaign_recipients WHERE campaign_id = ? AND customer_id = ? "
               "AND status = 'sent'")
        parameters = (campaign_id, customer_id)
    rows = await conn.execute_fetchall(sql, parameters)
    return bool(list(rows))


@translated("links: was the confirmation sent")
async def confirmation_sent(conn: Connection, customer_id: int,
                            outbox_id: int) -> bool:
    """Whether confirmation `outbox_id` was sent, and to this customer."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM outbox WHERE id = ? AND customer_id = ? AND status = 'sent'",
        (outbox_id, customer_id))
    return bool(list(rows))


@translated("links: which messages were sent")
async def sent_campaign_messages(conn: Connection,
                                 pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which (campaign id, customer id) pairs the ledger shows sent: one index search per
    campaign and few hundred customers (the one-click group commit checks its whole batch at
    once). Grouped by campaign because a row-value IN would scan the ledger."""
    by_campaign: dict[int, set[int]] = {}
    for campaign_id, customer_id in pairs:
        by_campaign.setdefault(campaign_id, set()).add(customer_id)
    found: set[tuple[int, int]] = set()
    for campaign_id, customers in sorted(by_campaign.items()):
        wanted = sorted(customers)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            # By the primary key alone, the status read from the rows: with `status = 'sent'`
            # in the condition a planner without fresh statistics (a campaign's audience was
            # just written) walks every sent row of the campaign by the status index.
            condition, parameters = conn.one_of("customer_id", chunk)
            rows = await conn.execute_fetchall(
                "SELECT customer_id, status FROM campaign_recipients WHERE campaign_id = ? "
                f"AND {condition}", (campaign_id, *parameters))
            found.update((campaign_id, int(r[0])) for r in rows if r[1] == "sent")
    return found
