"""Several hosts and two engines: what the store carries, each figure a ratio in one run.

Every daemon here is a real `mailer run` process on loopback; PostgreSQL is a real server
(tests/postgres.py: `initdb` into a temporary folder, 127.0.0.1, a free port); campaigns go
into an SMTP sink on loopback whose own counter is the measure.

- `oneclick`: on each engine, one daemon sends a `--recipients` campaign into Postfix's
  `smtp-sink` while this process sends one-click POSTs (RFC 8058) to the daemon's public
  listener at `--rate` per second, open loop (each request timed from when it was due, so a
  stalled server cannot hide its queue). The campaign's rate is measured in three windows:
  unloaded, loaded, unloaded again; reported: the one-clicks' p50/p99 (target p99 < 50 ms)
  and the loaded rate over the mean unloaded one (target >= 0.5).
- `engines`: the unloaded campaign rates of `oneclick`, PostgreSQL over SQLite (goal >= 0.8).
- `scale`: 1, 2 and 3 daemons (MAILER_INSTANCE host-a, host-b, host-c) on one PostgreSQL send
  one campaign into a sink that spends `--sink-delay-ms` on each transaction, as a remote MTA
  does; the campaign's rate with 3 daemons over 1 (target >= 2.5).
- `search`: the console's customer search on `--search-customers` customers on PostgreSQL,
  p50/p95 of `--searches` searches (target p95 < 100 ms).

Targets missed are reported as MISS with exit code 0 (this is a measurement); 1 only if a
measurement could not be made (a daemon died, the campaign ended before the windows did).

Run: `python bench/scale_bench.py [--only oneclick,engines,scale,search] [--recipients N]
[--rate N] [--window S]`. Diagnostics: `SCALE_BENCH_CPU=1` prints each daemon's CPU share per
window (is it CPU-bound or waiting?); `SCALE_BENCH_STATIC=1` sends the load to a path that
answers 404 without the database, to tell the listener's own cost from the store's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from web_bench import _exchange  # noqa: E402  (one HTTP/1.1 request on a kept-alive connection)

from mailer.campaigns import service  # noqa: E402
from mailer.importer import BadRow, CustomerRow, read_rows  # noqa: E402
from mailer.mail import tokens  # noqa: E402
from mailer.store import campaigns as campaign_store  # noqa: E402
from mailer.store.db import Location, open_db, transaction  # noqa: E402
from mailer.store.imports import import_customers_atomically  # noqa: E402
from tests.dbrows import execute, rows  # noqa: E402
from tests.ports import free_port  # noqa: E402
from tests.postgres import PostgresServer, unavailable_reason  # noqa: E402

SECRET = secrets.token_urlsafe(48)
SENDER = "Imperial Telecom <news@imperial.test>"
CONNECTIONS = 4
BODY = b"List-Unsubscribe=One-Click"
SINK_BACKLOG = 1000


class MeasurementFailed(Exception):
    """A measurement could not be made; str() is one line."""


# --- the world ------------------------------------------------------------------------------


async def seed_opted_in(location: Location, customers: int) -> None:
    """`customers` opted in to everything, imported as an operator would."""
    lines = ["name,email,announcements,offers"]
    lines += [f"Customer {i},c{i}@example.com,yes,yes" for i in range(customers)]

    async def source() -> AsyncIterator[CustomerRow | BadRow]:
        for row in read_rows(io.StringIO("\n".join(lines) + "\n")):
            yield row

    async with open_db(location) as conn:
        report = await import_customers_atomically(conn, source(), reference="bench")
        if not report.ok:
            raise MeasurementFailed(f"seeding: {report.bad_rows[:1]}")


async def seed(location: Location, customers: int) -> tuple[list[int], int]:
    """`seed_opted_in`, and a campaign the links came in (sent to them all: a one-click link
    opens only then). Returns the customer ids and that campaign's id."""
    await seed_opted_in(location, customers)
    async with open_db(location) as conn:
        links = await service.create_campaign(conn, ROOT / "templates", kind="announcements",
                                              template="welcome-offer", subject="News")
        async with transaction(conn):
            await campaign_store.snapshot_audience(conn, links)
    execute(location, "UPDATE campaign_recipients SET status = 'sent' WHERE campaign_id = ?",
            (links.id,))
    ids = [int(r[0]) for r in rows(location, "SELECT id FROM customers ORDER BY id")]
    return ids, links.id


