"""The customer's rights under UK GDPR: access and portability (art. 15, 20) as one JSON
document, and erasure (art. 17) that leaves a suppression entry behind.

    export:  the person's rows of every table (`store.rights.PERSONAL`) + the request emails
             from or naming them in the processed and review folders -> one JSON document
    erase:   one transaction (`store.rights.erase`): personal fields blanked, counts kept,
             suppression entry (keyed HMAC), erasure record, pending IMAP clean-up
             -> `run_pending_erasures`: the request emails deleted from the folders,
                idempotent, retried with backoff until done

The IMAP side is reached through `Mailbox`, the few commands of `mailer.inbox.imap.ImapClient`
it needs, so this layer (below `inbox`) needs no import of it. `export_document` and
`search_terms` are the pure decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from mailer.backoff import ERASURE_CLEANUP
from mailer.errors import ErasedCustomer, ImapError, NotFound, SettingsError
from mailer.store import customers as customer_store
from mailer.store import rights as rights_store
from mailer.store.db import Connection

log = logging.getLogger(__name__)

FORMAT = "mailer customer export 1"


class Mailbox(Protocol):
    async def ensure_folder(self, name: str) -> None: ...
    async def select(self, folder: str) -> int: ...
    async def uids_search(self, *criteria: str) -> list[int]: ...
    async def fetch_messages(self, uids: Sequence[int], batch: int = 200
                             ) -> dict[int, bytes]: ...
    async def delete_many(self, uids: Sequence[int]) -> None: ...


def require_key(key: bytes | None) -> bytes:
    if key is None:
        raise SettingsError("[privacy] suppression_key: not set (MAILER_SUPPRESSION_KEY in the "
                            "environment); erasure needs it to keep the suppression list")
    return key


def search_terms(email: str, name: str) -> list[str]:
    """What finds a person's request emails: the address, and the name when it is specific
    enough not to match other people's mail."""
    terms = [email.strip()]
    if len(name.strip()) >= 4:
        terms.append(" ".join(name.split()))
    return [t for t in terms if t and "\r" not in t and "\n" not in t]


def _quoted(term: str) -> str:
    # RFC 3501 section 4.3: a quoted string escapes only backslash and double quote.
    return '"' + term.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def find_mails(mailbox: Mailbox, folders: Sequence[str], terms: Sequence[str]
                     ) -> dict[str, list[int]]:
    """UIDs per folder of the messages holding any of `terms` (SEARCH TEXT: headers and
    body, RFC 3501 section 6.4.4)."""
    found: dict[str, list[int]] = {}
    for folder in folders:
        await mailbox.ensure_folder(folder)  # a new installation may not have it yet
        await mailbox.select(folder)
        uids: set[int] = set()
        for term in terms:
            uids.update(await mailbox.uids_search("TEXT", _quoted(term)))
        found[folder] = sorted(uids)
    return found


def export_document(email: str, rows: Mapping[str, list[dict[str, Any]]],
                    mails: Sequence[dict[str, Any]], *, exported_at: str) -> dict[str, Any]:
    """The portable document: a summary a person can read, then every row held."""
    record = rows["customers"][0]
    campaigns = {c["id"]: c for c in rows.get("campaigns", [])}
    return {
        "format": FORMAT,
        "exported_at": exported_at,
        "email": email,
        "record": {k: record[k] for k in ("email", "name", "company", "phone", "created_at",
                                          "updated_at")},
        "preferences": {"announcements": bool(record["announcements"]),
                        "offers": bool(record["offers"])},
        "consent_history": rows.get("consent_events", []),
        "deliveries": [
            {"campaign": r["campaign_id"], "kind": campaigns.get(r["campaign_id"], {}).get("kind"),
             "subject": campaigns.get(r["campaign_id"], {}).get("subject"),
             "status": r["status"], "last_reply": r["last_reply"], "at": r["updated_at"]}
            for r in rows.get("campaign_recipients", [])
        ],
        "confirmations": rows.get("outbox", []),
        "bounces_and_complaints": rows.get("delivery_reports", []),
        "review_items": rows.get("review_items", []),
        "request_emails": list(mails),
        "tables": dict(rows),
    }


async def export(conn: Connection, email: str, *, mailbox: Mailbox | None,
                 folders: Sequence[str], key: bytes | None) -> dict[str, Any]:
    """Everything held about the customer at `email`, as one JSON-ready document."""
    customer = await _customer(conn, email, key)
    rows = await rights_store.rows_for(conn, customer.id, customer.email)
    mails: list[dict[str, Any]] = []
    if mailbox is not None:
        found = await find_mails(mailbox, folders, search_terms(customer.email, customer.name))
        for folder, uids in found.items():
            await mailbox.select(folder)
            bodies = await mailbox.fetch_messages(uids) if uids else {}
            mails.extend({"folder": folder, "uid": uid,
                          "message": bodies[uid].decode("utf-8", "replace")}
                         for uid in sorted(bodies))
    return export_document(customer.email, rows, mails,
                           exported_at=datetime.now(UTC).isoformat(timespec="seconds"))


async def _customer(conn: Connection, email: str, key: bytes | None
                    ) -> customer_store.Customer:
    customer = await customer_store.get_by_email(conn, email)
    if customer is not None:
        return customer
    await raise_if_erased(conn, email, key)
    raise NotFound(f"no customer with email {email}")


async def raise_if_erased(conn: Connection, email: str, key: bytes | None) -> None:
    """ErasedCustomer if `email` is on the suppression list (checked only with the key)."""
    if key is None:
        return
    since = await rights_store.suppressed_since(
        conn, rights_store.suppression_digest(key, email))
    if since is not None:
        raise ErasedCustomer(f"{email} was erased on {since[:10]}; nothing is held about it")


async def erase(conn: Connection, email: str, *, key: bytes | None, reason: str,
                actor: str) -> rights_store.Erased:
    """Erase the customer at `email` (one transaction); the IMAP clean-up is left pending
    for `run_pending_erasures`."""
    secret = require_key(key)
    if not reason.strip():
        raise SettingsError("--reason: an erasure must say why (it is recorded)")
    customer = await _customer(conn, email, key)
    erased = await rights_store.erase(
        conn, customer.id, digest=rights_store.suppression_digest(secret, customer.email),
        reason=" ".join(reason.split()), actor=actor,
        imap_terms=search_terms(customer.email, customer.name))
    log.info("erased customer %s (erasure %s)", customer.id, erased.erasure_id)
    return erased


async def run_pending_erasures(conn: Connection, mailbox: Mailbox,
                               folders: Sequence[str], *, now: datetime | None = None) -> int:
    """Delete the request emails of every erasure whose IMAP clean-up is due; returns how
    many clean-ups finished. Safe to repeat: a search finds only what is still there. A
    failure postpones that clean-up with backoff and is raised after recording it."""
    moment = now or datetime.now(UTC)
    done = 0
    for pending in await rights_store.pending_cleanups(conn, due_by=moment.isoformat()):
        try:
            found = await find_mails(mailbox, folders, pending.terms)
            for folder, uids in found.items():
                if uids:
                    await mailbox.select(folder)
                    await mailbox.delete_many(uids)
        except ImapError as exc:
            later = moment + timedelta(seconds=ERASURE_CLEANUP.delay_s(pending.attempts + 1))
            await rights_store.cleanup_failed(conn, pending.erasure_id, error=str(exc),
                                              next_attempt_at=later.isoformat())
            raise
        await rights_store.cleanup_done(conn, pending.erasure_id)
        log.info("erasure %s: request emails removed from %s", pending.erasure_id,
                 ", ".join(folders))
        done += 1
    return done
