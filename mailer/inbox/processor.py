"""One pass over the inbox folder: the per-message pipeline, shared by `inbox process` and `run`.

    new UIDs -> headers (BODY.PEEK[HEADER]) -> classify -> body (BODY.PEEK[]) -> parse
             -> match -> one transaction (opt-out + consent events + confirmation + inbound row
             + high-water mark) -> move to Processed or Review

Ordering makes it crash-safe: the decision commits before the move, and the `inbound` row
remembers the destination, so a pass first finishes any move an earlier crash left undone.
Ordinary mail is only ever read with BODY.PEEK and never touched. A message that cannot be
decided safely goes to review; one that breaks the pipeline is moved to review too (Mailman's
"shunt"), so one bad message never blocks the queue.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from mailer.inbox.classify import Verdict, classify
from mailer.inbox.imap import FetchedHeader, ImapClient, ImapError
from mailer.inbox.match import Decision, Lookup, decide, extract_clues
from mailer.inbox.parse import Headers, MalformedMessage, ParsedMessage, parse_headers, parse_message
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
    seen: int = 0
    requests: int = 0
    unsubscribed: int = 0
    review: int = 0
    ignored: int = 0
    failed: int = 0
    duplicates: int = 0
    confirmations: int = 0
    changed_customers: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, int]:
        return {
            "seen": self.seen,
            "requests": self.requests,
            "unsubscribed": self.unsubscribed,
            "review": self.review,
            "ignored": self.ignored,
            "failed": self.failed,
        }

    def add(self, other: PassReport) -> None:
        for name in ("seen", "requests", "unsubscribed", "review", "ignored", "failed",
                     "duplicates", "confirmations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.changed_customers.extend(other.changed_customers)


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
    if report.seen or report.failed:
        log.info("pass over %s: %s", rules.folder, report.as_json())
    return report


async def _process_batch(
    client: ImapClient,
    conn: aiosqlite.Connection,
    rules: InboxRules,
    uidvalidity: int,
    batch: list[int],
    report: PassReport,
) -> None:
    """Headers for the batch, bodies of its requests, one transaction, then the moves.

    The decisions and the high-water mark commit together; the moves follow. A crash before
    the commit redoes the batch; a crash after it leaves `inbound` rows with moved = 0, which
    the next pass moves first (`_finish_moves`) without deciding anything again.
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

    destinations: dict[int, str] = {}
    async with transaction(conn):
        for item, headers in requests:
            if item.size > rules.max_message_bytes:
                raw: bytes | None = item.header
                problem: str | None = (
                    f"message is {item.size} bytes, over the {rules.max_message_bytes}-byte cap")
            else:
                raw = bodies.get(item.uid)
                problem = None
            if raw is None:  # expunged by another client between the two fetches
                continue
            destinations[item.uid] = await _decide_one(
                conn, rules, uidvalidity, item.uid, headers, raw, problem, report)
        await _advance(conn, rules.folder, uidvalidity, max(batch))

    for folder in sorted(set(destinations.values())):
        uids = sorted(uid for uid, dest in destinations.items() if dest == folder)
        await client.move_many(uids, folder)
    if destinations:
        async with transaction(conn):
            await inbox_store.mark_moved_uids(conn, rules.folder, uidvalidity,
                                              sorted(destinations))


async def _finish_moves(
    client: ImapClient, conn: aiosqlite.Connection, rules: InboxRules, uidvalidity: int
) -> None:
    pending = await inbox_store.unmoved(conn, rules.folder, uidvalidity)
    for folder in sorted({item.destination for item in pending}):
        uids = [item.uid for item in pending if item.destination == folder]
        # UID MOVE of UIDs already gone is a no-op (RFC 3501 §6.4.8), so a crash between the
        # move and the mark below is harmless.
        await client.move_many(uids, folder)
        log.info("finished interrupted move of %d message(s) to %s", len(uids), folder)
    if pending:
        async with transaction(conn):
            await inbox_store.mark_moved_uids(conn, rules.folder, uidvalidity,
                                              [item.uid for item in pending])


def _message_key(headers: Headers, raw: bytes) -> str:
    if headers.message_id:
        return headers.message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def _decide_one(
    conn: aiosqlite.Connection,
    rules: InboxRules,
    uidvalidity: int,
    uid: int,
    headers: Headers,
    raw: bytes,
    problem: str | None,
    report: PassReport,
) -> str:
    """Decide one request inside the batch's transaction; return its destination folder.

    A savepoint isolates it: if deciding it fails unexpectedly, its half-done changes are
    rolled back and the message is shunted to review (Mailman's "shunt" queue), so one bad
    message never blocks the rest.
    """
    key = _message_key(headers, raw)
    await conn.execute("SAVEPOINT request")
    try:
        parsed: ParsedMessage | None = None
        if problem is None:
            try:
                parsed = parse_message(raw, max_bytes=rules.max_message_bytes, headers=headers)
            except MalformedMessage as exc:
                problem = f"malformed message: {exc}"
        destination = await _decide(conn, rules, uidvalidity, uid, key, headers, parsed,
                                    problem, report)
    except aiosqlite.Error:
        raise
    except Exception as exc:  # noqa: BLE001 - shunt the message, keep the worker going
        log.exception("uid %s: processing failed; moving to review", uid)
        await conn.execute("ROLLBACK TO request")
        report.failed += 1
        common = _common(rules, uidvalidity, uid, headers)
        if not await inbox_store.inbound_exists(conn, key):
            await _to_review(conn, rules, key, headers,
                             f"processing failed: {type(exc).__name__}: {exc}", common)
        destination = rules.review_folder
    await conn.execute("RELEASE request")
    return destination


