"""Idle cost of `mailer run`, and `mailer status` latency, against real servers on loopback.

World: Dovecot (else pymap) with an empty INBOX, an SMTP sink, 1,000 customers, the daemon
started as `mailer run` (IMAP IDLE, heartbeat every 5 s, scheduler every 5 s).

(a) Idle cost: once the daemon is ready (its first heartbeat), CPU seconds (user + system,
    from /proc/PID/stat) over `--seconds` (default 60; the issue asks for 600) and RSS at the
    start and end (VmRSS). Reported as CPU seconds per hour and as a share of one core.
(b) `mailer status` latency: `--status-runs` runs (default 10) against the running daemon,
    median and worst, as a ratio to `mailer --help` (the interpreter and CLI start-up alone),
    measured the same way in the same run.

Run: `python bench/idle_bench.py [--seconds N] [--status-runs N]`. Exit 1 only if a
measurement could not be made (the daemon died, status did not say healthy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import DAEMON_SECRET  # noqa: E402
from tests.inbox.world import make_world  # noqa: E402
from tests.servers import SmtpSink, imap_server_class  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def timed(command: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started, result.returncode


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--status-runs", type=int, default=10)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mailer-idle-bench-"))
    server = imap_server_class()()
    sink = SmtpSink()
    server.start()
    sink.start()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        csv = "name,email\n" + "".join(f"C {i},c{i}@example.com\n" for i in range(1000))
        world = await make_world(tmp, server, sink, csv_text=csv,
                                 imap={"idle_timeout_s": 25 * 60.0})
        mailer = [sys.executable, "-m", "mailer", "--settings", str(world.settings_path)]
        daemon = subprocess.Popen([*mailer, "run"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=(tmp / "daemon.log").open("wb"),
                                  env={**os.environ, "MAILER_SECRET": DAEMON_SECRET})
        deadline = time.monotonic() + 60
        while timed([*mailer, "status"])[1] != 0:
            if time.monotonic() > deadline or daemon.poll() is not None:
                print("the daemon did not become healthy", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # let start-up settle

        cpu_start, rss_start = cpu_seconds(daemon.pid), rss_mb(daemon.pid)
        await asyncio.sleep(args.seconds)
        if daemon.poll() is not None:
            print("the daemon died while idle", file=sys.stderr)
            return 1
        cpu = cpu_seconds(daemon.pid) - cpu_start
        rss_end = rss_mb(daemon.pid)

        help_times = [timed([*mailer, "--help"])[0] for _ in range(args.status_runs)]
        status_runs = [timed([*mailer, "status"]) for _ in range(args.status_runs)]
        if any(code != 0 for _, code in status_runs):
            print("status did not say healthy", file=sys.stderr)
            return 1
        status_times = [t for t, _ in status_runs]

        print(f"IMAP server: {server.name}")
        print(f"(a) idle for {args.seconds:g} s: {cpu:.2f} CPU s "
              f"({cpu / args.seconds * 3600:.1f} CPU s/hour, "
              f"{cpu / args.seconds * 100:.2f}% of a core); "
              f"RSS {rss_start:.1f} MB at start, {rss_end:.1f} MB at end")
        s_med, h_med = statistics.median(status_times), statistics.median(help_times)
        print(f"(b) mailer status: median {s_med * 1000:.0f} ms, worst "
              f"{max(status_times) * 1000:.0f} ms over {args.status_runs} runs; "
              f"mailer --help median {h_med * 1000:.0f} ms; ratio {s_med / h_med:.2f}")
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        sink.stop()
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