async def schedule_campaign(location: Location, in_s: float = 1.0) -> int:
    """The measured campaign: offers to everyone still opted in, due in `in_s` seconds."""
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + in_s + 1))
    async with open_db(location) as conn:
        campaign = await service.create_campaign(
            conn, ROOT / "templates", kind="offers", template="welcome-offer",
            subject="An offer for {{ customer.name }}", at=at)
    return campaign.id


def settings_toml(location: Location, smtp_port: int, http_port: int) -> str:
    database = (f'url = "{location}"' if isinstance(location, str)
                else f'path = "{location}"')
    return "\n".join((
        "[database]", database,
        "[imap]", 'host = "127.0.0.1"', "port = 1", 'security = "none"',
        "[smtp]", 'host = "127.0.0.1"', f"port = {smtp_port}", 'security = "none"',
        f'sender = "{SENDER}"', "timeout_s = 30.0", f"max_connections = {CONNECTIONS}",
        "[unsubscribe]", 'address = "unsubscribe@imperial.test"',
        "[templates]", f'dir = "{ROOT / "templates"}"',
        "[campaigns]", 'unsubscribe_url = "https://www.imperial.test/unsubscribe"',
        "batch_size = 500",
        "[http]", 'host = "127.0.0.1"', f"port = {http_port}", "rate_limit_per_min = 0",
        "[log]", 'level = "warning"', ""))


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


