"""`mailer customers export` and `erase`, through the real CLI, a real database (SQLite and
PostgreSQL) and Dovecot: the export holds every table's rows for the person and no one else's;
an erasure leaves no trace of the address in any table, in the SQLite file and its write-ahead
log (on PostgreSQL: the touched tables were vacuumed), or the IMAP folders, and a later import
of the address comes back suppressed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailer.store.rights import NOT_PERSONAL, PERSONAL, is_fts_shadow
from tests import dbrows
from tests.helpers import base_sections, run_cli, write_settings
from tests.rights.traces import (
    column_names,
    index_entries_holding,
    one,
    table_names,
    versions_holding,
)
from tests.servers import ImapTestServer, RawImap, sample_message

KEY = {"MAILER_SUPPRESSION_KEY": "a test key of at least sixteen characters"}
CSV = ("name,email,company,phone,announcements,offers\n"
       "Ann Lee,ann@example.com,Lee Ltd,0123 456,yes,yes\n"
       "Bob Roe,bob@example.com,Roe plc,0999,yes,yes\n")


@pytest.fixture
def settings_file(tmp_path: Path, imap_server: ImapTestServer, database: Path | str) -> Path:
    return write_settings(tmp_path / "settings.toml", base_sections(
        tmp_path, database=dbrows.database_section(database), imap={
            "host": imap_server.host, "port": imap_server.port, "security": "none",
            "username": imap_server.username, "password": imap_server.password}))


def cli(settings_file: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli(settings_file, *args, env=KEY)
    return result.code, result.stdout, result.stderr


def folder_texts(raw: RawImap, folder: str) -> list[str]:
    raw.command(f'EXAMINE "{folder}"')
    return [line.decode("utf-8", "replace")
            for line in raw.command("UID FETCH 1:* (BODY.PEEK[])") if b"FETCH" in line]


@pytest.fixture
def world(tmp_path: Path, settings_file: Path, raw_imap: RawImap) -> Path:
    """Ann and Bob imported; both opted out by email (their requests filed in Processed);
    a message in Review names Ann; Carol's unrelated mail sits in Processed."""
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(CSV, encoding="utf-8")
    assert cli(settings_file, "customers", "import", str(csv_file))[0] == 0
    raw_imap.append_many("INBOX", [
        sample_message(subject="Unsubscribe special offers", sender="Ann Lee <ann@example.com>",
                       to="unsubscribe@imperial.test", body="Please stop.\n"),
        sample_message(subject="Unsubscribe special offers", sender="bob@example.com",
                       to="unsubscribe@imperial.test", body="Stop please.\n"),
    ])
    code, _, err = cli(settings_file, "inbox", "process")
    assert code == 0, err
    raw_imap.append_many("Review", [sample_message(
        subject="For my mother", sender="dan@example.org",
        body="Please remove Ann Lee from your offers.\n")])
    raw_imap.append_many("Processed", [sample_message(subject="Hello", sender="carol@example.net",
                                                      body="Nothing about anyone.\n")])
    return tmp_path


def test_every_table_is_known_to_export_and_erasure(world: Path, database: Path | str) -> None:
    names = table_names(database)
    unplaced = {n for n in names if not is_fts_shadow(n)} - set(PERSONAL) - set(NOT_PERSONAL)
    assert unplaced == set()
    assert set(PERSONAL) & set(NOT_PERSONAL) == set()


