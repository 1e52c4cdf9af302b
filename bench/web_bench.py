"""One-click unsubscribe benchmark: RFC 8058 POSTs from an asyncio load generator on loopback.

World: `--customers` customers opted in to everything, the offers campaign the links came in
(sent to them all: a link opens only then) and a later one with their pending mail. The server
is `mailer.public` in a process of its own (the load generator in this one), listening on
127.0.0.1 with its middlewares, security headers and one INFO log line per request (to a file),
the rate limit off unless `--rate-limit N` (then every request comes from one address, as a mail
provider's shared egress does). Its route table has one extra route for the baseline:

- one-click: `POST /unsubscribe/TOKEN` with `List-Unsubscribe=One-Click`, each request for a
  different customer, so every one is a real opt-out (consent events, pending mail skipped,
  one transaction).
- baseline: `POST /bench-static/TOKEN` with the same body through the same app (same
  middlewares, same headers), answering a static 200 without reading the body or the database.

50 concurrent clients (keep-alive connections) send `--requests` requests per round; each
round measures both, alternating, and the best round of each is compared. Reported: requests/s
and p50/p99 latency of each, the ratio of one-click to the baseline's requests/s (target: at
least 0.5), and one-click's p99 (target: under 50 ms). Afterwards the database must show
exactly the customers clicked as opted out, each with its consent events.

Targets missed are reported as MISS with exit code 0 (this is a measurement); 1 only if a
measurement could not be made or a request did not answer 200.

Run: `python bench/web_bench.py [--requests N] [--rounds N] [--clients N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from mailer.campaigns import service  # noqa: E402
from mailer.importer import BadRow, CustomerRow, read_rows  # noqa: E402
from mailer.mail import tokens  # noqa: E402
from mailer.public.app import make_app  # noqa: E402
from mailer.settings import Settings, from_mapping  # noqa: E402
from mailer.store import campaigns as campaign_store  # noqa: E402
from mailer.store.db import open_db, transaction  # noqa: E402
from mailer.store.imports import import_customers_atomically  # noqa: E402

SECRET = "bench-secret"
BODY = b"List-Unsubscribe=One-Click"


def settings_for(folder: Path, port: int, rate_limit_per_min: int = 0) -> Settings:
    return from_mapping({
        "database": {"path": str(folder / "mailer.db")},
        "imap": {"host": "127.0.0.1", "port": 1, "security": "none"},
        "smtp": {"host": "127.0.0.1", "port": 1, "security": "none",
                 "sender": "Imperial Telecom <news@imperial.test>"},
        "unsubscribe": {"address": "unsubscribe@imperial.test"},
        "templates": {"dir": str(ROOT / "templates")},
        "campaigns": {"unsubscribe_url": "https://imperial.test/unsubscribe", "secret": SECRET},
        "http": {"host": "127.0.0.1", "port": port, "rate_limit_per_min": rate_limit_per_min},
    }, base_dir=folder, environ={})


async def seed(settings: Settings, customers: int) -> tuple[list[int], int]:
    lines = ["name,email,announcements,offers"]
    lines += [f"Customer {i},c{i}@example.com,yes,yes" for i in range(customers)]

    async def rows() -> AsyncIterator[CustomerRow | BadRow]:
        for row in read_rows(io.StringIO("\n".join(lines) + "\n")):
            yield row

    async with open_db(settings.database.path) as conn:
        report = await import_customers_atomically(conn, rows(), reference="bench")
        assert report.ok
        # The links' campaign, which the ledger shows sent (a link opens only then), and a
        # later one with pending mail, which each one-click skips.
        campaigns = []
        for _ in range(2):
            campaign = await service.create_campaign(
                conn, settings.templates.dir, kind="offers", template="welcome-offer",
                subject="Offer")
            async with transaction(conn):
                await campaign_store.snapshot_audience(conn, campaign)
            campaigns.append(campaign.id)
    with sqlite3.connect(settings.database.path) as db:
        db.execute("UPDATE campaign_recipients SET status = 'sent' WHERE campaign_id = ?",
                   (campaigns[0],))
        ids = [r[0] for r in db.execute("SELECT id FROM customers ORDER BY id")]
    return ids, campaigns[0]


# --- the server process ---------------------------------------------------------------------


async def static_ok(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def run_server(folder: Path, port: int, rate_limit_per_min: int) -> None:
    logging.basicConfig(level=logging.INFO, filename=str(folder / "server.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    settings = settings_for(folder, port, rate_limit_per_min)
    app = make_app(settings)
    app.router.add_post("/bench-static/{token}", static_ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


# --- the load generator ---------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    requests: int
    seconds: float
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    def row(self) -> str:
        return (f"  {self.name:<22} {self.requests:>8,} {self.seconds:>8.2f} "
                f"{self.rate:>9,.0f} {self.percentile_ms(0.5):>8.1f} "
                f"{self.percentile_ms(0.99):>8.1f}")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> int:
    """One HTTP/1.1 request on a keep-alive connection; returns the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(name: str, port: int, paths: list[str], clients: int) -> Measurement:
    """`clients` keep-alive connections, each sending its next request when the last is
    answered, until `paths` is used up. A minimal HTTP/1.1 client on asyncio streams, so the
    load generator costs little of the machine the server runs on."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(paths)
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]

    def request(path: str) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for path in queue:
            started = time.perf_counter()
            status = await asyncio.wait_for(_exchange(reader, writer, request(path)), 60)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    try:
        # Warm each connection up (not measured), then the timed run.
        for reader, writer in connections:
            await _exchange(reader, writer, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
)
        started = time.perf_counter()
        await asyncio.gather(*(client(r, w) for r, w in connections))
        seconds = time.perf_counter() - started
    finally:
        for _, writer in connections:
            writer.close()
    if statuses != {200: len(paths)}:
        raise SystemExit(f"{name}: answers other than 200: {statuses}")
    return Measurement(name, len(paths), seconds, latencies)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="mailer-web-bench-") as tmp:
        folder = Path(tmp)
        sock = __import__("socket").socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        settings = settings_for(folder, port)
        t0 = time.perf_counter()
        ids, campaign_id = await seed(settings, args.requests * args.rounds)
        print(f"web bench: {args.requests:,} requests per round, {args.clients} concurrent "
              f"clients, {args.rounds} round(s); seeded {len(ids):,} customers in "
              f"{time.perf_counter() - t0:.1f} s")
        server = subprocess.Popen(
            [sys.executable, __file__, "--child-server", str(folder), "--port", str(port),
             "--rate-limit", str(args.rate_limit)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                print("the server did not start", file=sys.stderr)
                return 1
            best: dict[str, Measurement] = {}
            for round_number in range(args.rounds):
                chunk = ids[round_number * args.requests:(round_number + 1) * args.requests]
                one_click = [f"/unsubscribe/{tokens.campaign_token(SECRET, c, campaign_id)}"
                             for c in chunk]
                static = [p.replace("/unsubscribe/", "/bench-static/") for p in one_click]
                for measured in (await load("static 200 (baseline)", port, static, args.clients),
                                 await load("one-click POST", port, one_click, args.clients)):
                    print(f"  round {round_number + 1}: {measured.name:<22} "
                          f"{measured.rate:>8,.0f} req/s  p99 "
                          f"{measured.percentile_ms(0.99):.1f} ms")
                    if measured.name not in best or measured.rate > best[measured.name].rate:
                        best[measured.name] = measured
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        clicked = args.requests * args.rounds
        with sqlite3.connect(settings.database.path) as db:
            [(opted_out,)] = db.execute("SELECT count(*) FROM customers WHERE offers = 0 AND "
                                        "announcements = 0").fetchall()
            [(events,)] = db.execute("SELECT count(*) FROM consent_events WHERE "
                                     "source = 'one-click'").fetchall()
            [(skipped,)] = db.execute("SELECT count(*) FROM campaign_recipients WHERE "
                                      "status = 'skipped'").fetchall()
        if (opted_out, events, skipped) != (clicked, 2 * clicked, clicked):
            print(f"database after the run: {opted_out} opted out, {events} events, {skipped} "
                  f"skipped; expected {clicked}, {2 * clicked}, {clicked}", file=sys.stderr)
            return 1
    baseline, one_click = best["static 200 (baseline)"], best["one-click POST"]
    ratio = one_click.rate / baseline.rate
    p99 = one_click.percentile_ms(0.99)
    print()
    print(f"  best of {args.rounds} round(s), load average now {load_average()}")
    print(f"  {'':<22} {'requests':>8} {'seconds':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for measured in (baseline, one_click):
        print(measured.row())
    print()
    print(f"  one-click / static 200 req/s   {ratio:>6.2f}   target >= 0.5    "
          f"{'ok' if ratio >= 0.5 else 'MISS'}")
    print(f"  one-click p99                  {p99:>6.1f}   target < 50 ms   "
          f"{'ok' if p99 < 50 else 'MISS'}")
    print(f"  database: {clicked:,} customers opted out by one-click, each with its consent "
          "events and its pending mail skipped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate-limit", type=int, default=0,
                        help="[http] rate_limit_per_min of the server (default 0: off); every "
                             "request comes from one address, as from a mail provider's "
                             "shared egress")
    parser.add_argument("--child-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args: Any = parser.parse_args()
    if args.child_server:
        asyncio.run(run_server(args.child_server, args.port, args.rate_limit))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
