"""What `mailer run` (and `web`) refuse at start, through the real command: settings that
cannot work by waiting exit 2 at once with one line naming the key; a bug in a daemon part
stops the daemon non-zero instead of being retried; `--version`."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mailer.cli.preflight import check_unsubscribe_url, secret_problem
from mailer.errors import SettingsError
from mailer.settings import from_mapping
from mailer.store.db import open_db
from tests.helpers import DAEMON_SECRET, ROOT, CliResult, base_sections, run_cli, write_settings

# The settings point at nothing listening (port 1): a check that waited for a server would
# not end; every refusal below comes before any connection.
RUN_TIMEOUT_S = 60


def settings_file(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    return write_settings(tmp_path / "settings.toml", base_sections(tmp_path, **sections))


def mailer_run(path: Path, secret: str = DAEMON_SECRET, *args: str) -> CliResult:
    # An empty MAILER_SECRET counts as unset, whatever the test runner's environment holds.
    return run_cli(path, *args, "run", timeout=RUN_TIMEOUT_S, env={"MAILER_SECRET": secret})


def one_line(result: CliResult) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_mailer_run_without_a_secret_exits_2_naming_mailer_secret(tmp_path: Path) -> None:
    result = mailer_run(settings_file(tmp_path), secret="")

    assert result.code == 2
    line = one_line(result)
    assert line.startswith("mailer: [campaigns] secret: missing value (set MAILER_SECRET;")
    assert not (tmp_path / "mailer.db").exists()  # refused before anything started


@pytest.mark.parametrize(("secret", "problem"), [
    ("x", "too short (1 bytes)"),
    ("s3cret-but-not-32-bytes", "too short (23 bytes)"),
    ("a" * 48, "too predictable"),
    ("0123456789abcdef" * 3, "too predictable"),
])
def test_mailer_run_with_a_weak_secret_exits_2_saying_why(
    tmp_path: Path, secret: str, problem: str
) -> None:
    result = mailer_run(settings_file(tmp_path), secret=secret)

    assert result.code == 2
    assert one_line(result).startswith(f"mailer: [campaigns] secret: {problem}")


def test_a_plain_http_unsubscribe_url_is_refused_at_start_not_at_send_time(
    tmp_path: Path,
) -> None:
    path = settings_file(tmp_path, campaigns={"unsubscribe_url": "http://imperial.test/u"})

    result = mailer_run(path)

    assert result.code == 2
    assert one_line(result) == ('mailer: [campaigns] unsubscribe_url: one-click unsubscribe '
                                'needs an https:// URL (RFC 8058), got "http://imperial.test/u"')


@pytest.mark.parametrize(("url", "accepted"), [
    ("http://127.0.0.1:8080/unsubscribe", True),   # `make playground`: no link leaves this host
    ("http://[::1]/u", True),
    ("http://localhost/u", True),
    ("http://localhost.evil.test/u", False),
    ("http://127.0.0.1.evil.test/u", False),
])
def test_plain_http_passes_the_start_checks_only_for_this_machine(
    tmp_path: Path, url: str, accepted: bool
) -> None:
    settings = from_mapping(base_sections(tmp_path, campaigns={"unsubscribe_url": url}),
                            base_dir=tmp_path, environ={})
    if accepted:
        check_unsubscribe_url(settings)
    else:
        with pytest.raises(SettingsError, match="needs an https:// URL"):
            check_unsubscribe_url(settings)


def test_a_broken_confirmation_template_is_refused_at_start_naming_file_and_line(
    tmp_path: Path,
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "confirmation.txt").write_text("Dear {{ customer_name }},\n{% if %}\n")
    path = settings_file(tmp_path, templates={"dir": str(templates)})

    result = mailer_run(path)

    assert result.code == 2
    line = one_line(result)
    assert line.startswith("mailer: template confirmation.txt line 2:"), line


def test_a_dkim_key_that_cannot_be_read_is_refused_at_start_naming_the_key(
    tmp_path: Path,
) -> None:
    path = settings_file(tmp_path, dkim={"domain": "imperial.test", "selector": "mail",
                                         "private_key_file": str(tmp_path / "absent.pem")})

    result = mailer_run(path)

    assert result.code == 2
    assert one_line(result).startswith("mailer: [dkim] private_key_file:")


def test_an_unknown_settings_key_is_refused_at_start_naming_it(tmp_path: Path) -> None:
    path = settings_file(tmp_path, campaigns={"unsubscribe_ulr": "https://imperial.test/u"})

    result = mailer_run(path)

    assert result.code == 2
    assert one_line(result).startswith("mailer: settings: [campaigns] unsubscribe_ulr: "
                                       "unknown key")


def test_mailer_web_with_a_weak_secret_exits_2(tmp_path: Path) -> None:
    path = settings_file(tmp_path, http={"host": "127.0.0.1", "port": 1},
                         campaigns={"secret": "short"})

    result = run_cli(path, "web", timeout=RUN_TIMEOUT_S, env={"MAILER_SECRET": ""})

    assert result.code == 2
    assert one_line(result).startswith("mailer: [campaigns] secret: too short (5 bytes)")


async def test_a_daemon_part_raising_value_error_stops_the_daemon_non_zero(
    tmp_path: Path,
) -> None:
    path = settings_file(tmp_path)
    async with open_db(tmp_path / "mailer.db"):
        pass  # a migrated database, as after `customers import`
    # The bug is planted in the outbox part, which runs once at start: a ValueError the
    # supervisor must not retry (it would recur on every retry) but stop on.
    script = textwrap.dedent(f"""
        import sys
        import mailer.consent.confirmations as confirmations

        async def send_due_confirmations(*args, **kwargs):
            raise ValueError("invalid literal for int() with base 10: 'x'")

        confirmations.send_due_confirmations = send_due_confirmations
        from mailer.cli import main
        main(["--settings", {str(path)!r}, "run"])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT_S,
                            env={**os.environ, "PYTHONPATH": str(ROOT),
                                 "MAILER_SECRET": DAEMON_SECRET})

    assert result.returncode not in (0, 2, 3), result.stderr
    assert "outbox: programming error; stopping the daemon: ValueError: invalid literal" \
        in result.stderr
    assert "outbox: ValueError" not in result.stderr  # never logged as a retry


def test_mailer_version_prints_the_version() -> None:
    result = subprocess.run([sys.executable, "-m", "mailer", "--version"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0
    assert result.stdout == f"mailer {importlib.metadata.version('mailer')}\n"


@pytest.mark.parametrize("secret", [
    "GcRp-BfYJfmO_vmbyYMCSvwkgSx-EWTQhBMSMNQY6gg",  # secrets.token_urlsafe(32)
    "9b0c3e1f6a2d4c8e7f1a0b3c5d7e9f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c1d3e",  # token_hex(32)
])
def test_a_secret_of_32_random_bytes_is_accepted(secret: str) -> None:
    assert secret_problem(secret) is None


@pytest.mark.parametrize("secret", ["", "x" * 31, "ab" * 32, "password" * 5])
def test_short_or_repetitive_secrets_are_refused(secret: str) -> None:
    assert secret_problem(secret) is not None
