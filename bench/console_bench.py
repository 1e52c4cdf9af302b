"""Console benchmark: customer search and the overview page on a large database.

World (default): 1,000,000 customers (names, companies and addresses drawn from a few hundred
of each, so common words match thousands), 10,000,000 consent events over 400 days (the two
import events of each customer, then opt-outs and a few opt-ins by email, one-click,
preference page, complaint and operator), and a campaign sending to 1,000,000 recipients,
600,000 of them sent. The data is generated with SQL inside SQLite (a recursive CTE per
table, through the real schema and its triggers: the search index and the daily roll-ups are
built as the daemon would build them); this bulk loader is the only code here that touches
SQLite directly. Generating is not measured. `--db PATH` keeps the database for a later run.

Measured through HTTP, signed in, against the real console on loopback in this process, one
request at a time (latency, not throughput): p50 and p95 of
- search: a mix of queries (a common surname, first name + surname prefix, a company word,
  a whole address and the start of one, a name no one has, a second page);
- overview: the whole page (queues, active campaign counts, both 90-day charts);
- baseline: the (empty) review queue page in the same run (routing, session, a database
  connection, one indexed query, rendering), so the figures read as a ratio on any machine.
Targets: search p95 < 100 ms, overview p95 < 300 ms. MISS is reported, exit code 0.

On PostgreSQL (`--postgresql`: a server of its own, tests/postgres.py, on loopback; or
`--database-url URL` of an empty database) the same customers are generated with
generate_series through the real schema (its indexes built afterwards, as a restore would),
with the import events only (`--events` is for SQLite); search and the baseline are measured
the same way.

Run: `python bench/console_bench.py [--customers N] [--events N] [--requests N] [--db PATH]
[--postgresql | --database-url URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailer.console.app import make_app  # noqa: E402
from mailer.settings import Settings, from_mapping  # noqa: E402
from mailer.store import users  # noqa: E402
from mailer.store.db import open_db, transaction  # noqa: E402

PASSWORD = "benchmark password 1"


def words(text: str) -> list[str]:
    return text.split()


FIRST = words("James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David "
         "Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Oliver Amelia Harry "
         "Isla George Ava Noah Emily Jack Sophia Leo Grace Arthur Mia Muhammad Poppy Oscar "
         "Ella Charlie Lily")
LAST = words("Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright "
        "Thompson Evans Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris "
        "Edwards Turner Martin Cooper Hill Ward Hughes Moore Clark King Harrison Lewis Baker "
        "Lee Allen Morris Khan Scott Watson Davis Parker James Bennett Young Phillips Richardson "
        "Mitchell Bailey Carter Cook Singh Shaw Bell Collins Morgan Kelly Begum Miller Cox "
        "Marshall Simpson Anderson Ellis Adams Wilkinson Ali Mason Webb Chapman Hussain "
        "Brooks Fisher Hunt Knight Kaur Murray Mills Butler Palmer Stevens Lloyd Russell "
        "Reid Gibson Dixon Mason Graham Holmes Rose Owen Pearce Matthews Grant")
COMPANY = words("Acme Apex Beacon Bright Castle Cedar Crown Delta Eagle Falcon Forge Granite "
           "Harbour Heron Horizon Iron Jade Keystone Lark Maple Meridian Nova Oak Orbit "
           "Pinnacle Quarry River Sterling Summit Thames Tower Union Vale Willow Zenith")
SUFFIX = ("Ltd", "plc", "& Co", "Holdings", "Services", "Partners", "Group", "Trading")


def settings_for(db: Path | str) -> Settings:
    return from_mapping({
        "database": {"url": db} if isinstance(db, str) else {"path": str(db)},
        "imap": {"host": "127.0.0.1", "port": 1, "security": "none"},
        "smtp": {"host": "127.0.0.1", "port": 1, "security": "none",
                 "sender": "news@imperial.test"},
        "unsubscribe": {"address": "unsubscribe@imperial.test"},
        "templates": {"dir": str(ROOT / "templates")},
    }, base_dir=ROOT, environ={})


async def migrate(db: Path | str) -> None:
    async with open_db(db):
        pass


def generate(db: Path, customers: int, events: int) -> None:
    """Bulk-load the world with SQL (bench only; the console never writes like this)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    conn.execute("BEGIN")
    for table, words in (("first", FIRST), ("last", LAST), ("company", COMPANY),
                         ("suffix", SUFFIX)):
        conn.execute(f"CREATE TEMP TABLE w_{table} (i INTEGER PRIMARY KEY, w TEXT)")
        conn.executemany(f"INSERT INTO w_{table} VALUES (?, ?)", list(enumerate(words)))
    nf, nl, nc, ns = len(FIRST), len(LAST), len(COMPANY), len(SUFFIX)
    # Bulk loading: set the indexes and triggers of the two big tables aside, load, then
    # create them again and fill what the triggers would have filled with one statement each
    # (the same statements migration 3 uses), so the database ends as the daemon leaves it.
    kept = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND tbl_name IN ('customers', 'consent_events') AND sql IS NOT NULL").fetchall()
    for kind, name, _ in kept:
        conn.execute(f'DROP {kind.upper()} "{name}"')
    started = time.monotonic()
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {customers})
        INSERT INTO customers (id, email, name, company, phone, name_key, company_key,
                               announcements, offers, created_at, updated_at)
        SELECT n.i, lower(f.w) || '.' || lower(l.w) || n.i || '@example.com',
               f.w || ' ' || l.w, CASE WHEN n.i % 3 = 0 THEN c.w || ' ' || s.w ELSE '' END, '',
               lower(f.w || ' ' || l.w), CASE WHEN n.i % 3 = 0 THEN lower(c.w || ' ' || s.w)
               ELSE '' END, 1, 1, '2025-01-01T00:00:00.000000+00:00',
               '2025-01-01T00:00:00.000000+00:00'
        FROM n JOIN w_first f ON f.i = n.i % {nf} JOIN w_last l ON l.i = (n.i / {nf}) % {nl}
        JOIN w_company c ON c.i = (n.i / 7) % {nc} JOIN w_suffix s ON s.i = n.i % {ns}""")
    print(f"  {customers:,} customers in {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    imports = min(events, 2 * customers)
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {imports - 1})
        INSERT INTO consent_events (customer_id, at, category, old_value, new_value, source,
                                    reference)
        SELECT i / 2 + 1, '2025-01-01T00:00:00.000000+00:00',
               CASE i % 2 WHEN 0 THEN 'announcements' ELSE 'offers' END, NULL, 1, 'import',
               'customers.csv' FROM n""")
    rest = events - imports
    # Times to draw from: every quarter of an hour of the last 400 days.
    slots = 400 * 96
    conn.execute("CREATE TEMP TABLE t_at (i INTEGER PRIMARY KEY, at TEXT)")
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {slots - 1})
        INSERT INTO t_at SELECT i, strftime('%Y-%m-%dT%H:%M:%S.000000+00:00', 'now',
                                            '-' || (i * 900) || ' seconds') FROM n""")
    # Later changes: spread over the last 400 days; four in five are opt-outs.
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rest - 1})
        INSERT INTO consent_events (customer_id, at, category, old_value, new_value, source,
                                    reference, actor)
        SELECT (i * 7919) % {customers} + 1,
               (SELECT at FROM t_at WHERE t_at.i = (n.i * 104729) % {slots}),
               CASE i % 2 WHEN 0 THEN 'offers' ELSE 'announcements' END,
               CASE WHEN i % 5 = 4 THEN 0 ELSE 1 END, CASE WHEN i % 5 = 4 THEN 1 ELSE 0 END,
               CASE WHEN i % 5 = 4 THEN 'preference page' ELSE
                    CASE i % 11 WHEN 0 THEN 'complaint' WHEN 1 THEN 'operator'
                    WHEN 2 THEN 'preference page' WHEN 3 THEN 'one-click'
                    WHEN 4 THEN 'one-click' ELSE 'email' END END,
               '<bench-' || i || '@example.com>', '' FROM n""")
    print(f"  {events:,} consent events in {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    for _, _, sql in kept:
        conn.execute(sql)
    conn.execute("INSERT INTO customers_search (customers_search) VALUES ('rebuild')")
    conn.execute("DELETE FROM optouts_daily")
    conn.execute("INSERT INTO optouts_daily (day, source, count) SELECT substr(at, 1, 10), "
                 "source, count(*) FROM consent_events WHERE new_value = 0 GROUP BY 1, 2")
    print(f"  indexes, search index and roll-ups in {time.monotonic() - started:.0f} s",
          flush=True)
    started = time.monotonic()
    conn.execute("INSERT INTO campaigns (id, kind, template, subject, status, scheduled_at, "
                 "created_at, started_at, audience_at) VALUES (1, 'offers', 'welcome-offer', "
                 "'Spring offer', 'sending', '2025-01-01', '2025-01-01', '2025-01-01', "
                 "'2025-01-01')")
    conn.execute("INSERT INTO campaign_recipients (campaign_id, customer_id, status, "
                 "updated_at) SELECT 1, id, 'pending', NULL FROM customers")
    conn.execute("UPDATE campaign_recipients SET status = 'sent', attempts = 1, "
                 "updated_at = strftime('%Y-%m-%dT%H:%M:%S.000000+00:00', 'now', "
                 "'-' || (customer_id % 86400) || ' seconds') "
                 "WHERE campaign_id = 1 AND customer_id % 10 < 6")
    print(f"  a campaign of {customers:,} recipients in {time.monotonic() - started:.0f} s",
          flush=True)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def generate_postgresql(url: str, customers: int) -> None:
    """The SQLite world's customers (same names, companies and addresses) and their two
    import events, loaded into PostgreSQL with generate_series (bench only)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        with conn.transaction():
            for table, values in (("first", FIRST), ("last", LAST), ("company", COMPANY),
                                  ("suffix", SUFFIX)):
                conn.execute(f"CREATE TEMP TABLE w_{table} (i INTEGER PRIMARY KEY, w TEXT)")
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO w_{table} VALUES (%s, %s)",
                                    list(enumerate(values)))
            nf, nl, nc, ns = len(FIRST), len(LAST), len(COMPANY), len(SUFFIX)
            kept = conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'customers' "
                "AND indexname NOT LIKE '%_pkey'").fetchall()
            for name, _ in kept:
                conn.execute(f'DROP INDEX "{name}"')
            started = time.monotonic()
            conn.execute(f"""
                INSERT INTO customers (id, email, name, company, phone, name_key, company_key,
                                       announcements, offers, created_at, updated_at)
                OVERRIDING SYSTEM VALUE
                SELECT n.i, lower(f.w) || '.' || lower(l.w) || n.i || '@example.com',
                       f.w || ' ' || l.w,
                       CASE WHEN n.i % 3 = 0 THEN c.w || ' ' || s.w ELSE '' END, '',
                       lower(f.w || ' ' || l.w),
                       CASE WHEN n.i % 3 = 0 THEN lower(c.w || ' ' || s.w) ELSE '' END, 1, 1,
                       '2025-01-01T00:00:00.000000+00:00', '2025-01-01T00:00:00.000000+00:00'
                FROM generate_series(1, {customers}) AS n(i)
                JOIN w_first f ON f.i = n.i % {nf} JOIN w_last l ON l.i = (n.i / {nf}) % {nl}
                JOIN w_company c ON c.i = (n.i / 7) % {nc} JOIN w_suffix s ON s.i = n.i % {ns}""")
            conn.execute("SELECT setval(pg_get_serial_sequence('customers', 'id'), %s)",
                         (customers,))
            print(f"  {customers:,} customers in {time.monotonic() - started:.0f} s", flush=True)
            started = time.monotonic()
            for _, definition in kept:
                conn.execute(definition)
            print(f"  their indexes (search included) in {time.monotonic() - started:.0f} s",
                  flush=True)
        conn.execute("ANALYZE")


async def add_user(settings: Settings) -> None:
    async with open_db(settings.database.location) as conn, transaction(conn):
        await users.remove_user(conn, "bench")
        await users.add_user(conn, "bench", "admin", users.hash_password(PASSWORD))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(requests: int, get: Callable[[str], Awaitable[str]],
                  paths: list[str]) -> list[float]:
    for path in paths[:3]:
        await get(path)  # warm the page cache and the code paths
    times: list[float] = []
    for n in range(requests):
        path = paths[n % len(paths)]
        started = time.perf_counter()
        await get(path)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure_pages(settings: Settings, requests: int, search_only: bool = False
                        ) -> tuple[dict[str, list[float]], list[str], list[int]]:
    """Sign in to the real console on loopback and time its pages: each page's latencies in
    ms, the search queries and their result counts."""
    runner = web.AppRunner(make_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(base, cookie_jar=jar) as http:
            page = await (await http.get("/login")).text()
            token = re.search(r'name="login_token" value="([^"]+)"', page)
            assert token
            signed = await http.post("/login", data={"name": "bench", "password": PASSWORD,
                                                     "login_token": token.group(1)},
                                     allow_redirects=False)
            assert signed.status == 303, signed.status

            async def get(path: str) -> str:
                async with http.get(path, allow_redirects=False) as response:
                    text = await response.text()
                    assert response.status == 200, (path, response.status)
                    return text

            first = await get("/customers?q=smith")
            after = re.search(r"after=(\d+)", first)
            assert after, "a common surname should have a second page"
            queries = ["smith", "james smi", "acme", "acme ltd", "mary.jones1",
                       "nobody-called-this", "patel", "oliv khan", "harbour partners",
                       f"smith&after={after.group(1)}", "jack", "zenith",
                       "mary.smith1%40example.com", "MARY.SMITH12%40"]
            search_paths = [f"/customers?q={q}" for q in queries]
            hits = [len(re.findall(r'href="/customers/\d+"', await get(p)))
                    for p in search_paths]
            if search_only:
                return {"search": await measure(requests, get, search_paths)}, queries, hits
            results = {
                "baseline (review queue)": await measure(requests, get, ["/review"]),
                "search": await measure(requests, get, search_paths),
                "overview": await measure(requests, get, ["/"]),
            }
    finally:
        await runner.cleanup()
    return results, queries, hits


async def search_times(settings: Settings, requests: int) -> list[float]:
    results, _, _ = await measure_pages(settings, requests, search_only=True)
    return results["search"]


async def bench(settings: Settings, requests: int) -> int:
    results, queries, hits = await measure_pages(settings, requests)
    print(f"search result counts per query (page of 25): {dict(zip(queries, hits, strict=True))}")
    targets = {"search": 100.0, "overview": 300.0}
    base_p95 = percentile(results["baseline (review queue)"], 0.95)
    print(f"\n{'page':<26}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'p95/base':>10}  target")
    for name, times in results.items():
        p95 = percentile(times, 0.95)
        target = targets.get(name)
        verdict = "" if target is None else (
            f"p95 < {target:.0f} ms: {'ok' if p95 < target else 'MISS'}")
        print(f"{name:<26}{statistics.median(times):9.1f}{p95:9.1f}{max(times):9.1f}"
              f"{p95 / base_p95:10.1f}  {verdict}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--db", type=Path, default=None,
                        help="keep (or reuse) the generated database here")
    parser.add_argument("--postgresql", action="store_true",
                        help="on a PostgreSQL server of its own (tests/postgres.py)")
    parser.add_argument("--database-url", default="", help="an empty PostgreSQL database")
    args = parser.parse_args()
    if args.postgresql or args.database_url:
        return run_postgresql(args)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        if not db.exists():
            print(f"generating {args.customers:,} customers and {args.events:,} consent "
                  f"events in {db} ...", flush=True)
            asyncio.run(migrate(db))
            generate(db, args.customers, args.events)
        settings = settings_for(db)
        asyncio.run(add_user(settings))
        with sqlite3.connect(db) as conn:
            (n_customers,) = conn.execute("SELECT count(*) FROM customers").fetchone()
            (n_events,) = conn.execute("SELECT max(id) FROM consent_events").fetchone()
        print(f"database: {n_customers:,} customers, {n_events:,} consent events, "
              f"{db.stat().st_size / 1e9:.1f} GB")
        return asyncio.run(bench(settings, args.requests))


def run_postgresql(args: argparse.Namespace) -> int:
    from tests.postgres import PostgresServer

    server = None
    url = args.database_url
    if not url:
        server = PostgresServer()
        server.start()
        url = server.create_database()
    try:
        print(f"generating {args.customers:,} customers in PostgreSQL ...", flush=True)
        asyncio.run(migrate(url))
        generate_postgresql(url, args.customers)
        settings = settings_for(url)
        asyncio.run(add_user(settings))
        return asyncio.run(bench(settings, args.requests))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
