"""An import records, with each consent event it makes, the file and the line it came from, and
`customers show` displays them (the real CLI on either engine)."""

from __future__ import annotations

import json
from pathlib import Path

from tests import dbrows
from tests.helpers import base_sections, run_cli, write_settings


def test_each_imported_consent_event_names_its_file_and_line(
    tmp_path: Path, database: Path | str
) -> None:
    settings_file = write_settings(tmp_path / "settings.toml", base_sections(
        tmp_path, database=dbrows.database_section(database)))
    first = tmp_path / "first.csv"
    first.write_text("name,email,announcements,offers\nAnn Lee,ann@example.com,yes,yes\n"
                     "Bob Roe,bob@example.com,yes,no\n")
    later = tmp_path / "later.csv"
    later.write_text("name,email,announcements,offers\nBob Roe,bob@example.com,yes,yes\n")
    assert run_cli(settings_file, "customers", "import", str(first)).code == 0
    assert run_cli(settings_file, "customers", "import", str(later)).code == 0

    shown = run_cli(settings_file, "customers", "show", "bob@example.com", "--json")
    assert shown.code == 0, shown.stderr
    offers = [e["evidence"] for e in json.loads(shown.stdout)["history"]
              if e["category"] == "offers"]
    assert [(e["import file"], e["import line"]) for e in offers] == [
        ("first.csv", "3"), ("later.csv", "2")]
    text = run_cli(settings_file, "customers", "show", "bob@example.com").stdout
    assert "evidence: import file later.csv; import line 2" in text
