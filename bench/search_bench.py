"""Customer search and erasure on either store engine: the store functions the console calls,
timed one at a time (latency), on SQLite or PostgreSQL.

World: N customers (default 50,000) through the real streaming import (names, companies and
addresses drawn so a company word matches about one customer in a hundred). Measured:
- search: p50 and p95 of a mix (a whole name, a name's start, a company word, an address and
  its start, a word no one has, a second page);
- erase: one customer's erasure, with what follows it (SQLite: WAL checkpoint; PostgreSQL:
  VACUUM of the tables it wrote, indexes included).
The import time is printed too. Target: search p95 < 50 ms; MISS is reported, exit code 0.

Run: `python bench/search_bench.py [--customers N] [--url postgresql://user@host:port/db]`
(without --url, a SQLite file in a temporary folder; the PostgreSQL database must be empty).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailer.consent import rights  # noqa: E402
from mailer.consent.imports import import_csv  # noqa: E402
from mailer.store import console  # noqa: E402
from mailer.store.db import open_db  # noqa: E402
from mailer.store.engine import Location  # noqa: E402

KEY = b"a benchmark key of sixteen characters or more"
FIRST = ["Ann", "Bob", "Cara", "Dev", "Eve", "Femi", "Gus", "Hana", "Ivo", "Jun"]
LAST = ["Lee", "Roe", "Okafor", "Smith", "Nakamura", "Brown", "Patel", "Kowalski"]


def customers_csv(count: int) -> bytes:
    rows = (f"{FIRST[n % 10]} {LAST[n % 8]}{n},c{n}@example.com,Firm{n % 97} Ltd\n"
            for n in range(count))
    return ("name,email,company\n" + "".join(rows)).encode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def bench(location: Location, count: int, rounds: int) -> int:
    async with open_db(location) as conn:
        started = time.perf_counter()
        report = await import_csv(conn, io.BytesIO(customers_csv(count)), name="bench.csv",
                                  consent=True, suppression_key=KEY)
        assert report.ok, report.bad_rows[:3]
        print(f"{conn.engine}: imported {count} customers in "
              f"{time.perf_counter() - started:.1f} s")
        middle = count // 2
        name = f"{FIRST[middle % 10]} {LAST[middle % 8]}{middle}"
        queries = [name, name[:-1], "firm42", f"c{middle}@example.com", f"c{middle}@exa",
                   "nobody-has-this"]
        first = await console.search_customers(conn, "firm42")
        times: list[float] = []
        for n in range(rounds):
            text = queries[n % len(queries)]
            started = time.perf_counter()
            if n % 7 == 6 and first.next_after is not None:
                await console.search_customers(conn, "firm42", after=first.next_after)
            else:
                await console.search_customers(conn, text)
            times.append((time.perf_counter() - started) * 1000)
        p95 = percentile(times, 0.95)
        print(f"{conn.engine}: search p50 {statistics.median(times):.2f} ms, p95 {p95:.2f} ms "
              f"({'ok' if p95 < 50 else 'MISS'}: target p95 < 50 ms)")
        started = time.perf_counter()
        await rights.erase(conn, f"c{middle}@example.com", key=KEY, reason="bench", actor="b")
        print(f"{conn.engine}: erased one customer in "
              f"{(time.perf_counter() - started) * 1000:.0f} ms")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--url", default="", help="an empty PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        location: Location = args.url or Path(folder) / "mailer.db"
        return asyncio.run(bench(location, args.customers, args.rounds))


if __name__ == "__main__":
    sys.exit(main())
