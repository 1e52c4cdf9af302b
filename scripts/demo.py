"""`make demo`: mailer end to end on embedded defaults, no external servers.

Starts a throwaway IMAP server (Dovecot if installed, else pymap) and an SMTP sink on
127.0.0.1, imports sample customers, drops sample mail into the inbox, runs one pass of the
worker through the real CLI, then sends a small campaign, clicks the one-click unsubscribe
link of one message against `mailer web`, and prints what changed and which mail went out.
Everything lives in ./demo-run/ and the servers stop at the end.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import base_sections, write_settings  # noqa: E402
from tests.servers import (  # noqa: E402
    RawImap,
    SmtpSink,
    free_port,
    imap_server_class,
    sample_message,
)
from tests.waiting import wait_for_sync  # noqa: E402

RUN_DIR = ROOT / "demo-run"
SUBJECT = "Unsubscribe special offers"

CUSTOMERS = """name,email,company,phone,announcements,offers
Ann Lee,ann@example.com,Lee Plumbing Ltd,01632 960001,yes,yes
Bob Roe,bob@example.com,,01632 960002,yes,yes
Carol Diaz,carol@example.com,Diaz & Daughters,01632 960003,yes,yes
Dan Diaz,dan@example.com,,01632 960004,yes,yes
John Smith,john.smith@example.com,,01632 960005,yes,yes
John Smith,jsmith@example.org,,01632 960006,yes,yes
Zoë Brontë,zoe@example.com,,01632 960007,yes,yes
Eve Adams,eve@example.com,Acme Widgets Ltd,01632 960008,yes,no
"""

INBOX = [
    ("request from a customer's own address",
     sample_message(subject=SUBJECT, sender="Ann Lee <ann@example.com>", body="Thanks.\n")),
    ("forwarded request naming two household addresses",
     sample_message(subject=f"Fwd: {SUBJECT.lower()}", sender="home@family.example",
                    body="Please remove carol@example.com and dan@example.com.\n")),
    ("request from an unknown address, signed with a unique name",
     sample_message(subject="unsubscribe", sender="z.b@work.example",
                    body="Please take me off your list.\n\nMs Zoe Bronte\n")),
    ("request naming a name two customers share",
     sample_message(subject=SUBJECT, sender="John Smith <js@unknown.example>",
                    body="Stop please.\n")),
    ("a customer who changed their mind (waits in review, marked \"opt back in\")",
     sample_message(subject=f"Re: {SUBJECT}", sender="Eve Adams <eve@example.com>",
                    body="I changed my mind: please turn the offers back on.\n")),
    ("out-of-office reply quoting the subject",
     sample_message(subject=f"Automatic reply: {SUBJECT}", sender="bob@example.com",
                    headers={"Auto-Submitted": "auto-replied"})),
    ("an ordinary customer email",
     sample_message(subject="Question about my bill", sender="bob@example.com")),
    ("malformed request",
     b"From: x@y.example\r\nSubject: " + SUBJECT.encode() + b"\r\nMessage-ID: <bad@y>\r\n"
     b"Content-Type: multipart/mixed; boundary=\"nope\"\r\n\r\n\xff\xfe binary junk\r\n"),
]


def mailer(settings: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "--settings", str(settings), *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"mailer {' '.join(args)} failed ({result.returncode}):\n"
                         f"{result.stderr}")
    return result.stdout


def heading(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 70 - len(text)))


def preferences(settings: Path) -> dict[str, tuple[bool, bool]]:
    result = {}
    for line in CUSTOMERS.splitlines()[1:]:
        address = line.split(",")[1]
        data = json.loads(mailer(settings, "customers", "show", address, "--json"))
        prefs = data["preferences"]
        result[address] = (prefs["announcements"], prefs["offers"])
    return result


def show_preferences(before: dict[str, tuple[bool, bool]],
                     after: dict[str, tuple[bool, bool]]) -> None:
    def change(old: bool, new: bool) -> str:
        return f"{'in' if old else 'out':>3} -> {'in' if new else 'out':<3}"

    print(f"  {'customer':26} {'announcements':13}  {'offers':10}")
    for address, (ann, off) in after.items():
        old_ann, old_off = before[address]
        changed = "  changed" if (ann, off) != (old_ann, old_off) else ""
        print(f"  {address:26} {change(old_ann, ann):13}  {change(old_off, off):10}{changed}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """--help prints what the demo does (this module's docstring) and starts nothing."""
    parser = argparse.ArgumentParser(
        prog="scripts/demo.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run it with `make demo` (which sets up .venv first) or .venv/bin/python "
               "scripts/demo.py. It takes no options.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    parse_args(argv)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir()
    server = imap_server_class()()
    sink = SmtpSink()
    server.start()
    sink.start()
    web_port = free_port()
    try:
        print(f"IMAP server: {server.name} on {server.host}:{server.port}; "
              f"SMTP sink on {sink.host}:{sink.port}; files in {RUN_DIR}")
        settings = write_settings(RUN_DIR / "settings.toml", base_sections(
            RUN_DIR,
            imap={"host": server.host, "port": server.port, "security": "none",
                  "username": server.username, "password": server.password},
            smtp={"host": sink.host, "port": sink.port, "security": "none"},
            campaigns={"unsubscribe_url": "https://www.imperialtelecom.co.uk/unsubscribe"},
            http={"host": "127.0.0.1", "port": web_port},
            # The console is off in the demo (`make playground` runs it); its section is
            # here so the written settings show every part.
            console={"enabled": False, "host": "127.0.0.1", "port": free_port()},
        ))
        (RUN_DIR / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")

        heading("mailer customers import customers.csv")
        print(mailer(settings, "customers", "import", str(RUN_DIR / "customers.csv")).strip())
        before = preferences(settings)

        heading("the inbox")
        with RawImap.for_server(server) as raw:
            raw.append_many("INBOX", [message for _, message in INBOX])
        for label, _ in INBOX:
            print(f"  - {label}")

        # A throwaway secret as `mailer init` makes one (`mailer web` refuses a weak one): it
        # signs the confirmations' preference-page links and the campaign's links.
        secret = {"MAILER_SECRET": secrets.token_urlsafe(32)}
        heading("mailer inbox process")
        print(mailer(settings, "inbox", "process", env=secret).strip())
        print(mailer(settings, "inbox", "process", "--json", env=secret).strip(),
              " (a second pass finds nothing new)")

        heading("preferences before -> after")
        show_preferences(before, preferences(settings))

        heading("mailer review list")
        print(mailer(settings, "review", "list").strip())

        heading("folders")
        with RawImap.for_server(server) as raw:
            for folder in ("INBOX", "Processed", "Review"):
                print(f"  {folder}: {raw.subjects(folder)}")

        heading("confirmations sent")
        for received in sink.messages:
            parsed = email.message_from_bytes(received.content, policy=email.policy.default)
            print(f"  to {', '.join(received.rcpt_tos)}: {parsed['Subject']} "
                  f"(Auto-Submitted: {parsed['Auto-Submitted']})")
            body = parsed.get_body(preferencelist=("plain",))
            for line in (body.get_content() if body is not None else "").splitlines():
                if line.startswith("Changed your mind?"):
                    print(f"    {line}")
        confirmations = len(sink.messages)

        heading("a special-offer campaign")
        campaign_id = mailer(
            settings, "campaign", "create", "--kind", "offers", "--template", "welcome-offer",
            "--subject", "A special offer for {{ customer.name }}", env=secret).strip()
        print(f"  created campaign {campaign_id}")
        mailer(settings, "campaign", "send", campaign_id, env=secret)
        print("  " + mailer(settings, "campaign", "show", campaign_id, "--json",
                            env=secret).strip().replace("\n", "\n  "))
        recipients = sorted(r for m in sink.messages[confirmations:] for r in m.rcpt_tos)
        print(f"  delivered to: {', '.join(recipients)}")
        print("  (opted-out customers and Eve, who never opted in to offers, got nothing)")
        if sink.messages[confirmations:]:
            first = email.message_from_bytes(sink.messages[confirmations].content,
                                             policy=email.policy.default)
            print(f"  List-Unsubscribe: {first['List-Unsubscribe']}")
            print(f"  List-Unsubscribe-Post: {first['List-Unsubscribe-Post']}")
            one_click(settings, secret, web_port, first)
    finally:
        sink.stop()
        server.close()


def one_click(settings: Path, secret: dict[str, str], port: int,
              message: email.message.EmailMessage) -> None:
    """What a mail provider's "Unsubscribe" button does (RFC 8058), against `mailer web`."""
    heading("one click on that message's unsubscribe link (mailer web)")
    link = str(message["List-Unsubscribe"]).split("<https://")[1].split(">")[0]
    local = f"http://127.0.0.1:{port}/" + link.split("/", 1)[1]
    customer = message["To"].addresses[0].addr_spec
    web = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(settings), "web"],
        cwd=ROOT, env={**os.environ, **secret},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            except OSError:
                return False
            return True

        wait_for_sync(answers, what=f"mailer web on 127.0.0.1:{port}", timeout_s=10,
                      interval_s=0.1)
        request = urllib.request.Request(
            local, data=b"List-Unsubscribe=One-Click", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as response:
            print(f"  POST {link.split('/unsubscribe/')[0]}/unsubscribe/…: "
                  f"{response.status} {response.read().decode().strip()}")
    finally:
        web.terminate()
        web.wait(timeout=30)
    history = json.loads(mailer(settings, "customers", "show", customer, "--json"))["history"]
    print(f"  {customer}'s consent history now ends with:")
    for event in history[-2:]:
        print(f"    {event['category']}: {'in' if event['old'] else 'out'} -> "
              f"{'in' if event['new'] else 'out'}  ({event['source']}: {event['reference']})")


if __name__ == "__main__":
    main()