def test_export_holds_the_persons_rows_of_every_table_and_no_one_elses(
    world: Path, settings_file: Path, database: Path | str
) -> None:
    out = world / "ann.json"
    code, stdout, err = cli(settings_file, "customers", "export", "ann@example.com",
                            "--out", str(out))
    assert code == 0, err
    assert "exported ann@example.com" in stdout
    text = out.read_text(encoding="utf-8")
    document = json.loads(text)
    assert document["record"]["name"] == "Ann Lee"
    assert document["record"]["phone"] == "0123 456"
    assert document["preferences"] == {"announcements": False, "offers": False}
    assert set(document["tables"]) == set(PERSONAL)
    ann_id = one(database, "SELECT id FROM customers WHERE email = 'ann@example.com'")
    events = one(database, "SELECT count(*) FROM consent_events WHERE customer_id = ?", ann_id)
    outbox = one(database, "SELECT count(*) FROM outbox WHERE customer_id = ?", ann_id)
    assert len(document["consent_history"]) == events == 4  # import x2, email x2
    assert len(document["tables"]["outbox"]) == outbox == 1
    assert len(document["tables"]["inbound"]) == 1
    assert all(e["customer_id"] == ann_id for e in document["consent_history"])
    # Each event with its evidence: the request's From, the import's file and line.
    assert [(e["source"], e["message_from"], e["import_file"], e["import_line"])
            for e in document["consent_history"]] == [
        ("import", "", "customers.csv", 2)] * 2 + [
        ("email", "Ann Lee <ann@example.com>", "", None)] * 2
    mails = document["request_emails"]
    assert sorted(m["folder"] for m in mails) == ["Processed", "Review"]
    assert "bob@example.com" not in text and "Bob Roe" not in text
    assert "carol@example.net" not in text


def test_export_to_standard_output_of_an_unknown_address_is_not_found(
    world: Path, settings_file: Path
) -> None:
    code, _, err = cli(settings_file, "customers", "export", "nobody@example.com")
    assert code == 1
    assert err.strip() == "mailer: no customer with email nobody@example.com"


def test_erase_leaves_no_trace_of_the_address_in_the_files_or_the_folders(
    world: Path, settings_file: Path, raw_imap: RawImap, database: Path | str
) -> None:
    ann_id = one(database, "SELECT id FROM customers WHERE email = 'ann@example.com'")
    events_before = one(database, "SELECT count(*) FROM consent_events WHERE customer_id = ?",
                        ann_id)
    code, stdout, err = cli(settings_file, "customers", "erase", "ann@example.com",
                            "--reason", "asked by phone, identity checked", "--by", "alice")
    assert code == 0, err
    assert "erased ann@example.com" in stdout
    assert "removed the request emails from Processed and Review" in stdout

    if isinstance(database, Path):
        for suffix in ("", "-wal"):
            path = database.with_name(database.name + suffix)
            data = path.read_bytes() if path.exists() else b""
            for secret in (b"ann@example.com", b"Ann Lee", b"Lee Ltd", b"0123 456"):
                assert secret not in data, (path.name, secret)
    else:
        # PostgreSQL keeps an updated row's old version (a dead tuple) in the table until a
        # VACUUM: the erasure ran one on the tables it wrote, so no row version on any page
        # of any table, live or dead, holds the address any more.
        assert dbrows.rows(database, "SELECT relname FROM pg_stat_user_tables WHERE relname "
                           "IN ('customers', 'consent_events', 'outbox') AND last_vacuum IS "
                           "NOT NULL ORDER BY relname") == [
            ("consent_events",), ("customers",), ("outbox",)]
        assert versions_holding(database, b"ann@example.com") == []
        assert index_entries_holding(database, b"ann@example.com") == []
    for table in sorted(table_names(database)):
        if table.startswith("customers_search"):
            continue
        for column in column_names(database, table):
            hits = one(database, f"SELECT count(*) FROM {table} WHERE CAST({column} AS TEXT) "
                       f"LIKE ? OR CAST({column} AS TEXT) LIKE ?", "%ann@example.com%",
                       "%Ann Lee%")
            assert hits == 0, (table, column)
    assert one(database, "SELECT count(*) FROM consent_events WHERE customer_id = ?",
               ann_id) == events_before
    assert dbrows.rows(database, "SELECT customer_id, reason, actor FROM erasures") == [
        (ann_id, "asked by phone, identity checked", "alice")]
    assert one(database, "SELECT count(*) FROM erasure_imap_pending") == 0
    assert dbrows.rows(database, "SELECT name, company FROM customers WHERE email = "
                       "'bob@example.com'") == [("Bob Roe", "Roe plc")]
    processed = "\n".join(folder_texts(raw_imap, "Processed"))
    review = "\n".join(folder_texts(raw_imap, "Review"))
    assert "ann@example.com" not in processed + review
    assert "Ann Lee" not in processed + review
    assert "bob@example.com" in processed and "carol@example.net" in processed

    code, _, err = cli(settings_file, "customers", "show", "ann@example.com")
    assert code == 1
    assert "ann@example.com was erased on" in err


