"""Small helpers shared by tests: write a settings file, run the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import DovecotServer, imap_server_class

ROOT = Path(__file__).resolve().parent.parent
# A secret `mailer run` accepts (32 random bytes, as `mailer init` writes one): the daemons
# the tests start get it as MAILER_SECRET.
DAEMON_SECRET = "GcRp-BfYJfmO_vmbyYMCSvwkgSx-EWTQhBMSMNQY6gg"

# Tests of what only Dovecot can be made to do (TLS, announcing fewer capabilities). CI always
# has Dovecot; under pymap (a newcomer without root) these are the only tests that skip.
dovecot_only = pytest.mark.skipif(
    imap_server_class() is not DovecotServer, reason="needs Dovecot (TLS, capability override)"
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_settings(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def base_sections(tmp_path: Path, **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings for a test world: a database in tmp_path and the real templates folder."""
    sections: dict[str, dict[str, Any]] = {
        "database": {"path": str(tmp_path / "mailer.db")},
        "imap": {"host": "127.0.0.1", "port": 1, "security": "none", "username": "",
                 "timeout_s": 10.0},
        "smtp": {"host": "127.0.0.1", "port": 1, "security": "none",
                 "sender": "Imperial Telecom <news@imperial.test>", "timeout_s": 10.0},
        "unsubscribe": {"address": "unsubscribe@imperial.test"},
        "templates": {"dir": str(ROOT / "templates")},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return sections


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(settings_path: Path, *args: str, timeout: float = 120,
            env: dict[str, str] | None = None) -> CliResult:
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "--settings", str(settings_path), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return CliResult(result.returncode, result.stdout, result.stderr)
