"""The one entry point that changes consent: every way a customer refuses mail, and every way
back in, ends here.

`change_consent` sets one customer's categories on or off with the `Evidence` that justifies it
(the preference page, a reviewed email, staff recording consent given by phone or in a shop);
an opt-in without evidence is refused. `opt_out` is the bulk refusal, called by the inbox
processor (an emailed request), review resolution (a person names the customer), and the
one-click link and complaint handling. For each customer it, in the caller's transaction:

1. turns the categories off (never on: no refusal opts anyone in),
2. records one consent event per preference that really changed (source, reference, actor,
   and the refusal's evidence: `store.evidence`),
3. skips that customer's pending campaign mail of those categories, so no campaign can mail
   them after the commit (`store.customers.turn_off` does 1-3 in bulk),
4. queues a confirmation to the address on file (`store.outbox`; `mailer.consent.confirmations`
   sends it) when the source calls for one (an emailed request does; one-click and a
   complaint do not:
   the mail provider already told them, and a confirmation to someone who just reported us
   as spam makes it worse).

An opt-in is only ever made by `change_consent`, from a source in
`store.customers.OPT_IN_SOURCES`: mail never opts anyone in by itself (a From address can be
forged), so an emailed request to opt back in waits in review for a person.

Because it is one transaction with the change that caused it, a crash leaves either all of it
or none of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import BadInput
from mailer.store import customers as customer_store
from mailer.store import outbox as outbox_store
from mailer.store.db import Connection
from mailer.store.evidence import NO_EVIDENCE, EventEvidence


@dataclass(frozen=True)
class Thread:
    """The request a confirmation answers, so it threads under it in the customer's client."""

    subject: str = ""
    message_id: str = ""
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Customers who refused mail through one request (one email, one click, one report)."""

    customer_ids: tuple[int, ...]
    reference: str  # the request's Message-ID, the campaign the link came from, ...
    thread: Thread | None = None  # set: queue a confirmation threaded to this request
    evidence: EventEvidence = NO_EVIDENCE  # what proves it, recorded with each event


@dataclass
class OptOutResult:
    """What one call changed."""

    # Per customer, the categories that were on and are now off.
    changed: dict[int, list[str]] = field(default_factory=dict)
    # Customers the refusals named that exist (whether or not anything changed).
    honoured: int = 0
    confirmations: int = 0


async def opt_out(
    conn: Connection,
    refusals: Sequence[Refusal],
    categories: Sequence[str],
    *,
    source: str,
    actor: str = "",
    confirmation_interval_h: float = 24.0,
    clock: Clock = SYSTEM_CLOCK,
) -> OptOutResult:
    """Opt out everyone `refusals` name, inside the caller's transaction (see the module).
    The confirmation window (`confirmation_interval_h`) ends at `clock.now()`."""
    result = OptOutResult()
    if not refusals:
        return result
    result.changed = await customer_store.turn_off(
        conn, [(cid, r.reference) for r in refusals for cid in r.customer_ids], categories,
        source=source, actor=actor,
        evidence=[r.evidence for r in refusals for _ in r.customer_ids])
    customers = {c.id: c for c in await customer_store.get_many(
        conn, sorted({cid for r in refusals for cid in r.customer_ids}))}
    confirmations: list[outbox_store.NewConfirmation] = []
    for refusal in refusals:
        for cid in refusal.customer_ids:
            customer = customers.get(cid)
            if customer is None:
                continue
            result.honoured += 1
            thread = refusal.thread
            if thread is None:
                continue
            confirmations.append(outbox_store.NewConfirmation(
                customer_id=customer.id,
                to_address=customer.email,  # the address on file, never the unknown sender
                to_name=customer.name,
                categories=tuple(categories),
                request_subject=thread.subject,
                in_reply_to=thread.message_id,
                refs=((*thread.references, thread.message_id) if thread.message_id
                      else thread.references),
            ))
    if confirmations:
        result.confirmations = await outbox_store.enqueue_confirmations(
            conn, confirmations, interval_h=confirmation_interval_h, now=clock.now())
    return result


@dataclass(frozen=True)
class Evidence:
    """Why a consent change may be made: where it came from and what proves it.

    `reference` is what the history shows as proof: the request's Message-ID for a reviewed
    email, the campaign a preference link came from, the words staff wrote down for a phone
    call. `details` holds what else proves it (`store.evidence`: the request's Message-ID,
    From, Date and authentication verdicts, the web client, the page's wording, the review
    item, the words staff wrote down), written with every consent event it causes.
    """

    source: str
    reference: str
    actor: str = ""
    details: EventEvidence = NO_EVIDENCE


@dataclass(frozen=True)
class ConsentChange:
    """What `change_consent` did to one customer."""

    found: bool
    turned_on: tuple[str, ...] = ()
    turned_off: tuple[str, ...] = ()


class MissingEvidence(BadInput):
    """An opt-in was asked for without the evidence that justifies it."""


async def change_consent(
    conn: Connection,
    customer_id: int,
    wanted: Mapping[str, bool],
    evidence: Evidence,
) -> ConsentChange:
    """Set each category in `wanted` on or off for one customer, inside the caller's
    transaction, recording `evidence` on every consent event. Turning off goes through
    `opt_out` (pending mail skipped, no confirmation: the person changing it sees the result).
    An opt-in (a category now off asked on) needs a non-empty `evidence.reference`
    (MissingEvidence) and a source that may opt anyone in (ValueError: a programming error).
    `wanted` may only name known categories (KeyError otherwise)."""
    customer = await customer_store.get(conn, customer_id)
    if customer is None:
        return ConsentChange(found=False)
    # Only a real opt-in needs evidence: a form that repeats a choice already on changes nothing.
    on = [c for c, value in wanted.items() if value and not customer.preferences[c]]
    off = [c for c, value in wanted.items() if not value]
    if on and not evidence.reference.strip():
        raise MissingEvidence("evidence is required to opt anyone in: say how they consented")
    result = await opt_out(
        conn, [Refusal(customer_ids=(customer_id,), reference=evidence.reference,
                       evidence=evidence.details)], off,
        source=evidence.source, actor=evidence.actor)
    turned_on = await customer_store.opt_in(
        conn, customer_id, on, source=evidence.source, reference=evidence.reference,
        actor=evidence.actor, evidence=evidence.details) if on else []
    return ConsentChange(found=True, turned_on=tuple(turned_on),
                         turned_off=tuple(result.changed.get(customer_id, ())))
