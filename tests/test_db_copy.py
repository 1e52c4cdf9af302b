"""`mailer db copy --to postgresql://...`: a SQLite installation moved into an empty PostgreSQL
database, every table in one transaction, verified afterwards; a non-empty target refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.store import users
from mailer.store.copy import canonical, checksum, fk_order
from mailer.store.db import open_db, transaction
from tests.dbrows import execute, rows
from tests.helpers import base_sections, run_cli, write_settings
from tests.postgres import PostgresServer

# Tables compared row for row after the copy (every table's count is compared by the command).
COMPARED = ("customers", "consent_events", "campaigns", "campaign_recipients", "inbound",
            "review_items", "console_users", "optouts_daily", "campaign_progress")


async def populated_sqlite(tmp_path: Path) -> Path:
    """A settings file on a SQLite installation with customers and their consent history, a
    campaign with ledger rows, review items and a console user."""
    settings = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    (tmp_path / "customers.csv").write_text(
        "name,email,company\nAnn Lee,ann@example.com,Lee Plumbing Ltd\n"
        "Bob Roe,bob@example.com,\nZoë Brontë,zoe@example.com,Haworth & Co\n")
    imported = run_cli(settings, "customers", "import", "--consent", "opted-in",
                       str(tmp_path / "customers.csv"))
    assert imported.code == 0, imported.stderr
    db = tmp_path / "mailer.db"
    execute(db, "INSERT INTO consent_events (customer_id, at, category, old_value, new_value, "
            "source, reference) VALUES (2, '2026-01-05T10:00:00+00:00', 'offers', 1, 0, "
            "'email', 'uid 7')")
    execute(db, "UPDATE customers SET offers = 0 WHERE id = 2")
    execute(db, "INSERT INTO campaigns (kind, template, subject, status, created_at) VALUES "
            "('offers', 'welcome-offer', 'An offer', 'sending', '2026-01-05T09:00:00+00:00')")
    for customer, state in ((1, "sent"), (3, "pending")):
        execute(db, "INSERT INTO campaign_recipients (campaign_id, customer_id, status) "
                "VALUES (1, ?, ?)", (customer, state))
    execute(db, "INSERT INTO inbound (message_key, folder, uidvalidity, uid, outcome, "
            "destination, decided_at) VALUES ('k1', 'INBOX', 1, 7, 'review', 'Review', 'now')")
    execute(db, "INSERT INTO review_items (inbound_id, reason, created_at) "
            "VALUES (1, 'two customers share that name', 'now')")
    async with open_db(db) as conn, transaction(conn):
        assert await users.add_user(conn, "alice", "admin", users.hash_password("a long pass"))
    return settings


def everything(location: Path | str, table: str) -> list[tuple[object, ...]]:
    return sorted(rows(location, f"SELECT * FROM {table}"), key=repr)


def counts(location: Path | str) -> dict[str, int]:
    return {t: int(rows(location, f"SELECT count(*) FROM {t}")[0][0]) for t in COMPARED}


async def test_a_populated_sqlite_installation_arrives_whole_and_the_store_reads_it(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    settings = await populated_sqlite(tmp_path)
    url = postgres_server.create_database()

    result = run_cli(settings, "db", "copy", "--to", url)

    assert (result.code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"copied {tmp_path / 'mailer.db'} to {url} in ")
    assert "  customers                             3          3" in lines
    assert lines[-1].startswith("consent history checksum ")
    db = tmp_path / "mailer.db"
    for table in COMPARED:
        assert everything(url, table) == everything(db, table), table
    async with open_db(url) as conn:
        found = await users.user_with_hash(conn, "alice")
        assert found is not None and users.verify_password("a long pass", found[1])
        # The identity sequences were moved past the copied ids: a new row gets the next one.
        async with transaction(conn):
            assert await users.add_user(conn, "bob", "reviewer", users.hash_password("x" * 12))
    assert rows(url, "SELECT id FROM console_users WHERE name = 'bob'") == [(2,)]
    assert rows(url, "SELECT offers FROM customers WHERE email = 'bob@example.com'") == [(0,)]


async def test_a_target_with_rows_is_refused_in_one_line_and_left_as_it_was(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    settings = await populated_sqlite(tmp_path)
    url = postgres_server.create_database()
    assert run_cli(settings, "db", "copy", "--to", url).code == 0
    before = counts(url)

    again = run_cli(settings, "db", "copy", "--to", url)

    assert again.code == 3
    assert again.stdout == ""
    assert again.stderr == (f"mailer: {url} is not empty: table campaign_progress has rows; "
                            "mailer db copy fills only an empty database\n")
    assert counts(url) == before


async def test_a_database_of_something_else_is_refused_and_gets_no_mailer_tables(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    settings = await populated_sqlite(tmp_path)
    url = postgres_server.create_database()
    execute(url, "CREATE TABLE invoices (id BIGINT)")

    result = run_cli(settings, "db", "copy", "--to", url)

    assert result.code == 3
    assert len(result.stderr.splitlines()) == 1
    assert "is no mailer database" in result.stderr
    assert rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == [
        ("invoices",)]


async def test_a_copy_that_fails_midway_leaves_the_target_without_a_row(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    settings = await populated_sqlite(tmp_path)
    # SQLite keeps a NUL inside text; PostgreSQL's text cannot hold one: review_items comes
    # after customers, consent events and the campaign in the copy, so they were written.
    execute(tmp_path / "mailer.db", "UPDATE review_items SET reason = ?", ("bad\x00reason",))
    url = postgres_server.create_database()

    result = run_cli(settings, "db", "copy", "--to", url)

    assert result.code == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mailer: copy to {url} failed, nothing kept there: ")
    assert set(counts(url).values()) == {0}
    # Fixed at the source, the same target takes the copy.
    execute(tmp_path / "mailer.db", "UPDATE review_items SET reason = 'fixed'")
    assert run_cli(settings, "db", "copy", "--to", url).code == 0
    assert counts(url) == counts(tmp_path / "mailer.db")


def test_copy_to_something_other_than_postgresql_is_bad_input(tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "settings.toml", base_sections(tmp_path))
    result = run_cli(settings, "db", "copy", "--to", "sqlite:///other.db")
    assert result.code == 2
    assert result.stderr == ("mailer: --to other.db: expected an empty PostgreSQL database, "
                             "postgresql://user@host:port/db\n")


def test_tables_are_ordered_parents_first_and_a_self_reference_is_no_cycle() -> None:
    parents = {"review_items": {"inbound"}, "consent_events": {"customers"},
               "campaign_recipients": {"campaigns", "customers"}, "erasures": {"erasures"}}
    order = fk_order(["review_items", "inbound", "campaign_recipients", "campaigns",
                      "customers", "consent_events", "erasures"], parents)
    assert order == ["campaigns", "customers", "erasures", "inbound", "campaign_recipients",
                     "consent_events", "review_items"]
    with pytest.raises(Exception, match="cycle among a, b"):
        fk_order(["a", "b"], {"a": {"b"}, "b": {"a"}})


def test_the_checksum_reads_each_engines_values_alike() -> None:
    assert canonical(1) == canonical(True) == "i1"
    assert canonical(None) != canonical("") != canonical(0)
    assert checksum([(1, "a", None)]) != checksum([(1, "a", "")])
    assert checksum([(1, "ab")]) != checksum([(1, "a"), ("b",)])
