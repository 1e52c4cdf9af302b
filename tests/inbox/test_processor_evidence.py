"""An emailed request records its evidence with the opt-out: its Message-ID, From and Date, and
the verdicts of the Authentication-Results header our own server wrote (real IMAP server,
real SQLite), and `customers show` displays them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink, sample_message

SUBJECT = "Unsubscribe special offers"
OURS = "mx.imperial.test"


@pytest.fixture
async def world(tmp_path: Path, database: Path | str, imap_server: ImapTestServer,
                smtp_sink: SmtpSink
                ) -> AsyncIterator[World]:
    yield await make_world(tmp_path, imap_server, smtp_sink, database=database,
                           imap={"authserv_id": OURS})


def request(sender: str, authserv_id: str) -> bytes:
    return sample_message(subject=SUBJECT, sender=sender, to="unsubscribe@imperial.test",
                          body="Please stop the offers.\n", headers={
                              "Authentication-Results":
                                  f"{authserv_id}; dkim=pass header.d=example.com; "
                                  "spf=pass smtp.mailfrom=ann@example.com; "
                                  "dmarc=pass header.from=example.com"})


def evidence(world: World, email: str) -> list[tuple[object, ...]]:
    return world.query(
        "SELECT e.message_id, e.message_from, e.message_date != '', e.dkim, e.spf, e.dmarc, "
        "e.client_address FROM consent_events e JOIN customers c ON c.id = e.customer_id "
        "WHERE c.email = ? AND e.source = 'email' ORDER BY e.id", email)


async def test_a_request_with_our_authentication_results_records_its_verdicts(
    world: World
) -> None:
    message = request("ann@example.com", OURS)
    world.deliver(message)

    report = await world.process()

    assert report.unsubscribed == 1
    message_id = next(line.split(b":", 1)[1].strip().decode() for line in message.splitlines()
                      if line.lower().startswith(b"message-id:"))
    assert evidence(world, "ann@example.com") == [
        (message_id, "ann@example.com", 1, "pass", "pass", "pass", "")] * 2
    shown = run_cli(world.settings_path, "customers", "show", "ann@example.com")
    assert shown.code == 0, shown.stderr
    assert "DKIM pass; SPF pass; DMARC pass" in shown.stdout
    assert f"Message-ID {message_id}" in shown.stdout
    as_json = json.loads(run_cli(world.settings_path, "customers", "show", "ann@example.com",
                                 "--json").stdout)
    assert as_json["history"][-1]["evidence"]["DKIM"] == "pass"


async def test_a_request_with_a_foreign_authserv_id_records_no_verdict(world: World) -> None:
    world.deliver(request("bob@example.com", "mx.forger.example"))

    await world.process()

    rows = evidence(world, "bob@example.com")
    assert rows and all(r[1:] == ("bob@example.com", 1, "", "", "", "") for r in rows)
