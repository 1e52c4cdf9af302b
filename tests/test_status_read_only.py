"""`mailer status` only reads: wherever it is run, it creates no database and no other file.

It runs as a newcomer or a monitoring check would, in a subprocess in the folder under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, CliResult, run_cli


def mailer(*args: str, cwd: Path) -> CliResult:
    # PYTHONPATH: this checkout's mailer, whatever folder the command runs in.
    env = {k: v for k, v in os.environ.items() if k != "MAILER_SETTINGS"}
    result = subprocess.run(
        [sys.executable, "-m", "mailer", *args], capture_output=True, text=True, cwd=cwd,
        timeout=60, env={**env, "PYTHONPATH": str(ROOT)},
    )
    return CliResult(result.returncode, result.stdout, result.stderr)


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_status_in_an_empty_folder_writes_nothing_and_names_the_missing_settings(
    tmp_path: Path,
) -> None:
    result = mailer("status", cwd=tmp_path)
    assert result.code != 0
    assert result.stderr.strip().splitlines() == [
        "mailer: settings: settings.toml: cannot read settings file: No such file or directory"]
    assert listing(tmp_path) == []


def test_status_after_init_says_not_running_and_creates_no_database(tmp_path: Path) -> None:
    assert mailer("init", cwd=tmp_path).code == 0
    before = listing(tmp_path)

    result = mailer("status", cwd=tmp_path)

    assert result.stdout.splitlines()[:2] == ["mailer: not running", "  ! no database yet"]
    assert listing(tmp_path) == before
    assert "mailer.db" not in before


def test_status_reads_a_database_in_a_folder_named_with_uri_characters(tmp_path: Path) -> None:
    # `#` and `?` end the path of a file: URI; unescaped, SQLite would open (and create) an
    # empty "site" beside the folder and report no database.
    site = tmp_path / "site#1?a%20b"
    site.mkdir()
    assert mailer("init", str(site), cwd=tmp_path).code == 0
    (tmp_path / "customers.csv").write_text("name,email\nAnn Lee,ann@example.com\n")
    imported = run_cli(site / "settings.toml", "customers", "import", "--consent",
                       "opted-in", str(tmp_path / "customers.csv"))
    assert imported.code == 0, imported.stderr
    before = listing(tmp_path)

    result = run_cli(site / "settings.toml", "status")
    checked = run_cli(site / "settings.toml", "db", "check")

    assert result.stdout.splitlines()[:2] == [
        "mailer: not running", "  ! no daemon has run on this database"]
    assert checked.code == 0, checked.stderr
    # A reader of a WAL database may leave its -wal and -shm index files beside it (SQLite's
    # own, not a database); nothing else appears.
    assert [p for p in listing(tmp_path) if not p.endswith(("-wal", "-shm"))] == before
