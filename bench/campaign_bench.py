"""Campaign sending benchmark, into Postfix's `smtp-sink` on loopback.

World: N customers opted in to offers and N opted out (default N = 100,000, interleaved), one
`welcome-offer` campaign of kind offers, 4 SMTP connections. Every figure is a ratio against
baselines measured in the same run, each in its own process (so its peak RSS is its own) and
each into a fresh `smtp-sink -c 127.0.0.1:PORT 1000`, whose own counter confirms the delivery:

- mailer: `send_campaign` timed from the call to its return (audience snapshot, consent check
  per message, rendering, SMTP, ledger), messages/s = messages the ledger records as sent / s.
  The ledger and smtp-sink must both count exactly the opted-in customers.
(a) transport limit: aiosmtplib pushing one already-built message of the same size over the
    same number of connections, N times. Target: mailer at least 0.6 of it.
(a') mailer's own transport, for reference: `mailer.mail.smtp.Session` pushing the same message
    the same way. smtp-sink announces PIPELINING, so it sends MAIL, RCPT and DATA in one
    write (RFC 2920), which aiosmtplib does not: (d) against (a') shows what the campaign's
    own work (consent, rendering, ledger, start-up) costs on top of its SMTP.
(b) naive loop: `email.message.EmailMessage` built per message (the same text and HTML,
    multipart/alternative) and sent with `smtplib`, one connection per message (a smaller
    count: it is slow). Target: mailer at least 5 times it.
(c) C ceiling, for reference: `smtp-source -s 8 -d` with the same count, `-l` the message
    size (smtp-source adds its few headers to that).
(d) the command line: `python -m mailer campaign send ID` on a campaign of `--cli` recipients
    (default 20,000 opted in + 20,000 opted out), timed from spawning the process to its exit
    (interpreter start-up, imports, settings, opening the database included), against the
    transport limit (a) measured for the same count in the same round. Target: >= 0.75.
Peak RSS of the mailer process: under 150 MB, and within 1.2 times that of a 10,000-recipient
campaign (10,000 opted in + 10,000 opted out) sent the same way.

Seeding the databases happens before any timing and is not measured. Targets missed are
reported as MISS and the exit code is still 0 (this is a measurement); 1 only if a measurement
could not be made, or the ledger or smtp-sink counted other than the opted-in customers.

Everything is measured `--rounds` times (default 2), alternating, each send from a fresh copy
of the seeded database; the best rate of each and the highest peak RSS are compared, so a
burst of other work on the machine in one round does not decide a ratio. Each round's rate
is shown beside it.

(e) DKIM, `--dkim-compare`: `send_campaign` of `--cli` recipients with VERP
    envelope senders (`[bounces] address`) three ways in each round, unsigned, signed with
    RSA-2048 and signed with ed25519 (`[dkim]`), each in its own process into its own
    smtp-sink; the signed rates as a share of the unsigned one, and CPU per message. Every
    signed measurement also has its sample message checked with dkimpy's verifier first.

Run: `python bench/campaign_bench.py [--recipients N] [--small N] [--naive N] [--rounds N]
[--cli N] [--cli-only] [--profile] [--dkim-compare]`. `--cli-only` measures only (d) and its
transport baseline; `--profile` sends a `--cli`-recipient campaign in-process under cProfile
and prints the top entries of the per-message path (by own time and by cumulative time).
`--dkim-compare` measures only (e). `--ledger-compare`
measures `send_campaign` at `--cli` recipients with the ledger's synchronous fast path and with
every commit through aiosqlite (the justification of the fast path in `store/ledger.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.policy
import io
import json
import os
import re
import resource
import shutil
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402

from mailer.campaigns.messages import CampaignMessages, SendConfig, send_config  # noqa: E402
from mailer.campaigns.sender import send_campaign  # noqa: E402
from mailer.importer import BadRow, CustomerRow, read_rows  # noqa: E402
from mailer.mail import smtp  # noqa: E402
from mailer.settings import from_mapping  # noqa: E402
from mailer.store import campaigns as store  # noqa: E402
from mailer.store.db import open_db  # noqa: E402
from mailer.store.imports import import_customers_atomically  # noqa: E402
from tests.servers import free_port  # noqa: E402

CONNECTIONS = 4
SOURCE_SESSIONS = 8
SENDER = "Imperial Telecom <news@imperial.test>"
# A secret `campaign send` accepts (at least 32 random bytes, as `mailer init` writes).
BENCH_SECRET = "Ws1Tf0vQ9kYbRz3NuL7hE2xAc8PgJmD5oKi4HqV6yC"
ENVELOPE_FROM = "news@imperial.test"
TEMPLATE = "welcome-offer"
SUBJECT = "A special offer for {{ customer.name }}"
SINK_BACKLOG = 1000
CHILD_TIMEOUT_S = 1800.0
MIN_RATE_PER_S = 200
MB = 1024 * 1024

# --- the world ----------------------------------------------------------------------------


def customer_email(index: int) -> str:
    return f"customer{index}@example.com"


def customers_csv(opted_in: int) -> str:
    """`opted_in` customers opted in to offers and as many opted out, interleaved by id."""
    lines = ["name,email,company,offers\n"]
    for i in range(2 * opted_in):
        offers = "no" if i % 2 else "yes"
        company = f"Company {i}" if i % 3 else ""
        lines.append(f"Customer{i} Surname{i % 977},{customer_email(i)},{company},{offers}\n")
    return "".join(lines)


async def seed(db: Path, opted_in: int) -> int:
    """Customers and one draft campaign; the campaign's id."""

    async def rows() -> AsyncIterator[CustomerRow | BadRow]:
        for row in read_rows(io.StringIO(customers_csv(opted_in)), consent_default=False):
            yield row

    async with open_db(db) as conn:
        report = await import_customers_atomically(conn, rows(), reference="bench")
        assert report.ok, report
        campaign_id = await store.insert_campaign(conn, kind="offers", template=TEMPLATE,
                                                  subject=SUBJECT, scheduled_at=None)
        assert await store.opted_in_count(conn, "offers") == opted_in
    return campaign_id


