"""Reports processed per second in one inbox pass, against a real IMAP server (Dovecot, else
pymap) on loopback.

World: one campaign of `--customers` recipients in a fresh SQLite file; the inbox holds
`--reports` messages, half delivery reports and complaints (the fixtures of
tests/fixtures/reports, addressed to real VERP addresses of that campaign, so they act and
are moved to Bounces) and half flufl.bounce's corpus of real-world bounces (read, tied to
nothing, left in place). Same run: (a) the baseline, stdlib `imaplib` fetching every message
body (BODY.PEEK[], 500 UIDs per FETCH); (b) one `processor.run_pass` with reports on
(headers, candidates, bodies, read_report, apply in the batch transaction, moves), in
messages/s and as a ratio to (a).

Run: `python bench/reports_pass_bench.py [--reports N] [--customers N]`. Exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inbox_bench import imaplib_fetch_all  # noqa: E402
from reports_bench import BOUNCES, VERIFIER, _rows, messages  # noqa: E402

from mailer.bounces.config import ReportConfig  # noqa: E402
from mailer.inbox.config import InboxConfig  # noqa: E402
from mailer.inbox.imap import ImapClient, ImapConfig  # noqa: E402
from mailer.inbox.processor import prepare_folders, run_pass  # noqa: E402
from mailer.store import campaigns as campaign_store  # noqa: E402
from mailer.store import imports  # noqa: E402
from mailer.store.db import open_db, transaction  # noqa: E402
from tests.servers import RawImap, imap_server_class  # noqa: E402


def rules() -> InboxConfig:
    return InboxConfig(folder="INBOX", processed_folder="Processed", review_folder="Review",
                      subject="Unsubscribe special offers", categories=("offers",),
                      own_addresses=frozenset({"news@imperialtelecom.co.uk"}),
                      max_message_bytes=1_000_000, fetch_batch=200,
                      confirmation_interval_h=24.0,
                      reports=ReportConfig(verifier=VERIFIER, bounces=BOUNCES))


async def seed(db: Path, customers: int) -> None:
    async with open_db(db) as conn:
        await imports.import_customers(conn, _rows(customers), reference="bench")
        campaign_id = await campaign_store.insert_campaign(
            conn, kind="offers", template="t", subject="s", scheduled_at=None)
        async with transaction(conn):
            await conn.execute(
                "INSERT INTO campaign_recipients (campaign_id, customer_id, status, message_id) "
                "SELECT ?, id, 'sent', '<m' || id || '@imperialtelecom.co.uk>' FROM customers",
                (campaign_id,))


async def one_pass(config: ImapConfig, db: Path) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    client = await ImapClient.connect(config)
    try:
        async with open_db(db) as conn:
            await prepare_folders(client, rules())
            report = await run_pass(client, conn, rules())
    finally:
        await client.close()
    return time.perf_counter() - start, report.as_json()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    server = imap_server_class()()
    server.start()
    try:
        config = ImapConfig(host=server.host, port=server.port, security="none",
                            username=server.username, password=server.password, timeout_s=60)
        db = work / "bench.db"
        await seed(db, args.customers)
        # Every message distinct (its own top Message-ID), as in a real inbox.
        raws = [re.sub(rb"(?im)^Message-I[dD]:[ \t]*<", f"Message-ID: <{i}.".encode(),
                       raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), count=1)
                for i, raw in enumerate(messages(args.reports, args.customers))]
        with RawImap.for_server(server) as raw_imap:
            raw_imap.append_many("INBOX", raws)
        fetch_s, fetched = imaplib_fetch_all(server, batch=500)
        pass_s, report = await one_pass(config, db)
        with RawImap.for_server(server) as raw_imap:
            moved = len(raw_imap.uids("Bounces"))
        fetch_rate, pass_rate = fetched / fetch_s, report["seen"] / pass_s
        print(f"imap server: {server.name}; {len(raws)} messages, {args.customers} customers")
        print(f"pass: {report}; {moved} moved to Bounces")
        print(f"(a) imaplib fetch of every body: {fetch_rate:,.0f} messages/s")
        print(f"(b) one pass with reports:       {pass_rate:,.0f} messages/s "
              f"({report['reports']} reports in {pass_s:.2f} s = "
              f"{report['reports'] / pass_s:,.0f} reports/s; {pass_rate / fetch_rate:.2f} of (a))")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
