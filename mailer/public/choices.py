"""What an unsubscribe link does to consent: one click, or the choices on the preference page.

No HTTP here: the handlers call these with what the request said. Every change goes through
`mailer.consent.change`, the one place consent changes (turning off also skips the customer's
pending campaign mail in the same transaction). A saved page is one `change_consent` call, with
the link (the campaign it came from) as the evidence: the token proves who it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from mailer.categories import CATEGORIES
from mailer.categories import check as check_category
from mailer.consent.change import Evidence, Refusal, change_consent, opt_out
from mailer.mail.tokens import LinkToken
from mailer.store import customers as customer_store
from mailer.store import links as link_store
from mailer.store.db import Connection, transaction
from mailer.store.evidence import NO_EVIDENCE, EventEvidence

ONE_CLICK = "one-click"
PREFERENCE_PAGE = "preference page"


@dataclass(frozen=True)
class Outcome:
    """What one request changed. `found` is False when the customer no longer exists, `sent`
    when the ledger does not show the link's message sent to them (nothing changed either
    way)."""

    found: bool
    turned_off: tuple[str, ...] = ()
    turned_on: tuple[str, ...] = ()
    sent: bool = True

    @property
    def name(self) -> str:
        """One word for the request log line."""
        if not self.sent:
            return "message-not-sent"
        if not self.found:
            return "unknown-customer"
        if not (self.turned_off or self.turned_on):
            return "unchanged"
        parts = [f"off:{','.join(self.turned_off)}"] if self.turned_off else []
        parts += [f"on:{','.join(self.turned_on)}"] if self.turned_on else []
        return " ".join(parts)


@dataclass(frozen=True)
class Choices:
    """The preference page's wishes: every category, on or off."""

    wanted: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def everything_off(cls) -> Choices:
        return cls({c: False for c in CATEGORIES})

    @classmethod
    def ticked(cls, categories: Sequence[str]) -> Choices:
        """Exactly the ticked categories on, the others off. ValueError for one we do not
        have (a forged form, not a customer's mistake)."""
        for category in categories:
            check_category(category)
        return cls({c: c in categories for c in CATEGORIES})


async def was_sent(conn: Connection, link: LinkToken) -> bool:
    """Whether the ledger shows the message that carried `link` sent to its customer: only
    then is the link evidence that this customer is the one using it."""
    if link.confirmation_id is not None:
        return await link_store.confirmation_sent(conn, link.customer_id, link.confirmation_id)
    return await link_store.campaign_message_sent(conn, link.customer_id, link.campaign_id)


async def _sent(conn: Connection, links: Sequence[LinkToken]) -> list[bool]:
    """`was_sent` for each link; campaign links (nearly all) in one query."""
    found = await link_store.sent_campaign_messages(
        conn, [(link.campaign_id, link.customer_id) for link in links
               if link.campaign_id is not None and link.confirmation_id is None])
    return [(link.campaign_id, link.customer_id) in found
            if link.campaign_id is not None and link.confirmation_id is None
            else await was_sent(conn, link) for link in links]


async def one_click(conn: Connection, links: Sequence[LinkToken],
                    categories: Sequence[str], evidence: Sequence[EventEvidence] = ()
                    ) -> list[Outcome]:
    """RFC 8058 one-click for each link whose message was sent: opt out of `categories` at
    once, with no confirmation email (the mail provider already told the customer). All of
    them in one transaction (a group commit of the clicks that arrived together, see
    `OneClickWriter`); each customer's opt-out is whole in it, with its `evidence` (aligned
    with `links`). Outcomes in the order of `links`."""
    async with transaction(conn):
        sent = await _sent(conn, links)
        honoured = [link for link, ok in zip(links, sent, strict=True) if ok]
        # Each link's evidence, paired before the unsent ones are dropped.
        proofs = [evidence[i] if i < len(evidence) else NO_EVIDENCE for i in range(len(links))]
        found = {c.id for c in await customer_store.get_many(
            conn, sorted({link.customer_id for link in honoured}))}
        result = await opt_out(
            conn, [Refusal(customer_ids=(link.customer_id,), reference=link.reference,
                           evidence=proof)
                   for link, proof, ok in zip(links, proofs, sent, strict=True) if ok],
            categories, source=ONE_CLICK)
    return [Outcome(found=link.customer_id in found, sent=ok,
                    turned_off=tuple(result.changed.get(link.customer_id, ())))
            for link, ok in zip(links, sent, strict=True)]


class OneClickWriter:
    """Group commit for one-click: clicks that arrive while a transaction is running wait for
    it to end and then go together in the next one, so a burst of clicks costs a few
    transactions instead of one each. A click's answer waits for its own commit."""

    _MAX_BATCH = 200

    def __init__(self, db: Callable[[], AbstractAsyncContextManager[Connection]],
                 categories: Sequence[str]) -> None:
        self._db = db
        self._categories = tuple(categories)
        self._queue: list[tuple[LinkToken, EventEvidence, asyncio.Future[Outcome]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def click(self, link: LinkToken, evidence: EventEvidence = NO_EVIDENCE) -> Outcome:
        """One click's opt-out, committed with the clicks that came with it."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((link, evidence, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="one-click writer")
        return await future

    async def _write(self) -> None:
        while self._queue:
            batch = self._queue[:self._MAX_BATCH]
            del self._queue[:self._MAX_BATCH]
            try:
                async with self._db() as conn:
                    outcomes = await one_click(conn, [link for link, _, _ in batch],
                                               self._categories, [e for _, e, _ in batch])
            except BaseException as exc:  # every waiting click learns why, then the next batch
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                continue
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)


async def save(conn: Connection, link: LinkToken, choices: Choices,
               evidence: EventEvidence = NO_EVIDENCE) -> Outcome:
    """Apply exactly the chosen preferences in one transaction (consent events of source
    'preference page', each with `evidence`); the customer's pending mail of what they turned
    off is skipped."""
    async with transaction(conn):
        change = await change_consent(conn, link.customer_id, choices.wanted,
                                      Evidence(source=PREFERENCE_PAGE,
                                               reference=link.reference or "preference link",
                                               details=evidence))
    if not change.found:
        return Outcome(found=False)
    return Outcome(found=True, turned_off=change.turned_off, turned_on=change.turned_on)