BOUNCE_ADDRESS = "bounces@imperial.test"
DKIM_DOMAIN, DKIM_SELECTOR = "imperial.test", "bench"


def config_for(db: Path, port: int, dkim: str = "", dkim_key: Path | None = None
               ) -> SendConfig:
    """The send settings; with `dkim` (an algorithm) and its key also VERP and signing."""
    extra: dict[str, Any] = {}
    if dkim:
        extra = {"bounces": {"address": BOUNCE_ADDRESS},
                 "dkim": {"domain": DKIM_DOMAIN, "selector": DKIM_SELECTOR,
                          "private_key_file": str(dkim_key), "algorithm": dkim}}
        if dkim == "none":
            del extra["dkim"]
    settings = from_mapping(
        {
            "database": {"path": str(db)},
            "imap": {"host": "127.0.0.1", "port": 1, "security": "none"},
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "sender": SENDER,
                     "timeout_s": 30.0, "max_connections": CONNECTIONS},
            "unsubscribe": {"address": "unsubscribe@imperial.test"},
            "templates": {"dir": str(ROOT / "templates")},
            "campaigns": {"secret": BENCH_SECRET,
                          "unsubscribe_url": "https://www.imperial.test/unsubscribe"},
            **extra,
        },
        base_dir=ROOT,
        environ={},
    )
    return send_config(settings)


def peak_rss_bytes() -> int:
    """This process's peak resident set size, from VmHWM: unlike ru_maxrss, which Linux
    carries across exec from the parent's, it is this program's own."""
    status = Path("/proc/self/status").read_text(encoding="ascii")
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if found is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return int(found.group(1)) * 1024


# --- children: each measured thing runs alone in its own process ---------------------------


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


async def child_sample(db: Path, campaign_id: int, count: int) -> bytes:
    """Build `count` of the campaign's real messages the way the sender does; the one
    closest to their mean size (the baselines send that one)."""
    config = config_for(db, port=1)
    async with open_db(db) as conn:
        campaign = await store.get_campaign(conn, campaign_id)
        assert campaign is not None
        rows = await conn.execute_fetchall(
            "SELECT id, email, name, company FROM customers WHERE offers = 1 ORDER BY id "
            "LIMIT ?", (count,))
    messages = CampaignMessages(campaign, config, date=datetime.now(UTC))
    built = [(r[1], messages.build(customer_id=r[0], email=r[1], name=r[2],
                                   company=r[3]).data)
             for r in rows]
    mean = statistics.fmean(len(m) for _, m in built)
    to, chosen = min(built, key=lambda item: abs(len(item[1]) - mean))
    emit({"mean_bytes": mean, "bytes": len(chosen), "to": to})
    return chosen


