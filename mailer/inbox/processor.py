"""One pass over the inbox folder: the request pipeline, shared by `inbox process` and `run`.

New UIDs are taken in batches of `fetch_batch`; for each batch:

    headers (one FETCH BODY.PEEK[HEADER]) -> parse_headers -> classify
    -> bodies of the requests (one FETCH BODY.PEEK[]) -> examine (parse, extract clues)
    -> one transaction: look the clues up (one query per kind), plan (pure: decide each
       request, spot duplicates), write opt-outs + consent events + confirmations + inbound
       rows + review items + the UID high-water mark
At the end of the pass: a few large UID MOVEs per destination (Processed, Review), each
followed by marking those rows moved.

Delivery reports and complaints go through the same pass: a message that is not a request
but that the header stage says may be a report (`classify.may_be_report`) has its body fetched
with the requests', and is read and recorded by `mailer.bounces.report_pass` in the batch's
transaction; a report tied to a message of
ours gets a `report_moves` row there and is moved to `[bounces] folder` with the rest, so the
same ordering (commit, then move) holds. A report not tied to us changes nobody, stays where
it is and is never answered; neither is anything that is not a report.

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
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from mailer.bounces import deliverability
from mailer.bounces.deliverability import Applied
from mailer.bounces.report_pass import apply_reports, read_reports
from mailer.consent import change
from mailer.errors import MalformedMessage
from mailer.inbox.authresults import event_evidence
from mailer.inbox.body import parse_message
from mailer.inbox.classify import Verdict, classify, may_be_report
from mailer.inbox.config import InboxConfig as InboxConfig  # re-exported: callers built on it
from mailer.inbox.erasure import REVIEW_MARK, asks_for_erasure
from mailer.inbox.headers import Headers, parse_headers
from mailer.inbox.imap import ImapClient
from mailer.inbox.imap_wire import FetchedHeader
from mailer.inbox.lookup import answers_to_confirmations, look_up
from mailer.inbox.match import Clues, Lookup, decide, extract_clues
from mailer.inbox.optback import OPT_BACK_IN, asks_to_opt_back_in, opt_back_in_reason
from mailer.store import deliverability as report_store
from mailer.store import inbox as inbox_store
from mailer.store import outbox as outbox_store
from mailer.store.db import Connection, transaction
from mailer.store.evidence import NO_EVIDENCE, EventEvidence

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did; `as_json` is the `inbox process --json` output."""

    seen: int = 0
    requests: int = 0
    unsubscribed: int = 0
    review: int = 0
    ignored: int = 0
    failed: int = 0
    confirmations: int = 0
    reports: int = 0     # reports and complaints read for the first time, tied or not
    bounces: int = 0     # of those, bounces tied to a message of ours
    complaints: int = 0  # of those, complaints tied to a message of ours

    def as_json(self) -> dict[str, int]:
        return {
            "seen": self.seen,
            "requests": self.requests,
            "unsubscribed": self.unsubscribed,
            "review": self.review,
            "ignored": self.ignored,
            "failed": self.failed,
            "reports": self.reports,
            "bounces": self.bounces,
            "complaints": self.complaints,
        }

    def add(self, other: PassReport) -> None:
        """Sum another mailbox's pass into this one (`[bounces.imap]`)."""
        for name in ("seen", "requests", "unsubscribed", "review", "ignored", "failed",
                     "confirmations", "reports", "bounces", "complaints"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


async def prepare_folders(client: ImapClient, config: InboxConfig) -> None:
    if config.requests:
        await client.ensure_folder(config.processed_folder)
        await client.ensure_folder(config.review_folder)
    if config.reports is not None:
        await client.ensure_folder(config.reports.folder)


# Called inside each batch's transaction and before the moves; raises to stop the pass (the
# inbox lease, `mailer.inbox.lease`: only its holder may decide or move).
Guard = Callable[[Connection], Awaitable[None]]


async def unguarded(conn: Connection) -> None:
    return None


async def run_pass(
    client: ImapClient, conn: Connection, config: InboxConfig, *, guard: Guard = unguarded
) -> PassReport:
    """Process every message that arrived since the last pass; return what happened."""
    report = PassReport()
    uidvalidity = await client.select(config.folder)
    state = await inbox_store.mailbox_state(conn, config.state_key)
    last_uid = 0
    if state is not None and state.uidvalidity == uidvalidity:
        last_uid = state.last_uid
    elif state is not None:
        log.warning("folder %s: UIDVALIDITY changed %s -> %s; rescanning",
                    config.folder, state.uidvalidity, uidvalidity)
        async with transaction(conn, "inbox: forgetting the old UIDVALIDITY"):
            await inbox_store.forget_stale_moves(conn, config.state_key, uidvalidity)
            await report_store.forget_stale_report_moves(conn, config.state_key, uidvalidity)

    await _finish_moves(client, conn, config, uidvalidity, guard)

    uids = await client.uids_above(last_uid)
    for start in range(0, len(uids), config.fetch_batch):
        batch = uids[start : start + config.fetch_batch]
        await _process_batch(client, conn, config, uidvalidity, batch, report, guard)
    # Moves go last, a few large UID MOVEs for the whole pass: each MOVE makes the server
    # rewrite the folder's index, so one per batch would cost more than all else together.
    await _finish_moves(client, conn, config, uidvalidity, guard)
    if report.seen or report.failed:
        log.info("pass over %s: %s", config.state_key, report.as_json())
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
    asks_erasure: bool = False  # see mailer.inbox.erasure: also goes to review
    asks_back_in: bool = False  # the sender's own words ask for emails again (`optback`)

    @property
    def thread_ids(self) -> tuple[str, ...]:
        return (*self.headers.in_reply_to, *self.headers.references)
    evidence: EventEvidence = NO_EVIDENCE  # what the request proves (mailer.inbox.authresults)


@dataclass(frozen=True)
class Outcome:
    """What happens to one request; decided without I/O by `plan`."""

    uid: int
    headers: Headers
    key: str
    kind: str  # "unsubscribed" | "review" | "duplicate"
    customer_ids: tuple[int, ...]
    detail: str
    marked: str = ""  # a review item's mark: "opt back in" or ''
    evidence: EventEvidence = NO_EVIDENCE


async def _process_batch(
    client: ImapClient,
    conn: Connection,
    config: InboxConfig,
    uidvalidity: int,
    batch: list[int],
    report: PassReport,
    guard: Guard = unguarded,
) -> None:
    """Headers for the batch, bodies of its requests, then one transaction.

    The decisions and the high-water mark commit together, each decided request as an
    `inbound` row with moved = 0 that `_finish_moves` acts on. A crash before the commit redoes
    the batch; a crash after it is finished by the next pass's moves, deciding nothing again.
    """
    requests: list[tuple[FetchedHeader, Headers]] = []
    candidates: list[FetchedHeader] = []
    erasures: list[Examined] = []  # other mail whose subject asks to delete data
    fetched = [(item, parse_headers(item.header))
               for item in await client.fetch_headers(batch, batch=config.fetch_batch)]
    verdicts = [classify(headers, configured_subject=config.subject,
                         own_addresses=config.own_addresses) for _, headers in fetched]
    # A person's answer to one of our confirmations is a request whatever its subject: it
    # goes to review (`optback`), never unread, never as an opt-out.
    answers = await answers_to_confirmations(
        conn, {n: h for n, ((_, h), v) in enumerate(zip(fetched, verdicts, strict=True))
               if v is Verdict.NOT_REQUEST}) if config.requests else set()
    for n, ((item, headers), verdict) in enumerate(zip(fetched, verdicts, strict=True)):
        report.seen += 1
        if config.requests and (verdict is Verdict.REQUEST or n in answers):
            report.requests += 1
            requests.append((item, headers))
        elif (verdict is Verdict.NOT_REQUEST and config.requests
              and asks_for_erasure(headers.subject, "")):
            # Not an opt-out, but a person must see it: it goes to review, body unread here.
            report.requests += 1
            erasures.append(Examined(item.uid, headers, _message_key(headers, item.header),
                                     None, "not an unsubscribe request", asks_erasure=True))
        elif (config.reports is not None and item.size <= config.max_message_bytes
              and may_be_report(headers, item.header)):
            candidates.append(item)
        else:
            report.ignored += 1
    wanted = [item.uid for item, _ in requests if item.size <= config.max_message_bytes]
    wanted += [item.uid for item in candidates]
    bodies = await client.fetch_messages(wanted, batch=config.fetch_batch) if wanted else {}

    examined: list[Examined] = list(erasures)
    for item, headers in requests:
        if item.size > config.max_message_bytes:
            examined.append(Examined(
                item.uid, headers, _message_key(headers, item.header), None,
                f"message is {item.size} bytes, over the {config.max_message_bytes}-byte cap"))
            continue
        raw = bodies.get(item.uid)
        if raw is not None:  # None: expunged by another client between the two fetches
            examined.append(examine(item.uid, headers, raw, config))
    reports = (read_reports([item.uid for item in candidates], bodies, config.reports.verifier)
               if config.reports is not None else [])
    report.ignored += len(candidates) - len(reports)

    outcomes: list[Outcome] = []
    applied: list[tuple[int, Applied]] = []
    async with transaction(conn, "inbox: recording a batch"):
        await guard(conn)
        if examined:
            known = await inbox_store.existing_keys(conn, [e.key for e in examined])
            found = await look_up(conn, [e.clues for e in examined if e.clues is not None])
            ours = await outbox_store.confirmation_message_ids(
                conn, [i for e in examined for i in e.thread_ids])
            outcomes = plan(examined, known, found, config, confirmation_ids=ours)
            await _apply(conn, config, uidvalidity, outcomes, report,
                         erasure_keys={e.key for e in examined if e.asks_erasure})
        if reports and config.reports is not None:
            applied = await apply_reports(conn, config.reports, config.state_key, uidvalidity,
                                          reports)
        await _advance(conn, config.state_key, uidvalidity, max(batch))
    report.failed += sum(e.failed for e in examined)
    for outcome in outcomes:
        # A review reason can quote a name or an address: ids only at INFO.
        shown = outcome.detail if outcome.kind != "review" else "see the review queue"
        log.info("uid %s: %s: %s", outcome.uid, outcome.kind, shown)
        log.debug("uid %s: %s", outcome.uid, outcome.detail)
    for _, result in applied:
        deliverability.log_applied(result)
        if not result.tied:
            report.ignored += 1  # not ours: left where it is, like any other mail
        if result.duplicate:
            continue
        report.reports += 1
        if result.tied and result.kind == "complaint":
            report.complaints += 1
        elif result.tied:
            report.bounces += 1


def examine(uid: int, headers: Headers, raw: bytes, config: InboxConfig) -> Examined:
    """Parse a request and extract its clues; never raises.

    A malformed message becomes a problem for review. Anything else that breaks here is a bug
    meeting hostile input: the message is shunted to review (Mailman's "shunt" queue) and
    counted as failed, so one bad message never blocks the rest.
    """
    key = _message_key(headers, raw)
    evidence = event_evidence(raw, config.authserv_id)
    try:
        parsed = parse_message(raw, max_bytes=config.max_message_bytes, headers=headers)
        clues = extract_clues(parsed, own_addresses=config.own_addresses)
        asks = asks_for_erasure(headers.subject, parsed.own_text)
        asks_back_in = asks_to_opt_back_in(parsed.own_text)
    except MalformedMessage as exc:
        return Examined(uid, headers, key, None, f"malformed message: {exc}")
    except Exception as exc:
        log.exception("uid %s: processing failed; moving to review", uid)
        return Examined(uid, headers, key, None,
                        f"processing failed: {type(exc).__name__}: {exc}", failed=True)
    return Examined(uid, headers, key, clues, None, asks_erasure=asks,
                    asks_back_in=asks_back_in, evidence=evidence)


def plan(
    examined: Sequence[Examined], known: set[str], lookup: Lookup, config: InboxConfig, *,
    confirmation_ids: Collection[str] = frozenset(),
) -> list[Outcome]:
    """Decide every request of a batch from the database's answers; pure. A request that
    answers one of our confirmations (`confirmation_ids`) or asks for emails again is never
    an opt-out: it goes to review, marked for a person to record the opt-in."""
    seen = set(known)
    outcomes: list[Outcome] = []
    for e in examined:
        if e.key in seen:
            # The same request again (a duplicate copy, re-delivered): change nothing.
            outcomes.append(Outcome(e.uid, e.headers, e.key, "duplicate", (),
                                    f"duplicate of {e.key}"))
            continue
        seen.add(e.key)
        back_in = opt_back_in_reason(e.thread_ids, confirmation_ids, e.asks_back_in)
        if back_in is not None:
            outcomes.append(Outcome(e.uid, e.headers, e.key, "review", (), back_in,
                                    marked=OPT_BACK_IN))
            continue
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
                                    f"{decision.method}: customers {list(decision.customer_ids)}",
                                    evidence=e.evidence))
    return outcomes


