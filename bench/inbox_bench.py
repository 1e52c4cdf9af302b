"""Inbox worker benchmark, against a real IMAP server on loopback (Dovecot, else pymap).

World: 100,000 customers; 5,000 unsubscribe requests among 5,000 unrelated messages.

(a) Throughput of one pass of the worker (`processor.run_pass`: headers, classify, bodies,
    match, one transaction per batch, moves), in requests/s, as a ratio to a plain
    standard-library `imaplib` fetch (BODY.PEEK[] of every message, in batches) of the same
    messages from the same server in the same run. Target: at least 0.5.
(b) Under the long-running worker (`worker.watch`, IMAP IDLE), the latency from APPEND to the
    preference changed in the database, p50 and p95 over 100 requests. Target: p95 under 1 s.

Run: `python bench/inbox_bench.py [--customers N] [--requests N] [--latency N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import io
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.importer import BadRow, CustomerRow, read_rows  # noqa: E402
from mailer.inbox.config import InboxConfig  # noqa: E402
from mailer.inbox.imap import ImapClient, ImapConfig  # noqa: E402
from mailer.inbox.processor import prepare_folders, run_pass  # noqa: E402
from mailer.inbox.worker import WatchTiming, watch  # noqa: E402
from mailer.store.db import open_db  # noqa: E402
from mailer.store.imports import import_customers_atomically  # noqa: E402
from tests.servers import ImapTestServer, RawImap, imap_server_class, sample_message  # noqa: E402

SUBJECT = "Unsubscribe special offers"


def rules() -> InboxConfig:
    return InboxConfig(folder="INBOX", processed_folder="Processed", review_folder="Review",
                      subject=SUBJECT, categories=("announcements", "offers"),
                      own_addresses=frozenset({"news@imperial.test"}),
                      max_message_bytes=10 * 1024 * 1024, fetch_batch=200,
                      confirmation_interval_h=24.0)


async def seed_customers(db: Path, count: int) -> None:
    async def rows() -> AsyncIterator[CustomerRow | BadRow]:
        text = "name,email,company\n" + "".join(
            f"Customer{i} Surname{i % 977},customer{i}@example.com,Company {i}\n"
            for i in range(count))
        for row in read_rows(io.StringIO(text), consent_default=True):
            yield row

    async with open_db(db) as conn:
        report = await import_customers_atomically(conn, rows(), reference="bench")
    assert report.ok


def inbox_messages(requests: int, others: int) -> list[bytes]:
    messages = []
    for i in range(max(requests, others)):
        if i < requests:
            messages.append(sample_message(subject=SUBJECT, sender=f"customer{i}@example.com",
                                           body="Please unsubscribe me.\n\nThanks\n"))
        if i < others:
            messages.append(sample_message(subject=f"Question about invoice {i}",
                                           sender=f"someone{i}@example.net",
                                           body="When is my bill due?\n" * 5))
    return messages


def imaplib_fetch_all(server: ImapTestServer, batch: int) -> tuple[float, int]:
    """A baseline: stdlib imaplib fetching every message body, `batch` UIDs per FETCH
    (batch=1 is the plain loop of the imaplib documentation, one FETCH per message)."""
    start = time.perf_counter()
    conn = imaplib.IMAP4(server.host, server.port)
    conn.login(server.username, server.password)
    conn.select("INBOX", readonly=True)
    _, data = conn.uid("SEARCH", "ALL")
    uids = data[0].split() if data and data[0] else []
    fetched = 0
    for i in range(0, len(uids), batch):
        chunk = b",".join(uids[i : i + batch]).decode()
        _, parts = conn.uid("FETCH", chunk, "(BODY.PEEK[])")
        fetched += sum(1 for p in parts if isinstance(p, tuple))
    conn.logout()
    return time.perf_counter() - start, fetched


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


async def latency(server: ImapTestServer, config: ImapConfig, db: Path, count: int
                  ) -> list[float]:
    stop = asyncio.Event()
    passes: list[object] = []

    async def run_worker() -> None:
        async with open_db(db) as conn:
            await watch(conn, config, rules(), WatchTiming(idle_timeout_s=600,
                                                          poll_interval_s=5),
                        stop, passes.append)

    task = asyncio.create_task(run_worker())
    while not passes:
        await asyncio.sleep(0.01)
    samples = []
    with RawImap.for_server(server) as raw, sqlite3.connect(db) as check:
        for i in range(count):
            address = f"customer{50_000 + i}@example.com"
            message = sample_message(subject=SUBJECT, sender=address, body="Stop please.\n")
            await asyncio.sleep(0.05)
            start = time.perf_counter()
            await asyncio.to_thread(raw.append_many, "INBOX", [message])
            while True:
                row = check.execute("SELECT offers FROM customers WHERE email = ?",
                                    (address,)).fetchone()
                if row and row[0] == 0:
                    break
                await asyncio.sleep(0.002)
            samples.append(time.perf_counter() - start)
    stop.set()
    await task
    return samples


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--others", type=int, default=5_000)
    parser.add_argument("--latency", type=int, default=100)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    server = imap_server_class()()
    server.start()
    try:
        config = ImapConfig(host=server.host, port=server.port, security="none",
                            username=server.username, password=server.password, timeout_s=60)
        db = work / "bench.db"
        t0 = time.perf_counter()
        await seed_customers(db, args.customers)
        messages = inbox_messages(args.requests, args.others)
        with RawImap.for_server(server) as raw:
            raw.append_many("INBOX", messages)
        print(f"imap server: {server.name}; seeded {args.customers} customers and "
              f"{len(messages)} messages in {time.perf_counter() - t0:.1f} s")

        loop_s, fetched = imaplib_fetch_all(server, batch=1)
        batched_s, _ = imaplib_fetch_all(server, batch=500)
        pass_s, report = await one_pass(config, db)
        loop_rate, batched_rate = fetched / loop_s, fetched / batched_s
        pass_rate = report["seen"] / pass_s
        print(f"(a) imaplib, one FETCH per message: {fetched} messages in {loop_s:.2f} s "
              f"= {loop_rate:,.0f} msg/s")
        print(f"    imaplib, 500 per FETCH:         {fetched} messages in {batched_s:.2f} s "
              f"= {batched_rate:,.0f} msg/s")
        print(f"    mailer one pass: {report} in {pass_s:.2f} s = {pass_rate:,.0f} msg/s, "
              f"{report['requests'] / pass_s:,.0f} requests/s")
        print(f"    ratio to imaplib per-message fetch: {pass_rate / loop_rate:.2f}; "
              f"to batched fetch: {pass_rate / batched_rate:.2f} (target >= 0.5)")

        samples = await latency(server, config, db, args.latency)
        p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
        print(f"(b) APPEND -> preference changed under IDLE, {len(samples)} requests: "
              f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(samples) * 1000:.0f}"
              f" ms (target p95 < 1000 ms); mean {statistics.mean(samples) * 1000:.0f} ms")
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