def dump_tasks(reason: str) -> None:
    """What every asyncio task is waiting on, to stderr: the diagnosis of a hung send."""
    print(f"{reason}; asyncio tasks:", file=sys.stderr)
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        print(f"--- {task.get_name()}: {task.get_coro()}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)


async def child_mailer(db: Path, campaign_id: int, port: int, deadline_s: float,
                       dkim: str = "", dkim_key: Path | None = None) -> None:
    config = config_for(db, port, dkim, dkim_key)
    async with open_db(db) as conn:
        opted_in = await store.opted_in_count(conn, "offers")
        rss_before = peak_rss_bytes()
        start = time.perf_counter()
        sending = asyncio.create_task(
            send_campaign(conn, config, campaign_id, stop=asyncio.Event()))
        done, _ = await asyncio.wait([sending], timeout=deadline_s)
        if not done:
            counts = await store.counts(conn, campaign_id)
            dump_tasks(f"send_campaign has not returned after {deadline_s:g} s ({counts})")
            raise SystemExit(f"send_campaign hung: no return after {deadline_s:g} s with "
                             f"{counts.sent:,} of {counts.audience:,} sent")
        outcome = sending.result()
        seconds = time.perf_counter() - start
        ledger = await store.counts(conn, campaign_id)
    emit({"seconds": seconds, "sent": outcome.sent, "failed": outcome.failed,
          "skipped": outcome.skipped, "status": outcome.status, "reason": outcome.reason,
          "ledger_sent": ledger.sent, "ledger_audience": ledger.audience,
          "ledger_pending": ledger.pending, "opted_in": opted_in,
          "peak_rss": peak_rss_bytes(), "peak_rss_before": rss_before})


def child_verify(db: Path, campaign_id: int, count: int, dkim: str, key: Path) -> None:
    """Build `count` of the campaign's messages signed as the sender signs them and check
    each with dkimpy's own verifier against the public key (no DNS): the signed measurement
    measures signatures that verify."""
    import dkim as dkimpy

    config = config_for(db, 1, dkim, key)
    signer = config.signer
    assert signer is not None

    def dns(name: bytes | str, timeout: int = 5) -> bytes | None:
        return signer.dns_value().encode()

    async def build() -> list[bytes]:
        async with open_db(db) as conn:
            campaign = await store.get_campaign(conn, campaign_id)
            assert campaign is not None
            rows = await conn.execute_fetchall(
                "SELECT id, email, name, company FROM customers WHERE offers = 1 ORDER BY id "
                "LIMIT ?", (count,))
        messages = CampaignMessages(campaign, config, date=datetime.now(UTC))
        return [messages.build(customer_id=r[0], email=r[1], name=r[2], company=r[3]).data
                for r in rows]

    built = asyncio.run(build())
    verified = sum(1 for m in built if dkimpy.verify(m, dnsfunc=dns))
    emit({"built": len(built), "verified": verified})


def through_aiosqlite_only() -> None:
    """Make the ledger write every commit through aiosqlite (no synchronous fast path)."""
    from mailer.store import ledger

    async def write(self: ledger.Ledger, batch: list[Any]) -> None:
        async with self._lock:
            await ledger.record_results(self._conn, self._campaign_id, batch)

    ledger.Ledger._write = write  # type: ignore[method-assign]


async def push_over_connections(push: Callable[[range], Coroutine[Any, Any, int]], count: int,
                                connections: int) -> None:
    """Time `count` sends shared out over `connections` concurrent pushers; emit the figures."""
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(push(range(k, count, connections)))
                 for k in range(connections)]
    seconds = time.perf_counter() - start
    emit({"seconds": seconds, "sent": sum(t.result() for t in tasks),
          "peak_rss": peak_rss_bytes()})


async def child_aiosmtplib(port: int, message: bytes, count: int, connections: int) -> None:
    """The transport limit: one built message, `count` times over `connections` clients."""

    async def push(share: range) -> int:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30,
                                 use_tls=False, start_tls=False)
        await client.connect()
        for i in share:
            await client.sendmail(ENVELOPE_FROM, [customer_email(2 * i)], message)
        await client.quit()
        return len(share)

    await push_over_connections(push, count, connections)


def child_naive(port: int, message_path: Path, count: int) -> None:
    """The naive loop: build each message with EmailMessage, one smtplib connection each."""
    sample = email.message_from_bytes(message_path.read_bytes(), policy=email.policy.default)
    assert isinstance(sample, EmailMessage)
    text_part, html_part = sample.get_body(("plain",)), sample.get_body(("html",))
    assert text_part is not None
    text = text_part.get_content()
    html = html_part.get_content() if html_part is not None else None
    subject, unsubscribe = str(sample["Subject"]), str(sample["List-Unsubscribe"])
    start = time.perf_counter()
    for i in range(count):
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = f"Customer{2 * i} <{customer_email(2 * i)}>"
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain="imperial.test")
        message["List-Unsubscribe"] = unsubscribe
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.send_message(message)
    seconds = time.perf_counter() - start
    emit({"seconds": seconds, "sent": count, "peak_rss": peak_rss_bytes()})


def settings_toml(db: Path, port: int) -> str:
    """The settings file the command-line measurement runs with (the same as `config_for`)."""
    return "\n".join((
        "[database]", f'path = "{db}"',
        "[imap]", 'host = "127.0.0.1"', "port = 1", 'security = "none"',
        "[smtp]", 'host = "127.0.0.1"', f"port = {port}", 'security = "none"',
        f'sender = "{SENDER}"', "timeout_s = 30.0", f"max_connections = {CONNECTIONS}",
        "[unsubscribe]", 'address = "unsubscribe@imperial.test"',
        "[templates]", f'dir = "{ROOT / "templates"}"',
        "[campaigns]", f'secret = "{BENCH_SECRET}"',
        'unsubscribe_url = "https://www.imperial.test/unsubscribe"', ""))


def child_profile(db: Path, campaign_id: int, port: int, top: int) -> None:
    """Send the campaign in-process under cProfile; print the top entries to stderr."""
    import cProfile
    import pstats

    config = config_for(db, port)

    async def send() -> Any:
        async with open_db(db) as conn:
            return await send_campaign(conn, config, campaign_id, stop=asyncio.Event())

    profiler = cProfile.Profile()
    start = time.perf_counter()
    outcome = profiler.runcall(asyncio.run, send())
    seconds = time.perf_counter() - start
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(top)
        print(f"=== top {top} by {order} ===", file=sys.stderr)
        print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()),
              file=sys.stderr)
    emit({"seconds": seconds, "sent": outcome.sent, "peak_rss": peak_rss_bytes()})


