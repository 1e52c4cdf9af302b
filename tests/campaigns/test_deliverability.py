"""Campaign deliverability, end to end: campaigns really sent to the aiosmtpd sink
go out from per-recipient VERP envelope senders, DKIM-signed and with a Feedback-ID; delivery
reports written the way Postfix writes them, addressed to those VERP addresses, go through the
real inbox pass on a real Dovecot; the customers they name are skipped by the next campaign,
and a campaign whose hard-bounce rate passes `[bounces] pause_bounce_rate` pauses itself."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.policy
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dkim as dkimpy
import nacl.signing
import pytest

from mailer.backoff import Backoff
from mailer.campaigns import service
from mailer.campaigns.messages import SendConfig, send_config
from mailer.campaigns.sender import SendOutcome, send_campaign
from mailer.mail import verp
from mailer.mail.dkim import Signer, load_signer
from mailer.settings import Settings
from mailer.store.db import open_db
from tests import dbrows
from tests.campaigns.world import World as CampaignWorld
from tests.fixtures.reports import load
from tests.helpers import run_cli
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, Received, SmtpSink
from tests.waiting import wait_for

BOUNCE_ADDRESS = "bounces@imperialtelecom.co.uk"
SECRET = "campaign-secret-for-the-tests-0123456789"
UNSUBSCRIBE_URL = "https://imperial.test/unsubscribe"


def customers_csv(count: int) -> str:
    lines = ["name,email,company,announcements,offers"]
    lines += [f"Customer {i},c{i}@example.com,Company {i},yes,yes" for i in range(count)]
    return "\n".join(lines) + "\n"


async def inbox_world(tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
                      customers: int, **extra: dict[str, object]) -> World:
    bounces: dict[str, object] = {"address": BOUNCE_ADDRESS, **extra.pop("bounces", {})}
    campaigns: dict[str, object] = {"secret": SECRET, "unsubscribe_url": UNSUBSCRIBE_URL,
                                    "batch_size": 10, **extra.pop("campaigns", {})}
    return await make_world(tmp_path, imap_server, smtp_sink, customers_csv(customers),
                            bounces=bounces, campaigns=campaigns, **extra)


def fast(settings: Settings) -> SendConfig:
    """Send settings with quick retries, for tests."""
    return dataclasses.replace(send_config(settings), retry=Backoff(base_s=0.01, max_s=0.05))


async def create(settings: Settings) -> int:
    async with open_db(settings.database.location) as conn:
        created = await service.create_campaign(
            conn, settings.templates.dir, kind="offers", template="welcome-offer",
            subject="An offer for {{ customer.name }}")
    return created.id


async def send(settings: Settings, campaign_id: int) -> SendOutcome:
    async with open_db(settings.database.location) as conn:
        return await send_campaign(conn, fast(settings), campaign_id, stop=asyncio.Event())


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def customer_ids(db: Path | str) -> dict[str, int]:
    return {str(e): int(i) for e, i in dbrows.rows(db, "SELECT email, id FROM customers")}


def hard_bounce(received: Received, number: int) -> bytes:
    """A Postfix RFC 3464 report of a 5.1.1 for the message the sink received, addressed to
    the VERP address it went out from, with a report Message-ID of its own."""
    [recipient] = received.rcpt_tos
    raw = load("postfix-dsn-5.1.1", verp=received.mail_from, recipient=recipient,
               message_id=str(parse(received.content)["Message-ID"]))
    return re.sub(rb"(?im)^Message-I[dD]:[ \t]*<[^>]*>",
                  f"Message-ID: <bounce{number}@mail.example.net>".encode(), raw, count=1)


def dns_for(signer: Signer) -> Callable[..., bytes | None]:
    """dkimpy's DNS lookup, answered from the signer's public key: no network."""

    def dns(name: bytes | str, timeout: int = 5) -> bytes | None:
        asked = name if isinstance(name, bytes) else name.encode()
        if asked.rstrip(b".") == signer.dns_name().encode():
            return signer.dns_value().encode()
        return None

    return dns


@pytest.fixture(params=["rsa-sha256", "ed25519-sha256"])
def dkim_key(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    key = tmp_path / "dkim.key"
    if request.param == "rsa-sha256":
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True)
    else:
        seed = bytes(nacl.signing.SigningKey.generate())
        key.write_text(base64.b64encode(seed).decode("ascii") + "\n", encoding="ascii")
    yield {"domain": "imperialtelecom.co.uk", "selector": "s2026",
           "private_key_file": str(key), "algorithm": request.param}


# --- what every campaign message carries -----------------------------------------------------


async def test_every_campaign_message_is_dkim_signed_from_its_own_verp_address_with_a_feedback_id(
    tmp_path: Path, smtp_sink: SmtpSink, dkim_key: dict[str, Any], database: Path | str,
) -> None:
    world = CampaignWorld.build(tmp_path, smtp_sink, database,
                                bounces={"address": BOUNCE_ADDRESS}, dkim=dkim_key)
    await world.add_customers(12)
    campaign_id = await world.create_campaign(kind="offers")
    outcome = await send(world.settings, campaign_id)
    assert outcome.status == "sent" and outcome.sent == 12

    signer = load_signer(world.settings.dkim)
    assert signer is not None
    dns = dns_for(signer)
    ids = customer_ids(world.db)
    senders = set()
    for received in smtp_sink.messages:
        [recipient] = received.rcpt_tos
        tag = verp.parse(received.mail_from, bounce_address=BOUNCE_ADDRESS,
                         secret=world.settings.campaigns.secret)
        assert tag == verp.Tag.campaign(campaign_id, ids[recipient])
        assert "example" not in received.mail_from  # no part of the address in it
        senders.add(received.mail_from)

        assert received.content.startswith(b"DKIM-Signature:")
        assert dkimpy.verify(received.content, dnsfunc=dns), recipient
        signature = parse(received.content)["DKIM-Signature"]
        assert f"a={dkim_key['algorithm']}" in signature.replace(" ", "")
        signed = re.search(r"h=([^;]+)", "".join(str(signature).split())).group(1)
        assert {"feedback-id", "list-unsubscribe", "list-unsubscribe-post", "from", "to",
                "subject", "message-id"} <= {h.lower() for h in signed.split(":")}
        tampered = received.content.replace(recipient.encode(), b"eve@example.com")
        assert not dkimpy.verify(tampered, dnsfunc=dns)

        assert parse(received.content)["Feedback-ID"] == f"c{campaign_id}:offers:imperial"
    assert len(senders) == 12  # one envelope sender per recipient


async def test_without_verp_the_bare_bounce_address_and_without_one_the_sender_is_mail_from(
    tmp_path: Path, smtp_sink: SmtpSink, database: Path | str,
) -> None:
    # Two worlds: the first on the fixture's engine, the second on a SQLite file of its own.
    bare = CampaignWorld.build(tmp_path / "bare", smtp_sink, database,
                               bounces={"address": BOUNCE_ADDRESS, "verp": False})
    plain = CampaignWorld.build(tmp_path / "plain", smtp_sink)
    for world in (bare, plain):
        await world.add_customers(3)
        assert (await send(world.settings, await world.create_campaign())).sent == 3

    first, second = smtp_sink.messages[:3], smtp_sink.messages[3:]
    assert {m.mail_from for m in first} == {BOUNCE_ADDRESS}
    assert {m.mail_from for m in second} == {"news@imperial.test"}
    for received in smtp_sink.messages:
        assert parse(received.content)["Feedback-ID"].endswith(":offers:imperial")
        assert not received.content.startswith(b"DKIM-Signature:")  # no [dkim]: unsigned


async def test_a_missing_dkim_key_stops_campaign_send_and_the_daemon_with_one_line(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    world = await inbox_world(tmp_path, imap_server, smtp_sink, 2,
                              dkim={"domain": "imperial.test", "selector": "s1",
                                    "private_key_file": str(tmp_path / "absent.pem")})
    campaign_id = await create(world.settings)
    for command in (("campaign", "send", str(campaign_id)), ("run",)):
        result = run_cli(world.settings_path, *command)
        assert result.code == 2, command
        [line] = result.stderr.strip().splitlines()
        assert "[dkim] private_key_file" in line and "absent.pem" in line
    assert smtp_sink.messages == []


# --- what a report does to the next campaign and to this one ---------------------------------


async def test_a_hard_bounce_tied_by_verp_makes_the_customer_undeliverable_and_the_next_campaign_skips_them(  # noqa: E501
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    world = await inbox_world(tmp_path, imap_server, smtp_sink, 4)
    first = await create(world.settings)
    assert (await send(world.settings, first)).sent == 4
    bounced = next(m for m in smtp_sink.messages if m.rcpt_tos == ("c2@example.com",))

    world.deliver(hard_bounce(bounced, 1))
    result = await world.process()
    assert (result.reports, result.bounces) == (1, 1)
    assert world.query(
        "SELECT r.kind, r.campaign_id, r.tied_by, c.email FROM delivery_reports r "
        "JOIN customers c ON c.id = r.customer_id") == [("hard", first, "verp", "c2@example.com")]
    assert world.preferences("c2@example.com") == (True, True)  # consent untouched

    before = len(smtp_sink.messages)
    second = await create(world.settings)
    outcome = await send(world.settings, second)

    assert (outcome.sent, outcome.skipped) == (3, 1)
    got = {m.rcpt_tos[0] for m in smtp_sink.messages[before:]}
    assert got == {"c0@example.com", "c1@example.com", "c3@example.com"}
    [(status, reply)] = world.query(
        "SELECT r.status, r.last_reply FROM campaign_recipients r JOIN customers c "
        "ON c.id = r.customer_id WHERE r.campaign_id = ? AND c.email = 'c2@example.com'", second)
    assert status == "skipped"
    assert str(reply).startswith("undeliverable: hard bounce 5.1.1")

    shown = json.loads(run_cli(world.settings_path, "campaign", "show", str(first),
                               "--json").stdout)
    assert shown["deliverability"] == {
        "sent": 4, "bounced": {"hard": 1, "soft": 0}, "complaints": 0,
        "rates": {"hard_bounce": 0.25, "soft_bounce": 0.0, "complaint": 0.0}}
    text = run_cli(world.settings_path, "campaign", "show", str(first)).stdout
    assert "bounced:   1 hard (25.00%), 0 soft (0.00%) of 4 sent" in text
    assert "complaints: 0 (0.00%)" in text


async def test_a_campaign_pauses_itself_saying_why_when_hard_bounces_reported_meanwhile_pass_the_rate(  # noqa: E501
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    audience = 400
    world = await inbox_world(
        tmp_path, imap_server, smtp_sink, audience,
        bounces={"pause_bounce_rate": 0.05, "pause_min_sample": 20},
        # Slow enough that the campaign is still sending while the reports come back.
        smtp={"rate_limit": 40.0, "max_connections": 2})
    campaign_id = await create(world.settings)
    sending = asyncio.create_task(send(world.settings, campaign_id))

    await wait_for(lambda: len(smtp_sink.messages) >= 25 or sending.done(),
                   what="25 campaign messages sent")
    assert not sending.done(), "the campaign ended before the reports came back"
    # Reports for 5 of the first messages arrive through the inbox pass, in another task.
    world.deliver(*(hard_bounce(m, n) for n, m in enumerate(smtp_sink.messages[:5])))
    result = await world.process()
    assert result.bounces == 5
    outcome = await sending

    assert outcome.status == "paused"
    assert outcome.reason.startswith("paused: hard-bounce rate ")
    assert outcome.paused_by == "reports"
    assert "above [bounces] pause_bounce_rate 5.0%" in outcome.reason
    assert outcome.counts.pending > 0 and len(smtp_sink.messages) < audience
    shown = json.loads(run_cli(world.settings_path, "campaign", "show", str(campaign_id),
                               "--json").stdout)
    assert shown["status"] == "paused"
    assert shown["status_reason"] == outcome.reason
    assert shown["deliverability"]["bounced"] == {"hard": 5, "soft": 0}
