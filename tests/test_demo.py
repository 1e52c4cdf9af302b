"""`scripts/demo.py` (`make demo`): asked for help, it explains itself and starts nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

DEMO = ROOT / "scripts" / "demo.py"


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_describes_the_demo_and_runs_nothing(flag: str) -> None:
    run_dir = ROOT / "demo-run"
    before = sorted(run_dir.rglob("*")) if run_dir.exists() else None

    result = demo(flag)

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: scripts/demo.py [-h]")
    assert "throwaway IMAP server" in result.stdout
    assert "IMAP server:" not in result.stdout  # the line the demo prints once servers start
    assert (sorted(run_dir.rglob("*")) if run_dir.exists() else None) == before


def test_an_unknown_option_is_refused_in_one_line_with_exit_2() -> None:
    result = demo("--fast")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "scripts/demo.py: error: unrecognized arguments: --fast")
