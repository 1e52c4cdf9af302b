"""`mailer customers import` and `show`: atomic, streaming, and never undoing a request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mailer.consent import change
from mailer.store import customers
from mailer.store.db import open_db, transaction
from tests import dbrows
from tests.helpers import base_sections, run_cli, write_settings


@pytest.fixture
def settings_file(tmp_path: Path, database: Path | str) -> Path:
    return write_settings(tmp_path / "settings.toml",
                          base_sections(tmp_path, database=dbrows.database_section(database)))


def write_csv(tmp_path: Path, text: str, name: str = "customers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def db_rows(database: Path | str, sql: str) -> list[tuple[object, ...]]:
    return dbrows.rows(database, sql)


def show(settings_file: Path, email: str) -> dict[str, object]:
    result = run_cli(settings_file, "customers", "show", email, "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_import_creates_customers_as_the_file_says_and_an_empty_cell_is_no_consent(
    tmp_path: Path, settings_file: Path
) -> None:
    csv_file = write_csv(tmp_path, "name,email,company,phone,announcements,offers\n"
                         "Ann Lee,Ann@Example.com,Lee Ltd,0123,yes,no\n"
                         "Bob Roe,bob@example.com,,,,\n")
    result = run_cli(settings_file, "customers", "import", "--by", "jo", str(csv_file))
    assert result.code == 0, result.stderr
    assert "2 created" in result.stdout
    ann = show(settings_file, "ann@example.com")
    assert ann["name"] == "Ann Lee" and ann["company"] == "Lee Ltd"
    assert ann["preferences"] == {"announcements": True, "offers": False}
    assert show(settings_file, "BOB@example.com")["preferences"] == {
        "announcements": False, "offers": False}
    history = ann["history"]
    assert isinstance(history, list)
    assert [(h["category"], h["old"], h["new"], h["source"], h["reference"], h["actor"])
            for h in history] == [
        ("announcements", None, True, "import", "customers.csv line 2", "jo"),
        ("offers", None, False, "import", "customers.csv line 2", "jo")]


def test_import_with_bad_rows_lists_each_and_imports_nothing(
    tmp_path: Path, settings_file: Path, database: Path | str
) -> None:
    csv_file = write_csv(tmp_path, "name,email,offers\n"
                         "Ann Lee,ann@example.com,yes\n"
                         "No Mail,,yes\n"
                         "Bad Mail,not-an-email,no\n"
                         "Ann Again,ANN@example.com,no\n"
                         "Odd Flag,odd@example.com,maybe\n"
                         "Too,many@example.com,yes,extra\n")
    result = run_cli(settings_file, "customers", "import", "--consent", "opted-out",
                     str(csv_file))
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[:5] == [
        f"{csv_file}: line 3: missing email",
        f"{csv_file}: line 4: malformed email 'not-an-email'",
        f"{csv_file}: line 5: email 'ann@example.com' appears more than once (first on line 2)",
        f"{csv_file}: line 6: unknown offers value 'maybe' (expected true/false/yes/no/1/0)",
        f"{csv_file}: line 7: expected 3 columns, found 4",
    ]
    assert lines[-1] == f"mailer: {csv_file}: 5 bad row(s); nothing was imported"
    assert db_rows(database, "SELECT count(*) FROM customers") == [(0,)]
    assert db_rows(database, "SELECT count(*) FROM consent_events") == [(0,)]


def test_import_without_an_email_column_is_refused(tmp_path: Path, settings_file: Path) -> None:
    csv_file = write_csv(tmp_path, "name,mail\nAnn,ann@example.com\n")
    result = run_cli(settings_file, "customers", "import", str(csv_file))
    assert result.code == 2
    assert result.stderr.strip() == f"mailer: {csv_file}: line 1: header has no 'email' column"


@pytest.mark.parametrize("header", ["name;email", "name;email;company", "name,email;offers"])
def test_import_of_a_semicolon_separated_file_says_so_in_one_line(
    tmp_path: Path, settings_file: Path, header: str
) -> None:
    csv_file = write_csv(tmp_path, f"{header}\nAnn Lee;ann@example.com;yes\n")
    result = run_cli(settings_file, "customers", "import", str(csv_file))
    assert result.code == 2
    assert result.stderr.strip() == (
        f"mailer: {csv_file}: line 1: the header looks `;`-separated; mailer reads "
        "comma-separated CSV (name,email,...)")


def test_reimport_never_reverses_an_opt_out_made_by_request(
    tmp_path: Path, settings_file: Path, database: Path | str
) -> None:
    first = write_csv(tmp_path, "name,email,offers\nAnn Lee,ann@example.com,yes\n"
                      "Bob Roe,bob@example.com,no\n")
    assert run_cli(settings_file, "customers", "import", "--consent", "opted-in",
                   str(first)).code == 0

    async def request_opt_out() -> None:
        async with open_db(database) as conn:
            ann = await customers.get_by_email(conn, "ann@example.com")
            assert ann is not None
            async with transaction(conn):
                await change.opt_out(conn, [change.Refusal(
                    (ann.id,), reference="<req-1@example.com>",
                    thread=change.Thread(message_id="<req-1@example.com>"))],
                    ["offers"], source="email")

    asyncio.run(request_opt_out())
    again = write_csv(tmp_path, "name,email,offers\nAnn Lee,ann@example.com,yes\n"
                      "Bob Roe,bob@example.com,yes\n", name="again.csv")
    result = run_cli(settings_file, "customers", "import", "--consent", "opted-in", str(again))
    assert result.code == 0, result.stderr
    assert ("line 2: kept ann@example.com opted out of offers (the opt-out was made by request)"
            in result.stderr)
    assert show(settings_file, "ann@example.com")["preferences"] == {
        "announcements": True, "offers": False}
    # Bob's opt-out came from an import, so a later import may opt him back in.
    bob = show(settings_file, "bob@example.com")
    assert bob["preferences"] == {"announcements": True, "offers": True}
    history = bob["history"]
    assert isinstance(history, list)
    assert history[-1]["old"] is False and history[-1]["new"] is True


def test_reimport_of_the_same_file_changes_nothing(
    tmp_path: Path, settings_file: Path, database: Path | str
) -> None:
    csv_file = write_csv(tmp_path, "name,email\nAnn Lee,ann@example.com\n")
    imported = ("customers", "import", "--consent", "opted-in", str(csv_file))
    assert run_cli(settings_file, *imported).code == 0
    result = run_cli(settings_file, *imported)
    assert "0 created, 0 updated, 1 unchanged" in result.stdout
    assert db_rows(database, "SELECT count(*) FROM consent_events") == [(2,)]


def test_consent_events_can_never_be_changed_or_deleted(
    tmp_path: Path, settings_file: Path, database: Path | str
) -> None:
    csv_file = write_csv(tmp_path, "name,email\nAnn Lee,ann@example.com\n")
    assert run_cli(settings_file, "customers", "import", "--consent", "opted-in",
                   str(csv_file)).code == 0
    with pytest.raises(dbrows.INTEGRITY_ERRORS, match="consent events are permanent"):
        dbrows.execute(database, "UPDATE consent_events SET new_value = 1")
    with pytest.raises(dbrows.INTEGRITY_ERRORS, match="consent events are permanent"):
        dbrows.execute(database, "DELETE FROM consent_events")


def test_show_of_an_unknown_email_exits_1(settings_file: Path) -> None:
    result = run_cli(settings_file, "customers", "show", "nobody@example.com", "--json")
    assert result.code == 1
    assert result.stderr.strip() == "mailer: no customer with email nobody@example.com"


def test_import_streams_a_large_file(
    tmp_path: Path, settings_file: Path, database: Path | str
) -> None:
    rows = "".join(f"Customer {i},c{i}@example.com,,,1,{i % 2}\n" for i in range(50_000))
    csv_file = write_csv(tmp_path, "name,email,company,phone,announcements,offers\n" + rows)
    result = run_cli(settings_file, "customers", "import", str(csv_file))
    assert result.code == 0, result.stderr
    assert db_rows(database, "SELECT count(*), sum(offers) FROM customers") == [(50_000, 25_000)]