async def child_session(port: int, message: bytes, count: int, connections: int) -> None:
    """(a') mailer's own transport: the same, through `mailer.mail.smtp.Session` (pipelined: the
    smtp-sink announces PIPELINING)."""

    async def push(share: range) -> int:
        session = await smtp.connect(smtp.SmtpConfig(host="127.0.0.1", port=port,
                                                     security="none"))
        assert session.pipelining
        for i in share:
            await session.send(ENVELOPE_FROM, customer_email(2 * i), message, 30)
        await session.close()
        return len(share)

    await push_over_connections(push, count, connections)


def run_child(args: argparse.Namespace) -> None:
    if args.child == "sample":
        args.message.write_bytes(asyncio.run(child_sample(args.db, args.campaign, args.count)))
    elif args.child in ("mailer", "mailer-aiosqlite-ledger"):
        if args.child == "mailer-aiosqlite-ledger":
            through_aiosqlite_only()
        asyncio.run(child_mailer(args.db, args.campaign, args.port, args.deadline_s,
                                 args.dkim or "", args.dkim_key))
    elif args.child == "verify":
        child_verify(args.db, args.campaign, args.count, args.dkim, args.dkim_key)
    elif args.child == "aiosmtplib":
        message = args.message.read_bytes()
        asyncio.run(child_aiosmtplib(args.port, message, args.count, CONNECTIONS))
    elif args.child == "session":
        asyncio.run(child_session(args.port, args.message.read_bytes(), args.count,
                                  CONNECTIONS))
    elif args.child == "naive":
        child_naive(args.port, args.message, args.count)
    elif args.child == "profile":
        child_profile(args.db, args.campaign, args.port, args.count)
    else:
        raise SystemExit(f"unknown child {args.child!r}")


# --- the orchestrator ----------------------------------------------------------------------


class MeasurementFailed(Exception):
    """A measurement could not be made; str() is one line."""


