"""One pass over the inbox folder: the request pipeline, shared by `inbox process` and `run`.

New UIDs are taken in batches of `fetch_batch`; for each batch:

    headers (one FETCH BODY.PEEK[HEADER]) -> parse_headers -> classify
    -> bodies of the requests (one FETCH BODY.PEEK[]) -> examine (parse, extract clues)
    -> one transaction: look the clues up (one query per kind), plan (pure: decide each
       request, spot duplicates), write opt-outs + consent events + confirmations + inbound
       rows + review items + the UID high-water mark
At the end of the pass: a few large UID MOVEs per destination (Processed, Review), each
followed by marking those rows moved.

Ordering makes it crash-safe: the decisions commit before the moves, and each `inbound` row
remembers its destination, so a pass first finishes any move an earlier crash left undone and
a request is never decided twice (its Message-ID is the idempotency key). Ordinary mail is only
read with BODY.PEEK and never touched. A request that cannot be decided safely goes to review;
one that breaks parsing is moved to review too (Mailman's "shunt"), so one bad message never
blocks the queue.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from mailer import optout
from mailer.inbox.classify import Verdict, classify
from mailer.inbox.imap import FetchedHeader, ImapClient
from mailer.inbox.match import Clues, Lookup, decide, extract_clues
from mailer.inbox.parse import (
    Headers,
    MalformedMessage,
    parse_headers,
    parse_message,
)
from mailer.store import customers as customer_store
from mailer.store import inbox as inbox_store
from mailer.store.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboxRules:
    """What the processor needs to know, as plain values."""

    folder: str
    processed_folder: str
    review_folder: str
    subject: str
    categories: tuple[str, ...]
    own_addresses: frozenset[str]
    max_message_bytes: int
    fetch_batch: int
    confirmation_interval_h: float


@dataclass
class PassReport:
    """What one pass did; `as_json` is the `inbox process --json` output."""

    seen: int = 0
    requests: int = 0
    unsubscribed: int = 0
    review: int = 0
    ignored: int = 0
    failed: int = 0
    duplicates: int = 0
    confirmations: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "seen": self.seen,
            "requests": self.requests,
            "unsubscribed": self.unsubscribed,
            "review": self.review,
            "ignored": self.ignored,
            "failed": self.failed,
        }


async def prepare_folders(client: ImapClient, rules: InboxRules) -> None:
    await client.ensure_folder(rules.processed_folder)
    await client.ensure_folder(rules.review_folder)


async def run_pass(
    client: ImapClient, conn: aiosqlite.Connection, rules: InboxRules
) -> PassReport:
    """Process every message that arrived since the last pass; return what happened."""
    report = PassReport()
    uidvalidity = await client.select(rules.folder)
    state = await inbox_store.mailbox_state(conn, rules.folder)
    last_uid = 0
    if state is not None and state.uidvalidity == uidvalidity:
        last_uid = state.last_uid
    elif state is not None:
        log.warning("folder %s: UIDVALIDITY changed %s -> %s; rescanning",
                    rules.folder, state.uidvalidity, uidvalidity)
        await inbox_store.forget_stale_moves(conn, rules.folder, uidvalidity)

    await _finish_moves(client, conn, rules, uidvalidity)

    uids = await client.uids_above(last_uid)
    for start in range(0, len(uids), rules.fetch_batch):
        batch = uids[start : start + rules.fetch_batch]
        await _process_batch(client, conn, rules, uidvalidity, batch, report)
    # Moves go last, a few large UID MOVEs for the whole pass: each MOVE makes the server
    # rewrite the folder's index, so one per batch would cost more than all else together.
    await _finish_moves(client, conn, rules, uidvalidity)
    if report.seen or report.failed:
        log.info("pass over %s: %s", rules.folder, report.as_json())
    return report


@dataclass(frozen=True)
class Examined:
    """A request message after the pure stages: its clues, or why it cannot be decided."""

    uid: int
    headers: Headers
    key: str
    clues: Clues | None
    problem: str | None
    failed: bool = False


@dataclass(frozen=True)
class Outcome:
    """What happens to one request; decided without I/O by `plan`."""

    uid: int
    headers: Headers
    key: str
    kind: str  # "unsubscribed" | "review" | "duplicate"
    customer_ids: tuple[int, ...]
    detail: str


async def _process_batch(
    client: ImapClient,
    conn: aiosqlite.Connection,
    rules: InboxRules,
    uidvalidity: int,
    batch: list[int],
    report: PassReport,
) -> None:
    """Headers for the batch, bodies of its requests, then one transaction.

    The decisions and the high-water mark commit together, each decided request as an
    `inbound` row with moved = 0 that `_finish_moves` acts on. A crash before the commit redoes
    the batch; a crash after it is finished by the next pass's moves, deciding nothing again.
    """
    requests: list[tuple[FetchedHeader, Headers]] = []
    for item in await client.fetch_headers(batch, batch=rules.fetch_batch):
        report.seen += 1
        headers = parse_headers(item.header)
        verdict = classify(headers, configured_subject=rules.subject,
                           own_addresses=rules.own_addresses)
        if verdict is Verdict.REQUEST:
            report.requests += 1
            requests.append((item, headers))
        else:
            report.ignored += 1
    wanted = [item.uid for item, _ in requests if item.size <= rules.max_message_bytes]
    bodies = await client.fetch_messages(wanted, batch=rules.fetch_batch) if wanted else {}

    examined: list[Examined] = []
    for item, headers in requests:
        if item.size > rules.max_message_bytes:
            examined.append(Examined(
                item.uid, headers, _message_key(headers, item.header), None,
                f"message is {item.size} bytes, over the {rules.max_message_bytes}-byte cap"))
            continue
        raw = bodies.get(item.uid)
        if raw is not None:  # None: expunged by another client between the two fetches
            examined.append(examine(item.uid, headers, raw, rules))

    outcomes: list[Outcome] = []
    async with transaction(conn):
        if examined:
            known = await inbox_store.existing_keys(conn, [e.key for e in examined])
            outcomes = plan(examined, known, await _lookup(conn, examined), rules)
            await _apply(conn, rules, uidvalidity, outcomes, report)
        await _advance(conn, rules.folder, uidvalidity, max(batch))
    report.failed += sum(e.failed for e in examined)
    for outcome in outcomes:
        # A review reason can quote a name or an address: ids only at INFO.
        shown = outcome.detail if outcome.kind != "review" else "see the review queue"
        log.info("uid %s: %s: %s", outcome.uid, outcome.kind, shown)
        log.debug("uid %s: %s", outcome.uid, outcome.detail)


def examine(uid: int, headers: Headers, raw: bytes, rules: InboxRules) -> Examined:
    """Parse a request and extract its clues; never raises.

    A malformed message becomes a problem for review. Anything else that breaks here is a bug
    meeting hostile input: the message is shunted to review (Mailman's "shunt" queue) and
    counted as failed, so one bad message never blocks the rest.
    """
    key = _message_key(headers, raw)
    try:
        parsed = parse_message(raw, max_bytes=rules.max_message_bytes, headers=headers)
        clues = extract_clues(parsed, own_addresses=rules.own_addresses)
    except MalformedMessage as exc:
        return Examined(uid, headers, key, None, f"malformed message: {exc}")
    except Exception as exc:
        log.exception("uid %s: processing failed; moving to review", uid)
        return Examined(uid, headers, key, None,
                        f"processing failed: {type(exc).__name__}: {exc}", failed=True)
    return Examined(uid, headers, key, clues, None)


def plan(
    examined: Sequence[Examined], known: set[str], lookup: Lookup, rules: InboxRules
) -> list[Outcome]:
    """Decide every request of a batch from the database's answers; pure."""
    seen = set(known)
    outcomes: list[Outcome] = []
    for e in examined:
        if e.key in seen:
            # The same request again (a duplicate copy, re-delivered): change nothing.
            outcomes.append(Outcome(e.uid, e.headers, e.key, "duplicate", (),
                                    f"duplicate of {e.key}"))
            continue
        seen.add(e.key)
        if e.clues is None:
            outcomes.append(Outcome(e.uid, e.headers, e.key, "review", (),
                                    e.problem or "message could not be read"))
            continue
        decision = decide(e.clues, lookup)
        if decision.review_reason is not None:
            outcomes.append(Outcome(e.uid, e.headers, e.key, "review", (),
                                    decision.review_reason))
        else:
            outcomes.append(Outcome(e.uid, e.headers, e.key, "unsubscribed",
                                    decision.customer_ids,
                                    f"{decision.method}: customers {list(decision.customer_ids)}"))
    return outcomes


def _destination(outcome: Outcome, rules: InboxRules) -> str:
    return rules.review_folder if outcome.kind == "review" else rules.processed_folder


async def _lookup(conn: aiosqlite.Connection, examined: Sequence[Examined]) -> Lookup:
    """One query per kind of clue for the whole batch."""
    clues = [e.clues for e in examined if e.clues is not None]
    addresses = [a for c in clues for a in (c.from_address, *c.body_addresses) if a]
    return Lookup(
        by_address=await customer_store.ids_by_address(conn, addresses),
        by_name=await customer_store.ids_by_name_key(conn, [k for c in clues for k in c.name_keys]),
        by_company=await customer_store.ids_by_company_key(
            conn, [k for c in clues for k in c.company_keys]),
    )


async def _apply(
    conn: aiosqlite.Connection,
    rules: InboxRules,
    uidvalidity: int,
    outcomes: Sequence[Outcome],
    report: PassReport,
) -> None:
    """Write a batch's outcomes: opt-outs, consent events, confirmations, inbound rows and
    review items, in the caller's transaction."""
    await honour(conn, rules, [(o.customer_ids, o.headers) for o in outcomes
                               if o.kind == "unsubscribed"], report)
    await inbox_store.record_inbound_many(conn, rules.folder, uidvalidity, [
        inbox_store.InboundRow(
            message_key=o.key if o.kind != "duplicate" else f"{o.key}#dup:{uidvalidity}:{o.uid}",
            message_id=o.headers.message_id or "", uid=o.uid, outcome=o.kind,
            destination=_destination(o, rules), detail=o.detail)
        for o in outcomes
    ])
    reviews = [o for o in outcomes if o.kind == "review"]
    await inbox_store.add_reviews(conn, [
        inbox_store.NewReview(message_key=o.key, message_id=o.headers.message_id or "",
                              sender=o.headers.from_address or "", subject=o.headers.subject,
                              reason=o.detail)
        for o in reviews
    ])
    report.review += len(reviews)
    report.duplicates += sum(o.kind == "duplicate" for o in outcomes)


_MOVE_CHUNK = 1000


async def _finish_moves(
    client: ImapClient, conn: aiosqlite.Connection, rules: InboxRules, uidvalidity: int
) -> None:
    """Move every decided request still in the folder to its destination, then mark it."""
    pending = await inbox_store.unmoved(conn, rules.folder, uidvalidity)
    for folder in sorted({item.destination for item in pending}):
        uids = [item.uid for item in pending if item.destination == folder]
        for start in range(0, len(uids), _MOVE_CHUNK):
            chunk = uids[start : start + _MOVE_CHUNK]
            # UID MOVE of UIDs already gone is a no-op (RFC 3501 §6.4.8), so a crash between
            # the move and the mark below is harmless.
            await client.move_many(chunk, folder)
            async with transaction(conn):
                await inbox_store.mark_moved_uids(conn, rules.folder, uidvalidity, chunk)
        log.debug("moved %d message(s) to %s", len(uids), folder)


def _message_key(headers: Headers, raw: bytes) -> str:
    if headers.message_id:
        return headers.message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def honour(
    conn: aiosqlite.Connection,
    rules: InboxRules,
    requests: Sequence[tuple[tuple[int, ...], Headers]],
    report: PassReport,
    *,
    actor: str = "",
) -> None:
    """Opt customers out and queue their confirmations (`optout.opt_out`, source `email`);
    the caller holds the transaction. Shared by automatic matching and `review resolve`, so
    both act exactly alike (`actor`: the person who resolved it, for the consent history)."""
    result = await optout.opt_out(
        conn,
        [optout.Refusal(customer_ids=ids, reference=headers.message_id or "",
                        thread=optout.Thread(subject=headers.subject,
                                             message_id=headers.message_id or "",
                                             references=headers.references))
         for ids, headers in requests],
        rules.categories, source="email", actor=actor,
        confirmation_interval_h=rules.confirmation_interval_h)
    report.unsubscribed += result.honoured
    report.confirmations += result.confirmations


async def _advance(conn: aiosqlite.Connection, folder: str, uidvalidity: int, uid: int) -> None:
    current = await inbox_store.mailbox_state(conn, folder)
    last = current.last_uid if current and current.uidvalidity == uidvalidity else 0
    await inbox_store.set_mailbox_state(conn, folder, uidvalidity, max(last, uid))
