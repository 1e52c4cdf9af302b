"""Running `mailer run` as a real process in tests, and asking `mailer status` about it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.helpers import DAEMON_SECRET, ROOT, run_cli
from tests.inbox.world import World
from tests.servers import sample_message


def request(sender: str) -> bytes:
    return sample_message(subject="Unsubscribe special offers", sender=sender,
                          body="Please stop.\n")


def status(world: World) -> tuple[int, dict[str, Any]]:
    result = run_cli(world.settings_path, "status", "--json")
    assert result.stderr == "", result.stderr
    return result.code, json.loads(result.stdout)


@contextmanager
def daemon(world: World, *args: str, env: dict[str, str] | None = None
           ) -> Iterator[subprocess.Popen[bytes]]:
    """`mailer [args] run` in the background; SIGTERM and a wait afterwards. Its stderr
    goes to `world.tmp_path / "daemon.log"`."""
    log = (world.tmp_path / "daemon.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), *args, "run"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
        env={**os.environ, "MAILER_SECRET": DAEMON_SECRET, **(env or {})})
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def daemon_log(world: World) -> str:
    return (world.tmp_path / "daemon.log").read_text(errors="replace")
