"""`make playground`: the whole service running on this machine, to click through.

Starts the throwaway IMAP server and SMTP sink of `make demo` on 127.0.0.1, writes settings
with the public listener and the console on loopback (plain http, for local use only),
imports the demo's sample customers, adds an admin and a marketing user with printed
passwords, drops the demo's sample requests in the inbox, sends a campaign whose unsubscribe
links open here (`http://127.0.0.1:PORT/unsubscribe/…`: the one kind of http link mailer
sends, `mailer.settings.loopback_http_url`), then runs `mailer run` (inbox, outbox,
campaigns, the public pages, the console) and prints the addresses to open. Mail the daemon
sends is listed as it arrives. Ctrl-C stops everything; the files stay in the folder.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo import CUSTOMERS, INBOX  # noqa: E402  (scripts/demo.py, beside this file)

from tests.helpers import base_sections, write_settings  # noqa: E402
from tests.servers import (  # noqa: E402
    ImapTestServer,
    RawImap,
    SmtpSink,
    free_port,
    imap_server_class,
)

USERS = (("admin", "admin"), ("marketing", "marketing"))
SUBJECT = "A special offer for {{ customer.name }}"
READY_S = 60.0


def mailer(settings: Path, env: dict[str, str], *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "--settings", str(settings), *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env},
        timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"mailer {' '.join(args)} failed ({result.returncode}):\n"
                         f"{result.stderr}")
    return result.stdout


def answering(url: str) -> bool:
    """Whether something answers HTTP at `url` (any status: it is listening)."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def wait_until_answering(urls: list[str], daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_S
    for url in urls:
        while not answering(url):
            if daemon.poll() is not None:
                raise SystemExit(f"mailer run exited ({daemon.returncode}); see its log above")
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing answers at {url} after {READY_S:.0f} s")
            time.sleep(0.2)


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def link_in(message: EmailMessage) -> str:
    """The unsubscribe link of a campaign message (its List-Unsubscribe http one)."""
    found = re.search(r"<(http://[^>]+)>", " ".join(str(message["List-Unsubscribe"]).split()))
    return found.group(1) if found else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "playground-run",
                        help="where the settings, database and log go (emptied first; "
                             "default: ./playground-run)")
    run_dir: Path = parser.parse_args().dir.resolve()
    # A SIGTERM (a supervisor, `timeout`) stops it as Ctrl-C does: servers and daemon too.
    signal.signal(signal.SIGTERM, _interrupt)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    server = imap_server_class()()
    sink = SmtpSink()
    server.start()
    sink.start()
    try:
        play(run_dir, server, sink)
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
        server.close()
    print("\nStopped. The settings, database and log are in", run_dir)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def play(run_dir: Path, server: ImapTestServer, sink: SmtpSink) -> None:
    web_port, console_port = free_port(), free_port()
    web, console = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{console_port}"
    settings = write_settings(run_dir / "settings.toml", base_sections(
        run_dir,
        imap={"host": server.host, "port": server.port, "security": "none",
              "username": server.username, "password": server.password},
        smtp={"host": sink.host, "port": sink.port, "security": "none"},
        campaigns={"unsubscribe_url": f"{web}/unsubscribe"},
        http={"host": "127.0.0.1", "port": web_port},
        console={"enabled": True, "host": "127.0.0.1", "port": console_port},
    ))
    env = {"MAILER_SECRET": secrets.token_urlsafe(48)}
    (run_dir / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    mailer(settings, env, "customers", "import", str(run_dir / "customers.csv"))
    passwords = {name: secrets.token_urlsafe(15) for name, _ in USERS}
    for name, role in USERS:
        mailer(settings, env, "users", "add", name, "--role", role,
               stdin=passwords[name] + "\n")
    campaign_id = mailer(settings, env, "campaign", "create", "--kind", "offers",
                         "--template", "welcome-offer", "--subject", SUBJECT).strip()
    mailer(settings, env, "campaign", "send", campaign_id)
    links = {str(parsed(m.content)["To"].addresses[0].addr_spec): link_in(parsed(m.content))
             for m in sink.messages}
    with RawImap.for_server(server) as raw:
        raw.append_many("INBOX", [message for _, message in INBOX])

    shown = len(sink.messages)  # the campaign; what the daemon sends is listed as it comes
    with (run_dir / "mailer.log").open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mailer", "--settings", str(settings), "run"],
            cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_answering([f"{web}/healthz", f"{console}/login"], daemon)
            announce(run_dir, console, web, passwords, links)
            while daemon.poll() is None:
                for received in sink.messages[shown:]:
                    message = parsed(received.content)
                    print(f"  mail sent to {', '.join(received.rcpt_tos)}: "
                          f"{message['Subject']}", flush=True)
                shown = len(sink.messages)
                time.sleep(0.5)
            raise SystemExit(f"mailer run exited ({daemon.returncode}); see {log.name}")
        finally:
            if daemon.poll() is None:
                daemon.terminate()  # SIGTERM: it finishes the work in hand and exits
                daemon.wait(timeout=30)


def announce(run_dir: Path, console: str, web: str, passwords: dict[str, str],
             links: dict[str, str]) -> None:
    print(f"mailer playground (files, settings and mailer.log in {run_dir})\n")
    print(f"console:           {console}/")
    for name, password in passwords.items():
        print(f"  sign in as {name:<10} password: {password}")
    print(f"public listener:   {web}/healthz")
    print("preference pages (the unsubscribe links of the campaign just sent):")
    for address, link in sorted(links.items()):
        print(f"  {address:<24} {link}")
    print("\nThe inbox worker is reading the demo's sample requests; some wait in the console's "
          "review queue.\nMail the daemon sends is listed below. Ctrl-C stops everything.",
          flush=True)


if __name__ == "__main__":
    main()
