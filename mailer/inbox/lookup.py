"""The database half of matching: which customers a message's clues name.

`match.extract_clues` reads the clues and `match.decide` judges them, both pure; this looks
them up, one query per kind of clue however many messages the clues come from. The inbox
pass calls it for a batch, the console for the one request a person is reviewing, so a
person sees exactly the customers the matcher weighed.

`answers_to_confirmations` is the database half of `optback`: which messages answer one of
the confirmations we sent (their In-Reply-To or References name its Message-ID).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailer.inbox.headers import Headers
from mailer.inbox.match import Clues, Lookup
from mailer.inbox.optback import threads_to
from mailer.store import customers as customer_store
from mailer.store import outbox as outbox_store
from mailer.store.db import Connection


async def look_up(conn: Connection, clues: Sequence[Clues]) -> Lookup:
    """Every customer any of `clues` names, by address, name key and company key."""
    addresses = [a for c in clues for a in (c.from_address, *c.body_addresses) if a]
    return Lookup(
        by_address=await customer_store.ids_by_address(conn, addresses),
        by_name=await customer_store.ids_by_name_key(conn, [k for c in clues for k in c.name_keys]),
        by_company=await customer_store.ids_by_company_key(
            conn, [k for c in clues for k in c.company_keys]),
    )


async def answers_to_confirmations(conn: Connection,
                                   headers: Mapping[int, Headers]) -> set[int]:
    """Which of these messages (by key) answer a confirmation we sent: one query."""
    threads = {n: (*h.in_reply_to, *h.references) for n, h in headers.items()
               if h.in_reply_to or h.references}
    if not threads:
        return set()
    ours = await outbox_store.confirmation_message_ids(
        conn, [i for ids in threads.values() for i in ids])
    return {n for n, ids in threads.items() if threads_to(ids, ours)}