def test_an_erased_address_imported_again_comes_back_suppressed(
    world: Path, settings_file: Path
) -> None:
    assert cli(settings_file, "customers", "erase", "ann@example.com", "--reason", "asked")[0] == 0
    again = world / "again.csv"
    again.write_text("name,email,announcements,offers\nAnn Lee,ANN@example.com,yes,yes\n",
                     encoding="utf-8")
    code, stdout, err = cli(settings_file, "customers", "import", str(again))
    assert code == 0, err
    assert "1 created" in stdout and "1 suppressed" in stdout
    assert "line 2: ANN@example.com is on the suppression list" in err
    code, stdout, _ = cli(settings_file, "customers", "show", "ann@example.com", "--json")
    assert code == 0
    assert json.loads(stdout)["preferences"] == {"announcements": False, "offers": False}


def test_erase_without_the_suppression_key_is_refused_and_changes_nothing(
    world: Path, settings_file: Path
) -> None:
    result = run_cli(settings_file, "customers", "erase", "ann@example.com", "--reason", "x",
                     env={"MAILER_SUPPRESSION_KEY": ""})
    assert result.code == 2
    assert "[privacy] suppression_key: not set" in result.stderr
    assert cli(settings_file, "customers", "show", "ann@example.com")[0] == 0


def test_a_suppression_key_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    path = write_settings(tmp_path / "settings.toml", base_sections(
        tmp_path, privacy={"suppression_key": "a key written in the file"}))
    result = run_cli(path, "customers", "show", "x@example.com")
    assert result.code == 2
    assert "[privacy] suppression_key: set it in the environment" in result.stderr


def test_an_imap_clean_up_that_fails_is_kept_and_finished_by_a_later_run(
    world: Path, settings_file: Path, tmp_path: Path, raw_imap: RawImap, database: Path | str
) -> None:
    unreachable = write_settings(tmp_path / "down.toml", base_sections(
        tmp_path, database=dbrows.database_section(database),
        imap={"host": "127.0.0.1", "port": 1, "security": "none", "timeout_s": 5.0}))
    result = run_cli(unreachable, "customers", "erase", "ann@example.com", "--reason", "asked",
                     env=KEY)
    assert result.code == 3
    assert result.stderr.startswith("mailer: erased from the database; the IMAP clean-up is "
                                    "pending and retried by `mailer retention run`: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert one(database, "SELECT count(*) FROM erasure_imap_pending") == 1
    assert "ann@example.com" in "\n".join(folder_texts(raw_imap, "Processed"))

    code, stdout, err = cli(settings_file, "retention", "run")
    assert code == 0, err
    assert "erasures: finished 1 pending IMAP clean-up(s)" in stdout
    assert "ann@example.com" not in "\n".join(folder_texts(raw_imap, "Processed"))
    assert "Ann Lee" not in "\n".join(folder_texts(raw_imap, "Review"))
    assert one(database, "SELECT count(*) FROM erasure_imap_pending") == 0
    assert "erasures:" not in cli(settings_file, "retention", "run")[1]


def test_a_suppression_key_too_short_to_be_secret_is_refused(settings_file: Path) -> None:
    result = run_cli(settings_file, "customers", "show", "x@example.com",
                     env={"MAILER_SUPPRESSION_KEY": "short"})
    assert result.code == 2
    assert result.stderr.strip() == ("mailer: settings: [privacy] suppression_key: expected at "
                                     "least 16 characters")
