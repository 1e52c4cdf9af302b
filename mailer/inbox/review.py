"""Settling the review queue by hand: a person names the customer, records the opt-in a
request asked for, or dismisses the request.

Resolving calls `change.opt_out` with the same arguments the processor gives it, so it opts
out, records consent events (source `email`, reference: the request's Message-ID) and queues
the confirmation, threaded to the request, exactly as an automatic match would. Once settled
(either way), the message is filed from the review folder into the processed folder, so the
review folder holds only what still waits for a person; the settlement stands in the database
even if the IMAP server cannot be reached at that moment.

`record_opt_in` settles an item marked "opt back in" (`inbox.optback`): mail never opts anyone
in by itself, so a reviewer who has read the request records it, through
`consent.change.change_consent` with the request as the evidence (source `email (reviewed)`,
the reviewer as actor, the request's Message-ID as reference).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from mailer.consent import change
from mailer.consent.change import Evidence, change_consent
from mailer.errors import BadInput, ImapError, NotFound, Refused
from mailer.inbox.config import InboxConfig
from mailer.inbox.imap import ImapClient, ImapConfig
from mailer.inbox.optback import OPT_BACK_IN
from mailer.store import customers as customer_store
from mailer.store import inbox as inbox_store
from mailer.store.db import Connection, transaction
from mailer.store.evidence import EventEvidence

log = logging.getLogger(__name__)

# Filing is a courtesy after the settlement has committed: a person waits for it, so it gives
# up after this long rather than hang on a server that stopped answering.
FILE_TIMEOUT_S = 15.0


async def resolve(
    conn: Connection, config: InboxConfig, item_id: int,
    customer_email: str | Sequence[str], *, actor: str = "",
) -> inbox_store.ReviewItem:
    """Opt the named customer (or customers) out for this request; return the item (for
    `file_settled`). `actor` names the person, for the consent history."""
    emails = [customer_email] if isinstance(customer_email, str) else list(customer_email)
    async with transaction(conn):
        item = await inbox_store.review_item(conn, item_id)
        if item is None:
            raise NotFound(f"review item {item_id} does not exist")
        if item.status != "open":
            raise Refused(f"review item {item_id} is already {item.status}")
        ids: list[int] = []
        for address in emails:
            customer = await customer_store.get_by_email(conn, address)
            if customer is None:
                raise NotFound(f"no customer with email {address}")
            ids.append(customer.id)
        if not ids:
            raise NotFound(f"review item {item_id}: no customer named")
        ids = sorted(set(ids))
        await change.opt_out(
            conn,
            [change.Refusal(customer_ids=tuple(ids), reference=item.message_id,
                            thread=change.Thread(subject=item.subject,
                                                 message_id=item.message_id),
                            evidence=_request_evidence(item, item_id))],
            config.categories, source="email", actor=actor,
            confirmation_interval_h=config.confirmation_interval_h)
        await inbox_store.settle_review(
            conn, item_id, status="resolved",
            settlement=", ".join(f"customer {i}" for i in ids))
    log.info("review item %s resolved: customers %s", item_id, ids)
    return item


REVIEWED_EMAIL = "email (reviewed)"


async def record_opt_in(
    conn: Connection, item_id: int, customer_email: str,
    categories: Sequence[str], *, actor: str,
) -> inbox_store.ReviewItem:
    """Opt the named customer in to `categories`, with this request as the evidence; return
    the item (for `file_settled`). Refused for an item not marked "opt back in" or not open:
    an opt-out request is never turned into an opt-in."""
    if not categories:
        raise BadInput("choose at least one kind of email to turn back on")
    async with transaction(conn):
        item = await inbox_store.review_item(conn, item_id)
        if item is None:
            raise NotFound(f"review item {item_id} does not exist")
        if item.status != "open":
            raise Refused(f"review item {item_id} is already {item.status}")
        if item.marked != OPT_BACK_IN:
            raise Refused(f"review item {item_id} does not ask to opt back in")
        customer = await customer_store.get_by_email(conn, customer_email)
        if customer is None:
            raise NotFound(f"no customer with email {customer_email}")
        change = await change_consent(
            conn, customer.id, dict.fromkeys(categories, True),
            Evidence(source=REVIEWED_EMAIL, reference=item.message_id or f"review item {item_id}",
                     actor=actor, details=_request_evidence(item, item_id)))
        turned_on = ", ".join(change.turned_on) or "nothing new"
        await inbox_store.settle_review(
            conn, item_id, status="resolved",
            settlement=f"customer {customer.id} opted in: {turned_on}")
    log.info("review item %s: opt-in recorded for customer %s: %s", item_id, customer.id,
             list(change.turned_on))
    return item


async def file_settled(imap: ImapConfig, config: InboxConfig, message_id: str, *,
                       timeout_s: float = FILE_TIMEOUT_S) -> str:
    """Move a settled request from the review folder to the processed folder, within
    `timeout_s` in all; '' when done (or nothing to move), else one line saying why it stays
    in the review folder for now. The settlement stands in the database either way."""
    if not message_id:
        return ""
    try:
        async with asyncio.timeout(timeout_s):
            client = await ImapClient.connect(imap)
            try:
                await _move_settled(client, config, message_id)
            finally:
                await client.close()
    except (ImapError, TimeoutError) as exc:
        why = str(exc) or f"IMAP server {imap.host}: no answer within {timeout_s:g} s"
        log.warning("review: settled request stays in %s for now: %s", config.review_folder, why)
        return f"the message stays in {config.review_folder} for now: {why}"
    return ""


async def _move_settled(client: ImapClient, config: InboxConfig, message_id: str) -> int:
    """How many moved (0 when a person already moved it)."""
    await client.ensure_folder(config.processed_folder)
    await client.select(config.review_folder)
    uids = await client.uids_with_message_id(message_id)
    await client.move_many(uids, config.processed_folder)
    return len(uids)


async def dismiss(conn: Connection, item_id: int) -> inbox_store.ReviewItem:
    """Close the item without changing anyone; return it (for `file_settled`)."""
    async with transaction(conn):
        item = await inbox_store.review_item(conn, item_id)
        if item is None:
            raise NotFound(f"review item {item_id} does not exist")
        if not await inbox_store.settle_review(conn, item_id, status="dismissed",
                                               settlement="dismissed"):
            raise Refused(f"review item {item_id} is already {item.status}")
    log.info("review item %s dismissed", item_id)
    return item


def _request_evidence(item: inbox_store.ReviewItem, item_id: int) -> EventEvidence:
    """What a reviewed request proves: the review item and the message it holds."""
    return EventEvidence(message_id=item.message_id, message_from=item.sender,
                         review_item=item_id)
