"""`mailer init [DIR]`: the documented settings and a templates folder to customise, never
written over anything that exists. Runs the real command in a subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.cli.preflight import secret_problem
from mailer.mail.templates import packaged_defaults
from mailer.settings import load
from tests.helpers import ROOT, CliResult


def mailer_init(*args: str, cwd: Path) -> CliResult:
    # PYTHONPATH: this checkout's mailer, whatever folder the command runs in.
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "init", *args], capture_output=True, text=True,
        cwd=cwd, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return CliResult(result.returncode, result.stdout, result.stderr)


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_init_writes_the_documented_settings_and_a_copy_of_every_packaged_template(
    tmp_path: Path,
) -> None:
    result = mailer_init(str(tmp_path / "site"), cwd=tmp_path)

    assert result.code == 0, result.stderr
    site = tmp_path / "site"
    assert (site / "settings.toml").read_bytes() == (ROOT / "settings.toml").read_bytes()
    copied = files_under(site / "templates")
    assert copied == files_under(packaged_defaults())
    assert {"base.txt", "confirmation.html", "campaigns/welcome-offer.txt"} <= set(copied)
    assert "wrote site/settings.toml" in result.stdout
    assert "  campaigns/welcome-offer.html\n" in result.stdout
    assert "mailer --settings site/settings.toml customers import" in result.stdout


def test_init_writes_a_new_strong_secret_only_its_owner_can_read(tmp_path: Path) -> None:
    first = mailer_init(str(tmp_path / "a"), cwd=tmp_path)
    second = mailer_init(str(tmp_path / "b"), cwd=tmp_path)

    assert first.code == 0 and second.code == 0, first.stderr + second.stderr
    secret_file = tmp_path / "a" / "secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert secret_problem(secret) is None  # what `mailer run` accepts
    assert len(secret) == 43  # 32 random bytes, URL-safe base64
    assert secret != (tmp_path / "b" / "secret").read_text().strip()
    assert "wrote a/secret (a new campaign secret, readable by you only)" in first.stdout
    assert 'export MAILER_SECRET="$(cat a/secret)"' in first.stdout


def test_init_without_a_folder_writes_into_the_current_one(tmp_path: Path) -> None:
    result = mailer_init(cwd=tmp_path)

    assert result.code == 0, result.stderr
    assert (tmp_path / "settings.toml").is_file()
    assert (tmp_path / "templates" / "confirmation.txt").is_file()
    assert "mailer customers import customers.csv" in result.stdout


def test_written_settings_use_the_written_templates_and_a_database_beside_them(
    tmp_path: Path,
) -> None:
    assert mailer_init(str(tmp_path), cwd=ROOT).code == 0

    settings = load(tmp_path / "settings.toml")

    assert settings.templates.dir == tmp_path / "templates"
    assert settings.database.path == tmp_path / "mailer.db"


@pytest.mark.parametrize("existing", ["settings.toml", "templates/campaigns/welcome-offer.txt",
                                      "secret"])
def test_init_refuses_when_any_file_exists_naming_it_and_writes_nothing(
    tmp_path: Path, existing: str
) -> None:
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("mine\n")
    before = files_under(tmp_path)

    result = mailer_init(str(tmp_path), cwd=ROOT)

    assert result.code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mailer: {tmp_path / existing}: already exists")
    assert files_under(tmp_path) == before


def test_init_refuses_a_file_where_its_templates_folder_goes(tmp_path: Path) -> None:
    (tmp_path / "templates").write_text("not a folder\n")

    result = mailer_init(str(tmp_path), cwd=ROOT)

    assert result.code == 2
    assert result.stderr == f"mailer: {tmp_path / 'templates'}: exists and is not a folder " \
                            "(nothing was written)\n"
    assert not (tmp_path / "settings.toml").exists()