@dataclass
class Sink:
    """One `smtp-sink -c` on loopback; its running counters go to `log`."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def delivered(self) -> int:
        """Messages the sink received ('.' acknowledged), from its last counter line."""
        counters = re.findall(rb"mesg=(\d+)", self.log.read_bytes()[-4096:])
        return int(counters[-1]) if counters else 0


@contextlib.contextmanager
def smtp_sink(work: Path, label: str) -> Iterator[Sink]:
    port = free_port()
    log = work / f"sink-{label}.out"
    # smtp-sink refuses to run as root without dropping privileges (-u).
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["smtp-sink", *user, "-c", f"127.0.0.1:{port}", str(SINK_BACKLOG)],
            stdout=out, stderr=subprocess.PIPE)
    sink = Sink(port, process, log)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                raise MeasurementFailed(f"smtp-sink exited: {process.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probe.recv(512)  # the 220 greeting: it is ready
                    probe.sendall(b"QUIT\r\n")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise MeasurementFailed(f"smtp-sink not listening on {port}") from None
                time.sleep(0.05)
        yield sink
    finally:
        time.sleep(0.2)  # let it write its last counters
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child(kind: str, *options: str) -> dict[str, Any]:
    """Run `--child kind options` in a fresh interpreter; its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *options]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MeasurementFailed(f"{kind}: no result within {CHILD_TIMEOUT_S:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = done.stderr.strip().splitlines() or ["(no output)"]
        print(f"{kind} failed; the end of its stderr:", file=sys.stderr)
        for line in errors[-60:]:
            print(f"    {line}", file=sys.stderr)
        raise MeasurementFailed(f"{kind}: exit code {done.returncode}: {errors[-1]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@dataclass(frozen=True)
class Run:
    """One measurement of one thing."""

    messages: int
    seconds: float
    peak_rss: int | None = None
    # CPU seconds (user + system) of the measured process, where known: per message, a figure
    # that other work on a shared machine barely moves, unlike the wall clock.
    cpu_s: float | None = None

    @property
    def per_s(self) -> float:
        return self.messages / self.seconds


@dataclass
class Measurement:
    """One thing measured once per round; the best round's rate, the worst round's RSS."""

    label: str
    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def best(self) -> Run | None:
        return max(self.runs, key=lambda r: r.per_s, default=None)

    @property
    def per_s(self) -> float:
        return self.best.per_s if self.best else 0.0

    @property
    def peak_rss(self) -> int:
        return max((r.peak_rss or 0 for r in self.runs), default=0)

    def attempt(self, measure: Callable[[], Run]) -> None:
        try:
            self.runs.append(measure())
        except MeasurementFailed as exc:
            self.errors.append(str(exc))

    def row(self) -> str:
        best = self.best
        if best is None:
            return f"  {self.label:<44} FAILED"
        rss = f"{self.peak_rss / MB:.1f} MB" if self.peak_rss else "-"
        rounds = " / ".join(f"{r.per_s:,.0f}" for r in self.runs)
        return (f"  {self.label:<44} {best.messages:>9,} {best.seconds:>8.2f} "
                f"{best.per_s:>8,.0f} {rss:>9}   {rounds}")


def measure_smtp_source(work: Path, count: int, size: int, problems: list[str]) -> Run:
    with smtp_sink(work, "source") as sink:
        start = time.perf_counter()
        done = subprocess.run(
            ["smtp-source", "-s", str(SOURCE_SESSIONS), "-d", "-m", str(count), "-l", str(size),
             "-f", ENVELOPE_FROM, "-t", customer_email(0), f"127.0.0.1:{sink.port}"],
            capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise MeasurementFailed(f"smtp-source: exit code {done.returncode}: "
                                f"{done.stderr.strip()}")
    check_sink("smtp-source", sink, count, problems)
    return Run(count, seconds)


def measure_child(work: Path, kind: str, options: list[str], problems: list[str]
                  ) -> tuple[Run, dict[str, Any]]:
    with smtp_sink(work, kind) as sink:
        cpu_before = children_cpu_s()
        result = child(kind, "--port", str(sink.port), *options)
        cpu_s = children_cpu_s() - cpu_before
    run = Run(int(result["sent"]), float(result["seconds"]), int(result["peak_rss"]), cpu_s)
    check_sink(kind, sink, run.messages, problems)
    return run, result


def check_sink(what: str, sink: Sink, expected: int, problems: list[str]) -> None:
    counted = sink.delivered()
    if counted != expected:
        problems.append(f"{what}: smtp-sink counted {counted:,} messages, not {expected:,}")


def measure_mailer(work: Path, seeded: Path, campaign_id: int, opted_in: int,
                   problems: list[str], kind: str = "mailer",
                   extra: tuple[str, ...] = ()) -> Run:
    """Send the seeded campaign from a fresh copy of its database; check the ledger."""
    db = work / "sending.db"
    copy_db(seeded, db)
    # A hung send is reported (with its tasks' stacks) instead of waited on forever.
    deadline_s = 60 + opted_in / MIN_RATE_PER_S
    try:
        run, result = measure_child(work, kind, [
            "--db", str(db), "--campaign", str(campaign_id), "--deadline-s", str(deadline_s),
            *extra,
        ], problems)
    finally:
        for path in work.glob("sending.db*"):
            path.unlink()
    if not (result["sent"] == result["ledger_sent"] == opted_in
            and result["failed"] == result["skipped"] == result["ledger_pending"] == 0
            and result["status"] == "sent"):
        problems.append(
            f"mailer {opted_in:,}: status {result['status']} {result['reason']!r}, sent "
            f"{result['sent']:,}, ledger sent {result['ledger_sent']:,} of audience "
            f"{result['ledger_audience']:,}, failed {result['failed']}, skipped "
            f"{result['skipped']}, pending {result['ledger_pending']}; expected "
            f"{opted_in:,} sent")
    return run


def measure_cli(work: Path, seeded: Path, campaign_id: int, opted_in: int,
                problems: list[str]) -> Run:
    """`python -m mailer campaign send ID` from spawn to exit, on a fresh copy of the
    database; the ledger must count every opted-in customer sent."""
    db = work / "cli.db"
    copy_db(seeded, db)
    try:
        with smtp_sink(work, "cli") as sink:
            settings = work / "cli-settings.toml"
            settings.write_text(settings_toml(db, sink.port), encoding="utf-8")
            cpu_before = children_cpu_s()
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "mailer", "--settings", str(settings), "campaign",
                 "send", str(campaign_id)],
                capture_output=True, text=True, cwd=ROOT, timeout=CHILD_TIMEOUT_S)
            seconds = time.perf_counter() - start
            cpu_s = children_cpu_s() - cpu_before
        if done.returncode != 0:
            raise MeasurementFailed(f"mailer campaign send: exit code {done.returncode}: "
                                    f"{done.stderr.strip().splitlines()[-1:]}")
        check_sink("mailer campaign send", sink, opted_in, problems)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            sent = conn.execute("SELECT count(*) FROM campaign_recipients WHERE campaign_id = ? "
                                "AND status = 'sent'", (campaign_id,)).fetchone()[0]
        if sent != opted_in:
            problems.append(f"mailer campaign send: ledger sent {sent:,}, not {opted_in:,}")
    finally:
        for path in work.glob("cli.db*"):
            path.unlink()
    return Run(opted_in, seconds, cpu_s=cpu_s)


def copy_db(source: Path, target: Path) -> None:
    with contextlib.closing(sqlite3.connect(source)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])
    except OSError:
        return "?"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=100_000,
                        help="customers opted in (as many again opted out)")
    parser.add_argument("--small", type=int, default=10_000,
                        help="opted-in customers of the RSS comparison run")
    parser.add_argument("--naive", type=int, default=3_000,
                        help="messages sent by the naive EmailMessage + smtplib loop")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measure everything this many times; report the best rate")
    parser.add_argument("--cli", type=int, default=20_000,
                        help="opted-in customers of the command-line measurement (d)")
    parser.add_argument("--cli-only", action="store_true",
                        help="measure only (d), the command line, and its transport baseline")
    parser.add_argument("--profile", action="store_true",
                        help="profile a --cli-recipient send in-process and print the top")
    parser.add_argument("--ledger-compare", action="store_true",
                        help="send_campaign with and without the ledger's fast path")
    parser.add_argument("--dkim-compare", action="store_true",
                        help="(e) send_campaign unsigned, RSA-2048 and ed25519 signed")
    parser.add_argument("--top", type=int, default=25, help="profile entries to print")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--campaign", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--message", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--deadline-s", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--dkim", help=argparse.SUPPRESS)
    parser.add_argument("--dkim-key", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return 0
    if shutil.which("smtp-sink") is None or shutil.which("smtp-source") is None:
        print("smtp-sink and smtp-source are needed (Debian package postfix)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mailer-campaign-bench-"))
    try:
        if args.profile:
            return run_profile(work, args.cli, args.top)
        if args.dkim_compare:
            return run_dkim_compare(work, args.cli, max(args.rounds, 1))
        if args.ledger_compare:
            return run_ledger_compare(work, args.cli, max(args.rounds, 1))
        if args.cli_only:
            return run_cli_only(work, args.cli, max(args.rounds, 1))
        return run_all(work, args.recipients, args.small, min(args.naive, args.recipients),
                       max(args.rounds, 1), args.cli)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_profile(work: Path, n: int, top: int) -> int:
    db = work / "profile.db"
    campaign_id = asyncio.run(seed(db, n))
    print(f"profiling send_campaign of {n:,} recipients under cProfile (rates are slowed by "
          "the profiler; compare shares, not speeds)")
    problems: list[str] = []
    with smtp_sink(work, "profile") as sink:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "profile",
                   "--db", str(db), "--campaign", str(campaign_id), "--port", str(sink.port),
                   "--count", str(top)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              timeout=CHILD_TIMEOUT_S)
    print(done.stderr)
    if done.returncode != 0:
        return 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    check_sink("profile", sink, n, problems)
    print(f"profiled: {result['sent']:,} sent in {result['seconds']:.2f} s")
    for problem in problems:
        print(f"  CHECK FAILED: {problem}")
    return 1 if problems else 0


