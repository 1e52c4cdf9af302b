"""Reports read and applied per second: `read_report` + `apply_report` into a real SQLite file.

Same run: (a) the baseline, the stdlib parsing each message (`email.message_from_bytes`)
and nothing else; (b) `read_report` alone (parsing, RFC 3464 / 5965 reading, flufl.bounce,
VERP verification); (c) `read_report` + `apply_report` (tie to the ledger, decide, record,
undeliverable / opt-out, one transaction per report) into a fresh database holding one
campaign of `--customers` recipients. The reports: the fixtures of tests/fixtures/reports
addressed to real VERP addresses of that campaign (so they act) and flufl.bounce's corpus of
real-world bounces (so they are ignored), repeated to `--reports`. The IMAP fetch and move of
the inbox pass are not part of this: they are the same as for any message.

Run: `python bench/reports_bench.py [--reports N] [--customers N]`. Exit 0 (a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailer import verp  # noqa: E402
from mailer.bounces import deliverability
from mailer.bounces.reports import read_report  # noqa: E402
from mailer.importer import CustomerRow  # noqa: E402
from mailer.settings import BouncesSettings  # noqa: E402
from mailer.store import campaigns as campaign_store  # noqa: E402
from mailer.store import imports  # noqa: E402
from mailer.store.db import open_db, transaction  # noqa: E402
from tests.fixtures.reports import CORPUS, NAMES, load  # noqa: E402

SECRET = "bench-secret"
BOUNCES = BouncesSettings(address="bounces@imperialtelecom.co.uk")
VERIFIER = verp.Verifier(BOUNCES.address, SECRET)


async def _rows(count: int) -> AsyncIterator[CustomerRow]:
    for i in range(count):
        yield CustomerRow(line=i + 2, email=f"c{i}@example.com", name=f"C {i}", company="",
                          phone="", name_key=f"c {i}", company_key="", announcements=True,
                          offers=True)


def messages(count: int, customers: int) -> list[bytes]:
    corpus = [p.read_bytes() for p in CORPUS]
    out: list[bytes] = []
    i = 0
    while len(out) < count:
        customer = 1 + i % customers
        address = verp.address(BOUNCES.address, verp.Tag.campaign(1, customer), SECRET)
        name = NAMES[i % len(NAMES)]
        raw = load(name, verp=address, recipient=f"c{customer - 1}@example.com",
                   message_id=f"<m{customer}@imperialtelecom.co.uk>")
        # Each report is a distinct message (its own Message-ID), as in a real inbox.
        out.append(raw.replace(b"@mx.example.net>", f".{i}@mx.example.net>".encode())
                   .replace(b"Message-ID: <", f"Message-ID: <{i}.".encode(), 1))
        out.append(corpus[i % len(corpus)])
        i += 1
    return out[:count]


async def apply_all(path: Path, raws: list[bytes], customers: int) -> float:
    async with open_db(path) as conn:
        await imports.import_customers(conn, _rows(customers), reference="bench")
        campaign_id = await campaign_store.insert_campaign(
            conn, kind="offers", template="t", subject="s", scheduled_at=None)
        async with transaction(conn):
            await conn.execute(
                "INSERT INTO campaign_recipients (campaign_id, customer_id, status, message_id) "
                "SELECT ?, id, 'sent', '<m' || id || '@imperialtelecom.co.uk>' FROM customers",
                (campaign_id,))
        start = time.perf_counter()
        for raw in raws:
            report = read_report(raw, VERIFIER)
            if report is not None:
                await deliverability.apply_report(conn, report, BOUNCES)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args()
    raws = messages(args.reports, args.customers)

    start = time.perf_counter()
    for raw in raws:
        email.message_from_bytes(raw, policy=email.policy.compat32)
    parse_s = time.perf_counter() - start

    start = time.perf_counter()
    read = sum(read_report(raw, VERIFIER) is not None for raw in raws)
    read_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        apply_s = asyncio.run(apply_all(Path(tmp) / "mailer.db", raws, args.customers))

    n = len(raws)
    print(f"{n} messages ({read} read as reports; half tied to the campaign, half the corpus)")
    print(f"(a) stdlib parse only:        {n / parse_s:,.0f} messages/s")
    print(f"(b) read_report:              {n / read_s:,.0f} messages/s "
          f"({(n / read_s) / (n / parse_s):.2f} of (a))")
    print(f"(c) read_report + apply:      {n / apply_s:,.0f} messages/s "
          f"({(n / apply_s) / (n / parse_s):.2f} of (a))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
