"""The fault suite as a soak: longer outages, more kills, several seeds; worst cases summed up.

CI runs `tests/faults` once at its own sizes (20 kills, 30 s outages). This runs the same
tests `--rounds` times with `MAILER_FAULT_KILLS`, `MAILER_FAULT_OUTAGE_S` and a different
`MAILER_FAULT_SEED` each round, collects the figures each test prints, and ends with the
worst of each: campaign duplicates per kill (against `[smtp] max_connections`), requests
honoured after an IMAP outage, sending resumed after an SMTP outage, requests honoured
after a full disk is freed. A failing round prints its pytest output and counts as a failure.

Run as root (the full-disk test mounts a tmpfs):
`python bench/soak.py [--rounds 3] [--kills 100] [--outage-s 300] [-k EXPR]`.
Exit 1 if any round failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIGURES = {
    "duplicates per kill": re.compile(r"campaign duplicates per kill \[[^\]]*\] \(max (\d+)"),
    "IMAP return to requests honoured, s": re.compile(r"requests honoured ([\d.]+) s after its"),
    "SMTP return to sending again, s": re.compile(r"sending resumed ([\d.]+) s after its"),
    "disk freed to requests honoured, s": re.compile(r"honoured ([\d.]+) s after space"),
    "restart to sending again (worst), s": re.compile(r"restart to sending again: median "
                                                      r"[\d.]+ s, max ([\d.]+) s"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--outage-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-k", default="", help="pytest -k expression (a subset of the tests)")
    args = parser.parse_args()

    worst: dict[str, float] = {}
    failed = 0
    for round_ in range(args.rounds):
        env = {**os.environ, "MAILER_FAULT_KILLS": str(args.kills),
               "MAILER_FAULT_OUTAGE_S": str(args.outage_s),
               "MAILER_FAULT_SEED": str(args.seed + round_)}
        command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                   "tests/faults", *(["-k", args.k] if args.k else [])]
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - started
        print(f"round {round_ + 1} (seed {args.seed + round_}): "
              f"{'ok' if result.returncode == 0 else 'FAILED'} in {elapsed:.0f} s", flush=True)
        if result.returncode != 0:
            failed += 1
            print(result.stdout[-5000:], result.stderr[-2000:], sep="\n")
        for name, pattern in FIGURES.items():
            for value in pattern.findall(result.stdout):
                worst[name] = max(worst.get(name, 0.0), float(value))
    print(f"\nworst over {args.rounds} round(s) of {args.kills} kills and "
          f"{args.outage_s:.0f} s outages:")
    for name, value in worst.items():
        print(f"  {name}: {value:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
