"""`mailer customers export` and `erase`, through the real CLI, a real SQLite file and Dovecot:
the export holds every table's rows for the person and no one else's; an erasure leaves no
trace of the address in the database file, its write-ahead log or the IMAP folders, and a
later import of the address comes back suppressed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mailer.store.rights import NOT_PERSONAL, PERSONAL, is_fts_shadow
from tests.helpers import base_sections, run_cli, write_settings
from tests.servers import ImapTestServer, RawImap, sample_message

KEY = {"MAILER_SUPPRESSION_KEY": "a test key of at least sixteen characters"}
CSV = ("name,email,company,phone,announcements,offers\n"
       "Ann Lee,ann@example.com,Lee Ltd,0123 456,yes,yes\n"
       "Bob Roe,bob@example.com,Roe plc,0999,yes,yes\n")


@pytest.fixture
def settings_file(tmp_path: Path, imap_server: ImapTestServer) -> Path:
    return write_settings(tmp_path / "settings.toml", base_sections(tmp_path, imap={
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


def test_every_table_is_known_to_export_and_erasure(world: Path) -> None:
    with sqlite3.connect(world / "mailer.db") as conn:
        names = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    unplaced = {n for n in names if not is_fts_shadow(n)} - set(PERSONAL) - set(NOT_PERSONAL)
    assert unplaced == set()
    assert set(PERSONAL) & set(NOT_PERSONAL) == set()


def test_export_holds_the_persons_rows_of_every_table_and_no_one_elses(
    world: Path, settings_file: Path
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
    with sqlite3.connect(world / "mailer.db") as conn:
        (ann_id,) = conn.execute("SELECT id FROM customers WHERE email = 'ann@example.com'"
                                 ).fetchone()
        events = conn.execute("SELECT count(*) FROM consent_events WHERE customer_id = ?",
                              (ann_id,)).fetchone()[0]
        outbox = conn.execute("SELECT count(*) FROM outbox WHERE customer_id = ?",
                              (ann_id,)).fetchone()[0]
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
    world: Path, settings_file: Path, raw_imap: RawImap
) -> None:
    with sqlite3.connect(world / "mailer.db") as conn:
        (ann_id,) = conn.execute("SELECT id FROM customers WHERE email = 'ann@example.com'"
                                 ).fetchone()
        events_before = conn.execute("SELECT count(*) FROM consent_events WHERE customer_id = ?",
                                     (ann_id,)).fetchone()[0]
    code, stdout, err = cli(settings_file, "customers", "erase", "ann@example.com",
                            "--reason", "asked by phone, identity checked", "--by", "alice")
    assert code == 0, err
    assert "erased ann@example.com" in stdout
    assert "removed the request emails from Processed and Review" in stdout

    for suffix in ("", "-wal"):
        path = world / f"mailer.db{suffix}"
        data = path.read_bytes() if path.exists() else b""
        for secret in (b"ann@example.com", b"Ann Lee", b"Lee Ltd", b"0123 456"):
            assert secret not in data, (path.name, secret)
    with sqlite3.connect(world / "mailer.db") as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                     "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE "
                                     "'customers_search%'").fetchall():
            for column in conn.execute(f"PRAGMA table_info({table})").fetchall():
                hits = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE CAST({column[1]} AS TEXT) LIKE ? "
                    f"OR CAST({column[1]} AS TEXT) LIKE ?", ("%ann@example.com%", "%Ann Lee%"),
                ).fetchone()[0]
                assert hits == 0, (table, column[1])
        assert conn.execute("SELECT count(*) FROM consent_events WHERE customer_id = ?",
                            (ann_id,)).fetchone()[0] == events_before
        assert conn.execute("SELECT customer_id, reason, actor FROM erasures").fetchall() == [
            (ann_id, "asked by phone, identity checked", "alice")]
        assert conn.execute("SELECT count(*) FROM erasure_imap_pending").fetchone()[0] == 0
        assert conn.execute("SELECT name, company FROM customers WHERE email = "
                            "'bob@example.com'").fetchall() == [("Bob Roe", "Roe plc")]
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
    world: Path, settings_file: Path, tmp_path: Path, raw_imap: RawImap
) -> None:
    unreachable = write_settings(tmp_path / "down.toml", base_sections(
        tmp_path, imap={"host": "127.0.0.1", "port": 1, "security": "none", "timeout_s": 5.0}))
    result = run_cli(unreachable, "customers", "erase", "ann@example.com", "--reason", "asked",
                     env=KEY)
    assert result.code == 3
    assert result.stderr.startswith("mailer: erased from the database; the IMAP clean-up is "
                                    "pending and retried by `mailer retention run`: ")
    assert len(result.stderr.strip().splitlines()) == 1
    with sqlite3.connect(world / "mailer.db") as conn:
        assert conn.execute("SELECT count(*) FROM erasure_imap_pending").fetchone() == (1,)
    assert "ann@example.com" in "\n".join(folder_texts(raw_imap, "Processed"))

    code, stdout, err = cli(settings_file, "retention", "run")
    assert code == 0, err
    assert "erasures: finished 1 pending IMAP clean-up(s)" in stdout
    assert "ann@example.com" not in "\n".join(folder_texts(raw_imap, "Processed"))
    assert "Ann Lee" not in "\n".join(folder_texts(raw_imap, "Review"))
    with sqlite3.connect(world / "mailer.db") as conn:
        assert conn.execute("SELECT count(*) FROM erasure_imap_pending").fetchone() == (0,)
    assert "erasures:" not in cli(settings_file, "retention", "run")[1]


def test_a_suppression_key_too_short_to_be_secret_is_refused(settings_file: Path) -> None:
    result = run_cli(settings_file, "customers", "show", "x@example.com",
                     env={"MAILER_SUPPRESSION_KEY": "short"})
    assert result.code == 2
    assert result.stderr.strip() == ("mailer: settings: [privacy] suppression_key: expected at "
                                     "least 16 characters")
