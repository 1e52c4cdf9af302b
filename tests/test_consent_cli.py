"""No silent consent (`customers import --consent`) and consent recorded by staff with its
evidence (`customers consent`), through the real CLI and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import dbrows
from tests.helpers import base_sections, run_cli, write_settings


@pytest.fixture
def settings_file(tmp_path: Path, database: Path | str) -> Path:
    return write_settings(tmp_path / "settings.toml",
                          base_sections(tmp_path, database=dbrows.database_section(database)))


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text(text, encoding="utf-8")
    return path


def count(database: Path | str, table: str) -> int:
    return int(dbrows.rows(database, f"SELECT count(*) FROM {table}")[0][0])


def show(settings_file: Path, email: str) -> dict[str, object]:
    result = run_cli(settings_file, "customers", "show", email, "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def events(settings_file: Path, email: str) -> list[tuple[object, ...]]:
    history = show(settings_file, email)["history"]
    assert isinstance(history, list)
    return [(h["category"], h["old"], h["new"], h["source"], h["reference"], h["actor"])
            for h in history]


@pytest.mark.parametrize("header", ["name,email", "name,email,offers", "name,email,company"])
def test_import_without_a_consent_column_is_refused_and_writes_nothing(
    tmp_path: Path, settings_file: Path, header: str, database: Path | str
) -> None:
    extra = "," * header.count(",", len("name,email"))
    csv_file = write_csv(tmp_path, f"{header}\nAnn Lee,ann@example.com{extra}\n")

    result = run_cli(settings_file, "customers", "import", str(csv_file))

    assert result.code == 2
    missing = "'announcements' or 'offers'" if header != "name,email,offers" else (
        "'announcements'")
    assert result.stderr.strip() == (
        f"mailer: {csv_file}: line 1: no {missing} column, so the file does not say what "
        "these customers agreed to: name it with --consent opted-in or --consent opted-out")
    assert count(database, "customers") == 0
    assert count(database, "consent_events") == 0


def test_import_with_consent_opted_out_opts_every_row_out_and_the_history_names_file_and_line(
    tmp_path: Path, settings_file: Path
) -> None:
    csv_file = write_csv(tmp_path, "name,email\nAnn Lee,ann@example.com\n"
                                   "Bob Roe,bob@example.com\n")

    result = run_cli(settings_file, "customers", "import", "--consent", "opted-out",
                     "--by", "jo.bloggs", str(csv_file))

    assert result.code == 0, result.stderr
    assert "2 created" in result.stdout
    assert "  announcements: 2 opted out (the named default)" in result.stdout
    assert "  offers: 2 opted out (the named default)" in result.stdout
    for email, line in (("ann@example.com", 2), ("bob@example.com", 3)):
        assert show(settings_file, email)["preferences"] == {
            "announcements": False, "offers": False}
        assert events(settings_file, email) == [
            (c, None, False, "import", f"customers.csv line {line}", "jo.bloggs")
            for c in ("announcements", "offers")]


def test_import_summary_says_which_values_came_from_the_file_and_which_from_the_default(
    tmp_path: Path, settings_file: Path
) -> None:
    csv_file = write_csv(tmp_path, "name,email,offers\nAnn Lee,ann@example.com,yes\n"
                                   "Bob Roe,bob@example.com,no\nCy Poe,cy@example.com,\n")

    result = run_cli(settings_file, "customers", "import", "--consent", "opted-in",
                     str(csv_file))

    assert result.code == 0, result.stderr
    assert "  announcements: 3 opted in (the named default)" in result.stdout
    assert ("  offers: 1 opted out (the file's column), 1 opted in (the file's column), "
            "1 opted in (the named default)") in result.stdout
    assert show(settings_file, "cy@example.com")["preferences"] == {
        "announcements": True, "offers": True}


def test_an_import_naming_opted_in_still_never_reverses_an_opt_out(
    tmp_path: Path, settings_file: Path
) -> None:
    csv_file = write_csv(tmp_path, "name,email,announcements,offers\n"
                                   "Ann Lee,ann@example.com,yes,yes\n")
    assert run_cli(settings_file, "customers", "import", str(csv_file)).code == 0
    assert run_cli(settings_file, "customers", "consent", "ann@example.com", "--offers", "off",
                   "--by", "desk").code == 0
    again = write_csv(tmp_path, "name,email\nAnn Lee,ann@example.com\n")

    result = run_cli(settings_file, "customers", "import", "--consent", "opted-in", str(again))

    assert result.code == 0, result.stderr
    assert "kept ann@example.com opted out of offers" in result.stderr
    assert show(settings_file, "ann@example.com")["preferences"] == {
        "announcements": True, "offers": False}


def test_customers_consent_opt_in_without_evidence_exits_2_and_changes_nothing(
    tmp_path: Path, settings_file: Path, database: Path | str
) -> None:
    csv_file = write_csv(tmp_path, "name,email,announcements,offers\n"
                                   "Ann Lee,ann@example.com,no,no\n")
    assert run_cli(settings_file, "customers", "import", str(csv_file)).code == 0

    result = run_cli(settings_file, "customers", "consent", "ann@example.com", "--offers", "on")

    assert result.code == 2
    assert result.stderr.strip() == (
        "mailer: evidence is required to opt anyone in: say how they consented")
    assert show(settings_file, "ann@example.com")["preferences"]["offers"] is False  # type: ignore[index]
    assert count(database, "consent_events") == 2


def test_customers_consent_records_the_opt_in_with_its_evidence_and_who_recorded_it(
    tmp_path: Path, settings_file: Path
) -> None:
    csv_file = write_csv(tmp_path, "name,email,announcements,offers\n"
                                   "Ann Lee,ann@example.com,no,yes\n")
    assert run_cli(settings_file, "customers", "import", str(csv_file)).code == 0

    result = run_cli(settings_file, "customers", "consent", "ann@example.com",
                     "--announcements", "on", "--offers", "off",
                     "--evidence", "phone call 6 May, asked for news only", "--by", "sam")

    assert result.code == 0, result.stderr
    assert result.stdout.strip() == (
        "ann@example.com: announcements on, offers off (recorded by sam)")
    assert show(settings_file, "ann@example.com")["preferences"] == {
        "announcements": True, "offers": False}
    assert events(settings_file, "ann@example.com")[2:] == [
        ("offers", True, False, "operator", "phone call 6 May, asked for news only", "sam"),
        ("announcements", False, True, "operator", "phone call 6 May, asked for news only",
         "sam")]


def test_customers_consent_without_a_category_or_for_an_unknown_customer_says_so(
    settings_file: Path
) -> None:
    nothing = run_cli(settings_file, "customers", "consent", "ann@example.com")
    assert nothing.code == 2
    assert nothing.stderr.strip() == (
        "mailer: nothing to record: give --offers on|off or --announcements on|off")
    unknown = run_cli(settings_file, "customers", "consent", "nobody@example.com",
                      "--offers", "off")
    assert unknown.code == 1
    assert unknown.stderr.strip() == "mailer: no customer with email nobody@example.com"