def cli_measurements(work: Path, cli_n: int, rounds: int, problems: list[str]
                     ) -> tuple[Measurement, Measurement, Measurement]:
    """(d): the command line against the transport limit (a), and against mailer's own
    pipelined transport (a'), all at `cli_n` recipients, alternating in each round."""
    cli_db, message = work / "cli-seed.db", work / "cli-sample.eml"
    cli_id = asyncio.run(seed(cli_db, cli_n))
    child("sample", "--db", str(cli_db), "--campaign", str(cli_id), "--message", str(message),
          "--count", str(min(cli_n, 1000)))
    transport = Measurement(f"(a) aiosmtplib prebuilt, {cli_n:,} messages")
    own = Measurement(f"(a') mailer.mail.smtp prebuilt, {cli_n:,} messages")
    cli = Measurement(f"(d) mailer campaign send (CLI), {cli_n:,}")
    for _ in range(rounds):
        transport.attempt(lambda: measure_child(
            work, "aiosmtplib", ["--message", str(message), "--count", str(cli_n)],
            problems)[0])
        own.attempt(lambda: measure_child(
            work, "session", ["--message", str(message), "--count", str(cli_n)],
            problems)[0])
        cli.attempt(lambda: measure_cli(work, cli_db, cli_id, cli_n, problems))
    return transport, own, cli


def cli_ratio_line(transport: Measurement, own: Measurement, cli: Measurement,
                   n: int) -> None:
    """The target (best rates), and two steadier views on a shared machine: the ratio of
    each round's adjacent pair (their median), and CPU seconds per message. Then, for
    reference, the CLI against mailer's own pipelined transport: what the campaign's work
    (consent, rendering, ledger, start-up) costs on top of the SMTP it does."""
    if not (cli.per_s and transport.per_s):
        return
    if own.per_s:
        label = "CLI / (a') mailer.mail.smtp (reference: the work on top)"
        print(f"  {label:<52} "
              f"{cli.per_s / own.per_s:>5.2f}")
    ratio = cli.per_s / transport.per_s
    print(f"  {'CLI ' + format(n, ',') + ' (start-up included) / (a) transport':<52} "
          f"{ratio:>5.2f}   target >= 0.75   {verdict(ratio >= 0.75)}")
    pairs = [c.per_s / t.per_s for t, c in zip(transport.runs, cli.runs, strict=False)]
    if pairs:
        shown = " / ".join(f"{r:.2f}" for r in pairs)
        print(f"  {'  the same, round by round (median)':<52} "
              f"{statistics.median(pairs):>5.2f}   ({shown})")
    cpu = [(t.cpu_s / t.messages, c.cpu_s / c.messages)
           for t, c in zip(transport.runs, cli.runs, strict=False)
           if t.cpu_s and c.cpu_s]
    if cpu:
        t_us = statistics.median(t for t, _ in cpu) * 1e6
        c_us = statistics.median(c for _, c in cpu) * 1e6
        print(f"  {'  CPU per message: transport / CLI':<52} {t_us / c_us:>5.2f}   "
              f"({t_us:,.0f} us / {c_us:,.0f} us, medians)")