@contextlib.contextmanager
def daemon(work: Path, settings: Path, instance: str) -> Iterator[Daemon]:
    log = work / f"daemon-{instance}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "--settings", str(settings), "run"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out,
            env={**os.environ, "MAILER_SECRET": SECRET, "MAILER_INSTANCE": instance})
    try:
        yield Daemon(process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- sinks ----------------------------------------------------------------------------------


@dataclass
class Sink:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def delivered(self) -> int:
        """Messages the sink acknowledged, from its last counter line."""
        counters = re.findall(rb"mesg=(\d+)", self.log.read_bytes()[-4096:])
        return int(counters[-1]) if counters else 0


def _wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise MeasurementFailed(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.recv(512)
                probe.sendall(b"QUIT\r\n")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise MeasurementFailed(f"{what} not listening on {port}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def fast_sink(work: Path) -> Iterator[Sink]:
    """Postfix's smtp-sink: as fast as loopback allows."""
    port = free_port()
    log = work / f"sink-{port}.out"
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["smtp-sink", *user, "-c", f"127.0.0.1:{port}", str(SINK_BACKLOG)],
            stdout=out, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, process, "smtp-sink")
        yield Sink(port, process, log)
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def slow_sink(work: Path, delay_ms: int) -> Iterator[Sink]:
    """An aiosmtpd sink (a process of its own) that spends `delay_ms` on each transaction
    before its 250, as a remote MTA does; it prints the same `mesg=N` counters."""
    port = free_port()
    log = work / f"slow-sink-{port}.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child-sink", str(port), "--sink-delay-ms",
             str(delay_ms)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, "the slow sink")
        yield Sink(port, process, log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_slow_sink(port: int, delay_ms: int) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    count = 0

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            nonlocal count
            await asyncio.sleep(delay_ms / 1000)
            count += 1
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    stop = False

    def end(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, end)
    while not stop:
        time.sleep(0.2)
        print(f"mesg={count}", flush=True)
    controller.stop()


# --- one-click load -------------------------------------------------------------------------


@dataclass
class Clicks:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


async def click_load(port: int, paths: list[str], rate: float, seconds: float) -> Clicks:
    """Open loop: request i is due at start + i/rate and timed from then, on a pool of
    keep-alive connections (a due request waits for a free one: that wait counts)."""
    clicks = Clicks()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(64):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    def request(path: str) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY

    async def one(path: str, due: float) -> None:
        connection = await pool.get()
        try:
            status = await asyncio.wait_for(_exchange(*connection, request(path)), 60)
        finally:
            pool.put_nowait(connection)
        clicks.latencies_s.append(time.perf_counter() - due)
        clicks.statuses[status] = clicks.statuses.get(status, 0) + 1

    count = min(len(paths), int(rate * seconds))
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(paths[i], due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return clicks


# --- measurements ---------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate_over(sink: Sink, seconds: float, daemons: list[Daemon]) -> float:
    before, started = sink.delivered(), time.perf_counter()
    cpu = [cpu_s(d.process.pid) for d in daemons]
    time.sleep(seconds)
    if os.environ.get("SCALE_BENCH_CPU"):
        print("    daemon CPU share:", [round((cpu_s(d.process.pid) - c) / seconds, 2)
                                        for d, c in zip(daemons, cpu, strict=True)])
    for d in daemons:
        if not d.alive():
            raise MeasurementFailed(f"a daemon died:\n{d.tail()}")
    return (sink.delivered() - before) / (time.perf_counter() - started)


def wait_sending(sink: Sink, daemons: list[Daemon], at_least: int, timeout_s: float = 60
                 ) -> None:
    deadline = time.monotonic() + timeout_s
    while sink.delivered() < at_least:
        for d in daemons:
            if not d.alive():
                raise MeasurementFailed(f"a daemon died:\n{d.tail()}")
        if time.monotonic() > deadline:
            raise MeasurementFailed(f"the campaign did not start within {timeout_s:.0f} s:\n"
                                    f"{daemons[0].tail()}")
        time.sleep(0.1)


@dataclass
class OneClickResult:
    engine: str
    unloaded: float
    loaded: float
    clicks: Clicks

    @property
    def ratio(self) -> float:
        return self.loaded / self.unloaded if self.unloaded else 0.0


def one_click_under_campaign(engine: str, location: Location, work: Path,
                             args: argparse.Namespace) -> OneClickResult:
    ids, links_id = asyncio.run(seed(location, args.recipients))
    with fast_sink(work) as sink:
        http_port = free_port()
        settings = work / f"settings-{engine}.toml"
        settings.write_text(settings_toml(location, sink.port, http_port), encoding="utf-8")
        with daemon(work, settings, f"{engine}-a") as d:
            asyncio.run(schedule_campaign(location))
            wait_sending(sink, [d], at_least=500)
            before = rate_over(sink, args.window, [d])
            paths = [f"/unsubscribe/{tokens.campaign_token(SECRET, c, links_id)}"
                     for c in ids[: int(args.rate * args.window)]]
            if os.environ.get("SCALE_BENCH_STATIC"):
                paths = [p.replace("/unsubscribe/", "/nothing/") for p in paths]
            delivered, started = sink.delivered(), time.perf_counter()
            cpu = cpu_s(d.process.pid)
            clicks = asyncio.run(click_load(http_port, paths, args.rate, args.window))
            loaded = (sink.delivered() - delivered) / (time.perf_counter() - started)
            if os.environ.get("SCALE_BENCH_CPU"):
                print("    daemon CPU share under load:",
                      round((cpu_s(d.process.pid) - cpu) / (time.perf_counter() - started), 2))
            after = rate_over(sink, args.window, [d])
            if sink.delivered() >= len(ids) - len(paths):
                raise MeasurementFailed(f"{engine}: the campaign ended inside the windows; "
                                        "raise --recipients")
    if set(clicks.statuses) != {200} and not os.environ.get("SCALE_BENCH_STATIC"):
        raise MeasurementFailed(f"{engine}: one-click answers other than 200: {clicks.statuses}")
    return OneClickResult(engine, (before + after) / 2, loaded, clicks)


def daemons_on_one_campaign(count: int, location: Location, work: Path,
                            args: argparse.Namespace) -> float:
    """`count` daemons (hosts) send one campaign into the slow sink; its rate once all of
    them send, over one window."""
    asyncio.run(seed_opted_in(location, args.scale_recipients))
    with slow_sink(work, args.sink_delay_ms) as sink, contextlib.ExitStack() as stack:
        settings = work / f"settings-scale-{count}.toml"
        settings.write_text(settings_toml(location, sink.port, free_port()).replace(
            '[http]\nhost = "127.0.0.1"', '[http]\nhost = ""'), encoding="utf-8")
        running = [stack.enter_context(daemon(work, settings, f"host-{chr(97 + i)}-{count}"))
                   for i in range(count)]
        asyncio.run(schedule_campaign(location))
        wait_sending(sink, running, at_least=50)
        # Every daemon joins at its scheduler's next look (every 5 s), then the window.
        time.sleep(6)
        rate = rate_over(sink, args.window, running)
        if sink.delivered() >= args.scale_recipients:
            raise MeasurementFailed("the campaign ended inside the window; raise "
                                    "--scale-recipients")
        return rate


def console_search(server: PostgresServer, args: argparse.Namespace) -> tuple[float, float]:
    """The console's customer search over HTTP on `--search-customers` customers (the world
    and the measurement of bench/console_bench.py, on PostgreSQL): p50 and p95 in ms."""
    sys.path.insert(0, str(ROOT / "bench"))
    import console_bench

    url = server.create_database()
    asyncio.run(console_bench.migrate(url))
    console_bench.generate_postgresql(url, args.search_customers)
    settings = console_bench.settings_for(url)
    asyncio.run(console_bench.add_user(settings))
    times = asyncio.run(console_bench.search_times(settings, args.searches))
    return console_bench.percentile(times, 0.5), console_bench.percentile(times, 0.95)


def engines_available() -> list[str]:
    reason = unavailable_reason()
    if reason:
        print(f"  PostgreSQL left out: {reason}")
        return ["sqlite"]
    return ["sqlite", "postgresql"]


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def run(args: argparse.Namespace) -> int:
    only = set(args.only.split(","))
    engines = [e for e in engines_available() if e in args.engines.split(",")]
    with tempfile.TemporaryDirectory(prefix="mailer-scale-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        server = stack.enter_context(postgres()) if "postgresql" in engines else None

        def location(engine: str) -> Location:
            if engine == "sqlite":
                folder = Path(tempfile.mkdtemp(dir=work))
                return folder / "mailer.db"
            assert server is not None
            return server.create_database()

        results: dict[str, OneClickResult] = {}
        if only & {"oneclick", "engines"}:
            print(f"one-click at {args.rate:.0f}/s during a {args.recipients:,}-recipient "
                  f"campaign, windows of {args.window:.0f} s")
            for engine in engines:
                result = one_click_under_campaign(engine, location(engine), work, args)
                results[engine] = result
                print(f"  {engine:<11} campaign unloaded {result.unloaded:>7,.0f} msg/s, "
                      f"loaded {result.loaded:>7,.0f} msg/s ({result.ratio:.2f}); one-click "
                      f"p50 {result.clicks.percentile_ms(0.5):.1f} ms, p99 "
                      f"{result.clicks.percentile_ms(0.99):.1f} ms over "
                      f"{len(result.clicks.latencies_s):,} requests")
        print()
        for engine, result in results.items():
            p99 = result.clicks.percentile_ms(0.99)
            print(f"  {engine:<11} one-click p99 {p99:>6.1f} ms       target < 50 ms   "
                  f"{verdict(p99 < 50)}")
            print(f"  {engine:<11} campaign loaded/unloaded {result.ratio:>5.2f}   "
                  f"target >= 0.5    {verdict(result.ratio >= 0.5)}")
        if "engines" in only and {"sqlite", "postgresql"} <= set(results):
            ratio = results["postgresql"].unloaded / results["sqlite"].unloaded
            print(f"  PostgreSQL/SQLite campaign rate {ratio:>5.2f}     goal >= 0.8      "
                  f"{verdict(ratio >= 0.8)}")
        if "scale" in only and server is not None:
            print(f"\n{args.scale_recipients:,}-recipient campaign on PostgreSQL, 1, 2, 3 "
                  f"daemons, sink {args.sink_delay_ms} ms per transaction, "
                  f"{CONNECTIONS} connections each")
            rates = {}
            for count in (1, 2, 3):
                rates[count] = daemons_on_one_campaign(count, location("postgresql"), work,
                                                       args)
                print(f"  {count} daemon(s): {rates[count]:>7,.0f} msg/s "
                      f"({rates[count] / rates[1]:.2f}x)")
            ratio = rates[3] / rates[1]
            print(f"  3 daemons / 1 daemon            {ratio:>5.2f}     target >= 2.5    "
                  f"{verdict(ratio >= 2.5)}")
        if "search" in only and server is not None:
            print(f"\nconsole customer search, {args.search_customers:,} customers on "
                  "PostgreSQL")
            p50, p95 = console_search(server, args)
            print(f"  search p50 {p50:.1f} ms, p95 {p95:.1f} ms        target p95 < 100 ms "
                  f"{verdict(p95 < 100)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default="oneclick,engines,scale,search")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500.0, help="one-click POSTs per second")
    parser.add_argument("--window", type=float, default=8.0, help="seconds per window")
    parser.add_argument("--sink-delay-ms", type=int, default=20)
    parser.add_argument("--scale-recipients", type=int, default=20_000)
    parser.add_argument("--search-customers", type=int, default=1_000_000)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--child-sink", type=int, help=argparse.SUPPRESS)
    args: Any = parser.parse_args()
    if args.child_sink:
        run_slow_sink(args.child_sink, args.sink_delay_ms)
        return 0
    try:
        return run(args)
    except MeasurementFailed as exc:
        print(f"scale bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
