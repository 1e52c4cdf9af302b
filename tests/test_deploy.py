"""deploy/mailer.service: a unit systemd accepts, confining the daemon as the README says.

`systemd-analyze` must be installed (Debian package `systemd`); without it this test fails
rather than skips, so CI cannot pass while never checking the unit.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.helpers import ROOT

UNIT = ROOT / "deploy" / "mailer.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_passes_systemd_analyze_verify_without_a_warning() -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install the Debian package `systemd`"
    result = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings


def test_the_unit_is_a_notify_service_confined_to_its_database_folder() -> None:
    unit = directives()
    for key, value in {"Type": "notify", "Restart": "on-failure", "User": "mailer",
                       "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes",
                       "ReadWritePaths": "/var/lib/mailer"}.items():
        assert unit.get(key) == [value], key
    assert unit["WatchdogSec"]
    assert {c.split(":")[0] for c in unit["LoadCredential"]} == {
        "imap-password", "smtp-password", "secret"}
    assert "mailer --settings /etc/mailer/settings.toml run" in unit["ExecStart"][0]


def test_the_unit_does_not_restart_on_settings_that_cannot_work() -> None:
    # `mailer run` exits 2 on settings that waiting cannot mend (mailer.cli.preflight).
    assert directives()["RestartPreventExitStatus"] == ["2"]


def test_the_unit_names_no_file_that_does_not_exist() -> None:
    text = UNIT.read_text()
    # Files of this repository the unit (comments included) points a reader to.
    named = set(re.findall(r"\b(?:deploy|docs|scripts)/[\w./-]*\w|\b[\w-]+\.md\b", text))
    assert named, "the unit names the files it is installed from"
    assert [name for name in named if not (ROOT / name).exists()] == []
    # Nothing the documented install does not create (README.md, "Running unattended").
    assert "Documentation=file:" not in text
