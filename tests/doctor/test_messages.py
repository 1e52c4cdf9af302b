"""The message checks: the sample campaign message and confirmation, built with the sender's
own builders, pass; each rule broken in a message fails; DKIM verifies only against our key."""

from __future__ import annotations

import base64
from email.message import EmailMessage

import nacl.signing

from mailer.doctor.dns_checks import DkimFacts, dns_checks
from mailer.doctor.messages import (
    build_samples,
    judge_confirmation,
    judge_dkim,
    judge_format,
    judge_one_click,
    judge_visible_link,
    message_checks,
    unsubscribe_link,
)
from mailer.doctor.resolver import Resolver
from mailer.mail.dkim import load_signer
from mailer.settings import Settings
from tests.doctor.conftest import DOMAIN, SELECTOR, World, rsa_pem


async def found_dkim(settings: Settings) -> DkimFacts | None:
    _, facts = await dns_checks(Resolver(settings.doctor), settings, load_signer(settings.dkim))
    return facts


async def test_the_sample_campaign_message_passes_every_check(world: World) -> None:
    settings = world.settings()

    checks = message_checks(settings, await found_dkim(settings))

    assert [(c.name, c.result) for c in checks] == [
        ("RFC 5322", "pass"), ("One-click headers", "pass"), ("Visible unsubscribe link", "pass"),
        ("Feedback-ID", "pass"), ("DKIM signature", "pass"), ("Confirmation", "pass")], checks
    assert checks[3].found == "c1:offers:imperial"
    assert checks[4].found == f"verifies against {SELECTOR}._domainkey.{DOMAIN}"


async def test_a_signature_checked_against_a_key_not_ours_fails(world: World) -> None:
    settings = world.settings()
    other_file = world.path.parent / "other.pem"
    other_file.write_bytes(rsa_pem(1))
    other = load_signer(world.settings(dkim={"private_key_file": str(other_file)}).dkim)
    assert other is not None
    samples = build_samples(settings)

    check = judge_dkim(samples.campaign, DkimFacts(other.dns_name(), [other.dns_value()]), True)

    assert (check.result, check.found) == (
        "fail", f"does not verify against {SELECTOR}._domainkey.{DOMAIN}")


def test_an_unsigned_message_fails_dkim() -> None:
    check = judge_dkim(b"From: a@b.test\r\n\r\nhi\r\n", None, signed=False)

    assert (check.result, check.fix) == (
        "fail", "set [dkim] domain, selector and private_key_file")


async def test_an_http_unsubscribe_url_stops_the_sample_with_the_setting_named(
        world: World) -> None:
    settings = world.settings(campaigns={"unsubscribe_url": "http://imperial.test/u"})

    checks = message_checks(settings, None)

    assert [(c.name, c.result) for c in checks] == [("Sample message", "fail")]
    assert checks[0].found.startswith("cannot build one: [campaigns] unsubscribe_url: one-click "
                                      "unsubscribe needs an https:// URL")


async def test_a_campaign_message_is_no_confirmation(world: World) -> None:
    """A confirmation carrying one-click headers fails: the check reads the headers."""
    check = judge_confirmation(build_samples(world.settings()).campaign)

    assert check.result == "fail"
    assert check.found == ("carries List-Unsubscribe, List-Unsubscribe-Post (it is not "
                           "marketing: no one-click)")


def handmade(*, post: str | None = "List-Unsubscribe=One-Click", html_link: bool = True,
             message_ids: int = 1, long_line: bool = False) -> bytes:
    link = "https://imperial.test/unsubscribe/TOKEN"
    message = EmailMessage()
    message["From"] = f"News <news@{DOMAIN}>"
    message["To"] = "ann@example.com"
    message["Date"] = "Sun, 06 Dec 2026 16:00:00 +0000"
    message["Message-ID"] = f"<m0@{DOMAIN}>"
    message["List-Unsubscribe"] = f"<{link}>"
    if post is not None:
        message["List-Unsubscribe-Post"] = post
    message.set_content(f"Leave: {link}\n" + ("x" * 1200 if long_line else ""), cte="8bit")
    message.add_alternative(f"<a href='{link if html_link else '#'}'>leave</a>", subtype="html")
    data = message.as_bytes().replace(b"\n", b"\r\n")
    extra = b"".join(f"Message-ID: <m{i}@{DOMAIN}>\r\n".encode() for i in range(1, message_ids))
    return extra + data  # EmailMessage itself refuses a second Message-ID


def test_a_missing_one_click_post_header_fails() -> None:
    check = judge_one_click(handmade(post=None))

    assert check.result == "fail"
    assert check.found.endswith("List-Unsubscribe-Post: none")


def test_a_part_without_the_link_fails_naming_it() -> None:
    check = judge_visible_link(handmade(html_link=False))

    assert (check.result, check.found) == ("fail", "no unsubscribe link in text/html")
    assert unsubscribe_link(handmade()) == "https://imperial.test/unsubscribe/TOKEN"


def test_two_message_ids_and_an_overlong_line_fail_rfc_5322() -> None:
    check = judge_format(handmade(message_ids=2, long_line=True), DOMAIN)

    assert check.result == "fail"
    assert "2 Message-ID fields (RFC 5322 §3.6: exactly one)" in check.found
    assert "(RFC 5322 §2.1.1: at most 998)" in check.found


def test_a_handmade_message_that_keeps_the_rules_passes() -> None:
    data = handmade()

    assert [judge_format(data, DOMAIN).result, judge_one_click(data).result,
            judge_visible_link(data).result] == ["pass", "pass", "pass"]


async def test_an_ed25519_key_passes_the_key_and_signature_checks(world: World) -> None:
    seed_file = world.path.parent / "ed25519.key"
    seed_file.write_text(base64.b64encode(bytes(nacl.signing.SigningKey.generate())).decode())
    settings = world.settings(dkim={"algorithm": "ed25519-sha256",
                                    "private_key_file": str(seed_file)})
    signer = load_signer(settings.dkim)
    assert signer is not None
    world.zone.remove(signer.dns_name(), "TXT")
    world.zone.txt(signer.dns_name(), signer.dns_value())

    checks, facts = await dns_checks(Resolver(settings.doctor), settings, signer)
    dkim = message_checks(settings, facts)[4]

    assert next(c for c in checks if c.name == "DKIM key").found.endswith(
        "ed25519 key matches ours")
    assert (dkim.name, dkim.result) == ("DKIM signature", "pass")


async def test_the_doctors_sample_message_carries_the_sample_link_not_a_customers(
        world: World) -> None:
    link = unsubscribe_link(build_samples(world.settings()).campaign)

    assert link.endswith("/unsubscribe/SAMPLE"), link