def table(rounds: int, measurements: tuple[Measurement, ...]) -> None:
    print()
    print(f"  best of {rounds} round(s), load average now {load_average()}")
    print(f"  {'':<44} {'messages':>9} {'seconds':>8} {'msg/s':>8} {'peak RSS':>9}   "
          "msg/s per round")
    for measurement in measurements:
        print(measurement.row())


def report_problems(measurements: tuple[Measurement, ...], problems: list[str]) -> int:
    errors = [f"{m.label}: {e}" for m in measurements for e in m.errors]
    for problem in problems:
        print(f"  CHECK FAILED: {problem}")
    for error in errors:
        print(f"  MEASUREMENT FAILED: {error}")
    return 1 if errors or problems else 0


def run_ledger_compare(work: Path, n: int, rounds: int) -> int:
    db = work / "ledger-seed.db"
    campaign_id = asyncio.run(seed(db, n))
    print(f"ledger fast path: send_campaign of {n:,} recipients, {rounds} round(s), load "
          f"average {load_average()}")
    problems: list[str] = []
    fast = Measurement(f"ledger fast path (sqlite3 on the loop), {n:,}")
    slow = Measurement(f"ledger through aiosqlite only, {n:,}")
    for _ in range(rounds):
        fast.attempt(lambda: measure_mailer(work, db, campaign_id, n, problems))
        slow.attempt(lambda: measure_mailer(work, db, campaign_id, n, problems,
                                            kind="mailer-aiosqlite-ledger"))
    table(rounds, (fast, slow))
    if fast.per_s and slow.per_s:
        print(f"\n  fast path / aiosqlite only: {fast.per_s / slow.per_s:.2f}")
    return report_problems((fast, slow), problems)


def dkim_keys(work: Path) -> dict[str, Path]:
    """A fresh RSA-2048 key (PEM) and ed25519 key (base64 seed), as `[dkim]` reads them."""
    import base64

    import nacl.signing

    rsa_key, ed_key = work / "dkim-rsa.pem", work / "dkim-ed25519.key"
    subprocess.run(["openssl", "genrsa", "-out", str(rsa_key), "2048"], check=True,
                   capture_output=True)
    seed = bytes(nacl.signing.SigningKey.generate())
    ed_key.write_text(base64.b64encode(seed).decode("ascii") + "\n", encoding="ascii")
    return {"rsa-sha256": rsa_key, "ed25519-sha256": ed_key}


def run_dkim_compare(work: Path, n: int, rounds: int) -> int:
    """(e): the cost of DKIM signing, as a share of the send rate, all in this run."""
    db = work / "dkim-seed.db"
    campaign_id = asyncio.run(seed(db, n))
    keys = dkim_keys(work)
    print(f"DKIM cost: send_campaign of {n:,} recipients (as many opted out), VERP envelope "
          f"senders in all, {CONNECTIONS} SMTP connections, {rounds} round(s); "
          f"{os.cpu_count()} CPUs, load average {load_average()}")
    problems: list[str] = []
    for algorithm, key in keys.items():
        checked = child("verify", "--db", str(db), "--campaign", str(campaign_id),
                        "--count", "200", "--dkim", algorithm, "--dkim-key", str(key))
        print(f"  {algorithm}: {checked['verified']} of {checked['built']} sample messages "
              "verify with dkimpy")
        if checked["verified"] != checked["built"]:
            problems.append(f"{algorithm}: only {checked['verified']} of {checked['built']} "
                            "signatures verify")
    unsigned = Measurement(f"unsigned (VERP only), {n:,}")
    signed = {
        "rsa-sha256": Measurement(f"DKIM rsa-sha256 (RSA-2048), {n:,}"),
        "ed25519-sha256": Measurement(f"DKIM ed25519-sha256, {n:,}"),
    }
    for _ in range(rounds):
        unsigned.attempt(lambda: measure_mailer(work, db, campaign_id, n, problems,
                                                extra=("--dkim", "none")))
        for algorithm, measurement in signed.items():
            measurement.attempt(lambda a=algorithm: measure_mailer(  # type: ignore[misc]
                work, db, campaign_id, n, problems,
                extra=("--dkim", a, "--dkim-key", str(keys[a]))))
    everything = (unsigned, *signed.values())
    table(rounds, everything)
    print()
    print("  signed / unsigned, measured in this run (best rates; CPU per message, medians)")
    for algorithm, measurement in signed.items():
        if not (measurement.per_s and unsigned.per_s):
            continue
        share = measurement.per_s / unsigned.per_s
        cpu_unsigned = statistics.median(r.cpu_s / r.messages for r in unsigned.runs
                                         if r.cpu_s) * 1e6
        cpu_signed = statistics.median(r.cpu_s / r.messages for r in measurement.runs
                                       if r.cpu_s) * 1e6
        print(f"  {algorithm:<16} rate {share:>5.2f} of unsigned ({1 - share:>6.1%} slower); "
              f"CPU {cpu_signed:,.0f} us vs {cpu_unsigned:,.0f} us a message "
              f"(+{cpu_signed - cpu_unsigned:,.0f} us for signing)")
    return report_problems(everything, problems)


