"""`mailer run` as a whole: the inbox worker and the campaign sender in one daemon, real servers.

The story the privacy policy promises: a campaign is going out when a customer emails
"Unsubscribe special offers"; the daemon honours the request within seconds and that customer
gets no campaign message from that moment on, while everyone else gets exactly one.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests.daemon_world import daemon
from tests.helpers import DAEMON_SECRET, ROOT, run_cli
from tests.inbox.world import make_world
from tests.servers import ImapTestServer, SmtpSink, sample_message
from tests.waiting import wait_for

CUSTOMERS = 800


def campaign_recipients(sink: SmtpSink) -> Counter[str]:
    counts: Counter[str] = Counter()
    for received in sink.messages:
        parsed = email.message_from_bytes(received.content, policy=email.policy.default)
        if parsed["X-Campaign"] is not None:
            counts.update(received.rcpt_tos)
    return counts


def confirmation_recipients(sink: SmtpSink) -> list[str]:
    return [r for m in sink.messages for r in m.rcpt_tos
            if b"Auto-Submitted: auto-replied" in m.content]


async def test_an_opt_out_by_email_during_a_campaign_stops_that_customers_mail_at_once(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink, database: Path | str
) -> None:
    csv_text = "name,email\n" + "".join(
        f"Customer {i:04d},c{i:04d}@example.com\n" for i in range(CUSTOMERS))
    world = await make_world(
        tmp_path, imap_server, smtp_sink, csv_text=csv_text, database=database,
        campaigns={"unsubscribe_url": "https://imperial.test/unsubscribe", "batch_size": 100},
    )
    env = {"MAILER_SECRET": DAEMON_SECRET}
    created = run_cli(world.settings_path, "campaign", "create", "--kind", "offers",
                      "--template", "welcome-offer", "--subject", "An offer",
                      "--at", "2099-01-01T00:00:00Z", env=env)
    assert created.code == 0, created.stderr
    # Due before the daemon starts: it fell due while nothing ran (`--at` refuses the past).
    world.query("UPDATE campaigns SET scheduled_at = '2000-01-01T00:00:00.000000+00:00' "
                "WHERE id = ?", int(created.stdout))
    last = f"c{CUSTOMERS - 1:04d}@example.com"  # claimed and sent last
    smtp_sink.delay_s = 0.02  # about five seconds of sending over four connections

    daemon = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), "run"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, **env})
    try:
        await wait_for(lambda: sum(campaign_recipients(smtp_sink).values()) >= 40,
                       what="40 campaign messages sent")
        world.deliver(sample_message(subject="Unsubscribe special offers", sender=last,
                                     body="Please stop.\n"))
        await wait_for(lambda: world.preferences(last) == (False, False),
                       what="the last customer opted out")
        await wait_for(
            lambda: world.query("SELECT status FROM campaigns WHERE id = ?",
                                int(created.stdout)) == [("sent",)],
            what="the campaign sent")
        await wait_for(lambda: last in confirmation_recipients(smtp_sink),
                       what="the last customer's confirmation")
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr.decode()

    received = campaign_recipients(smtp_sink)
    assert last not in received
    assert set(received) == {f"c{i:04d}@example.com" for i in range(CUSTOMERS - 1)}
    assert set(received.values()) == {1}
    assert world.query("SELECT status, last_reply FROM campaign_recipients "
                       "WHERE customer_id = (SELECT id FROM customers WHERE email = ?)",
                       last)[0][0] == "skipped"


async def test_systemd_hears_ready_after_the_first_pass_then_watchdog_then_stopping(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink, database: Path | str
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database)
    # A socket path of its own: AF_UNIX paths are limited to 108 bytes.
    folder = tempfile.mkdtemp(prefix="notify-")
    path = os.path.join(folder, "notify.sock")
    received: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
        with daemon(world, env=env) as process:
            while received.count("WATCHDOG=1") < 3:
                received.append(sock.recv(256).decode())
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            while "STOPPING=1" not in received:  # already queued on the socket
                received.append(sock.recv(256).decode())
        shutil.rmtree(folder)
    assert process.returncode == 0
    assert received[0] == "READY=1"
    assert received.count("READY=1") == 1
    assert received[-1] == "STOPPING=1"
    assert world.query("SELECT count(*) FROM daemon_heartbeat WHERE pid = ?",
                       process.pid) == [(1,)]