def _erasure(outcome: Outcome, erasure_keys: frozenset[str] | set[str]) -> bool:
    return outcome.kind != "duplicate" and outcome.key in erasure_keys


def _destination(outcome: Outcome, config: InboxConfig) -> str:
    return config.review_folder if outcome.kind == "review" else config.processed_folder


async def _apply(
    conn: Connection,
    config: InboxConfig,
    uidvalidity: int,
    outcomes: Sequence[Outcome],
    report: PassReport,
    erasure_keys: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Write a batch's outcomes: opt-outs, consent events, confirmations, inbound rows and
    review items, in the caller's transaction. A request that asks for erasure is honoured
    as usual and also filed in review for a person (`erasure_keys`)."""
    # Source `email`, reference: the request's Message-ID; the confirmation threads under it.
    result = await change.opt_out(
        conn,
        [change.Refusal(customer_ids=o.customer_ids, reference=o.headers.message_id or "",
                        thread=change.Thread(subject=o.headers.subject,
                                             message_id=o.headers.message_id or "",
                                             references=o.headers.references),
                        evidence=o.evidence)
         for o in outcomes if o.kind == "unsubscribed"],
        config.categories, source="email", confirmation_interval_h=config.confirmation_interval_h)
    report.unsubscribed += result.honoured
    report.confirmations += result.confirmations
    await inbox_store.record_inbound_many(conn, config.state_key, uidvalidity, [
        inbox_store.InboundRow(
            message_key=o.key if o.kind != "duplicate" else f"{o.key}#dup:{uidvalidity}:{o.uid}",
            message_id=o.headers.message_id or "", uid=o.uid, outcome=o.kind,
            destination=config.review_folder if _erasure(o, erasure_keys)
            else _destination(o, config), detail=o.detail)
        for o in outcomes
    ])
    reviews = [o for o in outcomes if o.kind == "review" or _erasure(o, erasure_keys)]
    await inbox_store.add_reviews(conn, [
        inbox_store.NewReview(message_key=o.key, message_id=o.headers.message_id or "",
                              sender=o.headers.from_address or "", subject=o.headers.subject,
                              reason=(f"{REVIEW_MARK}; {o.detail}" if _erasure(o, erasure_keys)
                                      else o.detail), marked=o.marked)
        for o in reviews
    ])
    report.review += len(reviews)


_MOVE_CHUNK = 1000


async def _finish_moves(
    client: ImapClient, conn: Connection, config: InboxConfig, uidvalidity: int,
    guard: Guard = unguarded,
) -> None:
    """Move every decided request and tied report still in the folder to its destination,
    then mark it."""
    await guard(conn)
    pending = [(item.uid, item.destination)
               for item in await inbox_store.unmoved(conn, config.state_key, uidvalidity)]
    reports = {(m.uid, m.destination)
               for m in await report_store.unmoved_reports(conn, config.state_key, uidvalidity)}
    for folder in sorted({destination for _, destination in [*pending, *reports]}):
        uids = sorted({uid for uid, destination in [*pending, *reports] if destination == folder})
        for start in range(0, len(uids), _MOVE_CHUNK):
            chunk = uids[start : start + _MOVE_CHUNK]
            # UID MOVE of UIDs already gone is a no-op (RFC 3501 §6.4.8), so a crash between
            # the move and the mark below is harmless.
            await client.move_many(chunk, folder)
            async with transaction(conn, "inbox: marking messages moved"):
                await inbox_store.mark_moved_uids(conn, config.state_key, uidvalidity, chunk)
                await report_store.mark_reports_moved(conn, config.state_key, uidvalidity, chunk)
        log.debug("moved %d message(s) to %s", len(uids), folder)


def _message_key(headers: Headers, raw: bytes) -> str:
    if headers.message_id:
        return headers.message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def _advance(conn: Connection, folder: str, uidvalidity: int, uid: int) -> None:
    current = await inbox_store.mailbox_state(conn, folder)
    last = current.last_uid if current and current.uidvalidity == uidvalidity else 0
    await inbox_store.set_mailbox_state(conn, folder, uidvalidity, max(last, uid))