def _common(rules: InboxRules, uidvalidity: int, uid: int, headers: Headers) -> dict[str, Any]:
    return {"message_id": headers.message_id or "", "folder": rules.folder,
            "uidvalidity": uidvalidity, "uid": uid}


async def _decide(
    conn: aiosqlite.Connection,
    rules: InboxRules,
    uidvalidity: int,
    uid: int,
    key: str,
    headers: Headers,
    parsed: ParsedMessage | None,
    problem: str | None,
    report: PassReport,
) -> str:
    common = _common(rules, uidvalidity, uid, headers)
    if await inbox_store.inbound_exists(conn, key):
        # The same request again (a duplicate copy, or re-delivered): change nothing.
        await inbox_store.record_inbound(
            conn, message_key=f"{key}#dup:{uidvalidity}:{uid}", outcome="duplicate",
            destination=rules.processed_folder, detail=f"duplicate of {key}", **common)
        report.duplicates += 1
        log.info("uid %s: duplicate request %s; nothing changed", uid, key)
        return rules.processed_folder
    if problem is not None or parsed is None:
        reason = problem or "message could not be read"
        await _to_review(conn, rules, key, headers, reason, common)
        report.review += 1
        log.info("uid %s: to review: %s", uid, reason)
        return rules.review_folder
    decision = await _match(conn, rules, parsed)
    if decision.review_reason is not None:
        await _to_review(conn, rules, key, headers, decision.review_reason, common)
        report.review += 1
        log.info("uid %s: to review: %s", uid, decision.review_reason)
        return rules.review_folder
    await honour(conn, rules, decision.customer_ids, headers, report)
    await inbox_store.record_inbound(
        conn, message_key=key, outcome="unsubscribed", destination=rules.processed_folder,
        detail=f"{decision.method}: customers {list(decision.customer_ids)}", **common)
    log.info("uid %s: unsubscribed customers %s by %s", uid, list(decision.customer_ids),
             decision.method)
    return rules.processed_folder


async def honour(
    conn: aiosqlite.Connection,
    rules: InboxRules,
    customer_ids: tuple[int, ...],
    headers: Headers,
    report: PassReport,
) -> None:
    """Opt the customers out and queue their confirmations; the caller holds the transaction.

    Shared by automatic matching and `review resolve`, so both act exactly alike.
    """
    message_id = headers.message_id or ""
    changed = await customer_store.opt_out(
        conn, customer_ids, rules.categories, source="email", reference=message_id)
    report.changed_customers.extend(changed)
    for customer in await customer_store.get_many(conn, customer_ids):
        report.unsubscribed += 1
        queued = await inbox_store.enqueue_confirmation(
            conn,
            customer_id=customer.id,
            to_address=customer.email,  # the address on file, never the (maybe unknown) sender
            to_name=customer.name,
            categories=rules.categories,
            request_subject=headers.subject,
            in_reply_to=message_id,
            refs=(*headers.references, message_id) if message_id else headers.references,
            interval_h=rules.confirmation_interval_h,
        )
        report.confirmations += int(queued)


async def _match(
    conn: aiosqlite.Connection, rules: InboxRules, parsed: ParsedMessage
) -> Decision:
    clues = extract_clues(parsed, own_addresses=rules.own_addresses)
    addresses = [a for a in (clues.from_address, *clues.body_addresses) if a]
    lookup = Lookup(
        by_address=await customer_store.ids_by_address(conn, addresses),
        by_name=await customer_store.ids_by_name_key(conn, clues.name_keys),
        by_company=await customer_store.ids_by_company_key(conn, clues.company_keys),
    )
    return decide(clues, lookup)


async def _to_review(
    conn: aiosqlite.Connection,
    rules: InboxRules,
    key: str,
    headers: Headers,
    reason: str,
    common: dict[str, Any],
) -> None:
    inbound_id = await inbox_store.record_inbound(
        conn, message_key=key, outcome="review", destination=rules.review_folder,
        detail=reason, **common)
    await inbox_store.add_review(
        conn, inbound_id=inbound_id, message_id=headers.message_id or "",
        sender=headers.from_address or "", subject=headers.subject, reason=reason)


async def _advance(conn: aiosqlite.Connection, folder: str, uidvalidity: int, uid: int) -> None:
    current = await inbox_store.mailbox_state(conn, folder)
    last = current.last_uid if current and current.uidvalidity == uidvalidity else 0
    await inbox_store.set_mailbox_state(conn, folder, uidvalidity, max(last, uid))