def run_cli_only(work: Path, cli_n: int, rounds: int) -> int:
    print(f"campaign bench, command line only: {cli_n:,} opted in + {cli_n:,} opted out; "
          f"{CONNECTIONS} SMTP connections; smtp-sink on 127.0.0.1; {os.cpu_count()} CPUs, "
          f"load average {load_average()}")
    problems: list[str] = []
    transport, own, cli = cli_measurements(work, cli_n, rounds, problems)
    table(rounds, (transport, own, cli))
    print()
    cli_ratio_line(transport, own, cli, cli_n)
    print()
    if cli.runs and not problems:
        print(f"  delivery: every round, the ledger and smtp-sink each counted exactly the "
              f"{cli_n:,} opted-in customers")
    return report_problems((transport, own, cli), problems)


def run_all(work: Path, n: int, small: int, naive_count: int, rounds: int,
            cli_n: int) -> int:
    big_db, small_db, message = work / "big.db", work / "small.db", work / "sample.eml"
    t0 = time.perf_counter()
    big_id = asyncio.run(seed(big_db, n))
    small_id = asyncio.run(seed(small_db, small))
    print(f"campaign bench: {n:,} opted in + {n:,} opted out; {CONNECTIONS} SMTP connections; "
          f"smtp-sink on 127.0.0.1; {os.cpu_count()} CPUs, load average {load_average()}")
    print(f"seeded {2 * n:,} + {2 * small:,} customers in {time.perf_counter() - t0:.1f} s "
          "(not measured); each send starts from a fresh copy")
    sampled = min(n, 1000)
    sample = child("sample", "--db", str(big_db), "--campaign", str(big_id),
                   "--message", str(message), "--count", str(sampled))
    size = int(sample["bytes"])
    print(f"message: {size:,} bytes (mean of the first {sampled:,} recipients' "
          f"{float(sample['mean_bytes']):,.0f}), template {TEMPLATE}, text + HTML")

    source = Measurement(f"(c) smtp-source -s {SOURCE_SESSIONS} -d (C ceiling)")
    transport = Measurement(f"(a) aiosmtplib, {CONNECTIONS} connections, prebuilt")
    naive = Measurement("(b) EmailMessage + smtplib, 1 conn/message")
    mailer = Measurement(f"mailer send_campaign, {n:,} recipients")
    mailer_small = Measurement(f"mailer send_campaign, {small:,} recipients")
    problems: list[str] = []
    for _ in range(rounds):
        source.attempt(lambda: measure_smtp_source(work, n, size, problems))
        transport.attempt(lambda: measure_child(
            work, "aiosmtplib", ["--message", str(message), "--count", str(n)], problems)[0])
        naive.attempt(lambda: measure_child(
            work, "naive", ["--message", str(message), "--count", str(naive_count)],
            problems)[0])
        mailer.attempt(lambda: measure_mailer(work, big_db, big_id, n, problems))
        mailer_small.attempt(lambda: measure_mailer(work, small_db, small_id, small, problems))
    cli_transport, own, cli = cli_measurements(work, cli_n, rounds, problems)
    everything = (source, transport, naive, mailer, mailer_small, cli_transport, own, cli)
    table(rounds, everything)

    print()
    print("  ratios, all measured in this run")

    def line(label: str, value: str, target: str, ok: bool | None) -> None:
        outcome = "reference" if ok is None else verdict(ok)
        print(f"  {label:<36} {value:>9}   {target:<16} {outcome}")

    if mailer.per_s and transport.per_s:
        ratio = mailer.per_s / transport.per_s
        line("mailer msg/s / (a) transport limit", f"{ratio:.2f}", "target >= 0.6",
             ratio >= 0.6)
    if mailer.per_s and naive.per_s:
        ratio = mailer.per_s / naive.per_s
        line("mailer msg/s / (b) naive loop", f"{ratio:.2f}", "target >= 5", ratio >= 5)
    if mailer.per_s and source.per_s:
        line("mailer msg/s / (c) C ceiling", f"{mailer.per_s / source.per_s:.2f}", "", None)
    cli_ratio_line(cli_transport, own, cli, cli_n)
    if mailer.peak_rss and mailer_small.peak_rss:
        ratio = mailer.peak_rss / mailer_small.peak_rss
        line(f"mailer peak RSS {n:,} / {small:,}", f"{ratio:.2f}", "target <= 1.2",
             ratio <= 1.2)
    if mailer.peak_rss:
        megabytes = mailer.peak_rss / MB
        line(f"mailer peak RSS, {n:,} recipients", f"{megabytes:.1f} MB", "target < 150 MB",
             megabytes < 150)

    print()
    errors = [f"{m.label}: {e}" for m in everything for e in m.errors]
    if mailer.runs and not problems:
        print(f"  delivery: every round, the ledger and smtp-sink each counted exactly the "
              f"opted-in customers ({n:,} and {small:,}) and nobody else; campaign status sent")
    for problem in problems:
        print(f"  CHECK FAILED: {problem}")
    for error in errors:
        print(f"  MEASUREMENT FAILED: {error}")
    return 1 if errors or problems else 0


if __name__ == "__main__":
    sys.exit(main())
