"""The server checks against real servers: a TLS aiosmtpd (STARTTLS and implicit TLS) with a
trustme CA, Dovecot, and the real public app behind TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web

from mailer.doctor.report import Check
from mailer.doctor.resolver import Resolver
from mailer.doctor.servers import imap_checks, smtp_checks, unsubscribe_check
from mailer.mail.smtp import smtp_config
from tests.doctor.conftest import HOST, UNSUBSCRIBE_HOST, Relay, World, server_context
from tests.servers import SmtpSink, free_port


def results(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.result for c in checks}


async def test_starttls_relay_with_a_certificate_for_its_name_and_our_login_passes(
        world: World) -> None:
    checks = await smtp_checks(smtp_config(world.settings()))

    assert results(checks) == {"SMTP": "pass", "SMTP TLS": "pass", "SMTP login": "pass"}
    tls = next(c for c in checks if c.name == "SMTP TLS")
    assert tls.found.startswith(f"{HOST}:") and "STARTTLS, TLSv1." in tls.found
    assert tls.found.endswith(f"certificate verifies for {HOST}")


async def test_implicit_tls_on_its_own_port_passes(world: World, ca: trustme.CA) -> None:
    with Relay(server_context(ca, HOST), implicit=True) as implicit:
        settings = world.settings(smtp={"port": implicit.port, "security": "tls"})
        checks = await smtp_checks(smtp_config(settings))

    assert results(checks) == {"SMTP": "pass", "SMTP TLS": "pass", "SMTP login": "pass"}, checks
    assert "implicit TLS" in checks[1].found


async def test_a_certificate_for_another_name_fails_tls(world: World, ca: trustme.CA) -> None:
    with Relay(server_context(ca, "smtp.elsewhere.test")) as wrong:
        settings = world.settings(smtp={"port": wrong.port})
        checks = await smtp_checks(smtp_config(settings))

    tls = next(c for c in checks if c.name == "SMTP TLS")
    assert tls.result == "fail"
    assert "certificate does not verify" in tls.found and "IP address mismatch" in tls.found
    assert tls.fix.startswith("install a certificate for [smtp] host")


async def test_a_certificate_from_an_unknown_ca_fails_tls(world: World) -> None:
    with Relay(server_context(trustme.CA(), HOST)) as stranger:
        settings = world.settings(smtp={"port": stranger.port})
        checks = await smtp_checks(smtp_config(settings))

    assert results(checks)["SMTP TLS"] == "fail"


async def test_a_refused_login_fails_naming_the_settings(world: World) -> None:
    checks = await smtp_checks(smtp_config(world.settings(smtp={"password": "wrong"})))

    login = next(c for c in checks if c.name == "SMTP login")
    assert login.result == "fail"
    assert login.found.startswith(f"{HOST}:") and "news refused: 535" in login.found
    assert login.fix == "check [smtp] username and the password (MAILER_SMTP_PASSWORD)"


async def test_a_relay_without_tls_fails(world: World, smtp_sink: SmtpSink) -> None:
    settings = world.settings(smtp={"port": smtp_sink.port, "security": "starttls",
                                    "username": ""})
    checks = await smtp_checks(smtp_config(settings))

    assert results(checks) == {"SMTP": "pass", "SMTP TLS": "fail"}
    assert checks[1].found.endswith("STARTTLS not offered (RFC 3207)")


async def test_nothing_listening_fails_smtp(world: World) -> None:
    checks = await smtp_checks(smtp_config(world.settings(smtp={"port": free_port()})))

    assert [(c.name, c.result) for c in checks] == [("SMTP", "fail")]


async def test_imap_logs_in_and_finds_our_folders(world: World) -> None:
    checks = await imap_checks(world.settings())

    assert results(checks) == {"IMAP": "pass", "IMAP folders": "pass"}
    assert checks[1].found == "INBOX, Processed, Review, Bounces"


async def test_imap_folders_not_made_yet_warn(world: World) -> None:
    checks = await imap_checks(world.settings(imap={"review_folder": "Later"}))

    assert results(checks)["IMAP folders"] == "warn"
    assert checks[1].fix == "run `mailer inbox process` once: it creates them"


async def test_imap_refusing_the_login_fails(world: World) -> None:
    checks = await imap_checks(world.settings(imap={"password": "wrong"}))

    assert [(c.name, c.result) for c in checks] == [("IMAP", "fail")]


@pytest.fixture
async def resolver(world: World) -> AsyncIterator[Resolver]:
    yield Resolver(world.settings().doctor)


async def test_unsubscribe_url_over_verified_https_reaches_the_listener(
        world: World, listener: None, resolver: Resolver) -> None:
    url = world.settings().campaigns.unsubscribe_url

    check = await unsubscribe_check(url, resolver)

    assert check.result == "pass", check
    assert check.found.startswith(f"https://{UNSUBSCRIBE_HOST}:")
    assert "/unsubscribe/doctor-probe: https, certificate verifies" in check.found


async def test_unsubscribe_url_with_an_untrusted_certificate_fails(
        world: World, listener: None, resolver: Resolver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stranger = world.path.parent / "stranger.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    monkeypatch.setenv("SSL_CERT_FILE", str(stranger))

    check = await unsubscribe_check(world.settings().campaigns.unsubscribe_url, resolver)

    assert check.result == "fail"
    assert "certificate does not verify" in check.found


async def test_an_http_unsubscribe_url_fails_without_a_request(resolver: Resolver) -> None:
    check = await unsubscribe_check("http://unsubscribe.imperial.test/unsubscribe", resolver)

    assert (check.result, check.found) == (
        "fail", "http://unsubscribe.imperial.test/unsubscribe is not https (RFC 8058 §3.1)")


async def test_nothing_listening_at_the_unsubscribe_url_fails(world: World,
                                                             resolver: Resolver) -> None:
    check = await unsubscribe_check(world.settings().campaigns.unsubscribe_url, resolver)

    assert check.result == "fail"
    assert check.fix.startswith("check that the public listener ([http]) runs")


async def test_a_verified_host_whose_answer_is_not_mailers_warns(
        world: World, ca: trustme.CA, resolver: Resolver) -> None:
    url = world.settings().campaigns.unsubscribe_url
    port = int(url.split(":")[2].split("/")[0])
    runner = web.AppRunner(web.Application())  # a proxy's own site: 404 for every path
    await runner.setup()
    await web.TCPSite(runner, HOST, port,
                      ssl_context=server_context(ca, UNSUBSCRIBE_HOST)).start()
    try:
        check = await unsubscribe_check(url, resolver)
    finally:
        await runner.cleanup()

    assert check.result == "warn"
    assert check.found.endswith("certificate verifies, but the answer (404) is not mailer's")


async def test_implicit_tls_with_a_certificate_for_another_name_fails_tls(
        world: World, ca: trustme.CA) -> None:
    with Relay(server_context(ca, "smtp.elsewhere.test"), implicit=True) as wrong:
        settings = world.settings(smtp={"port": wrong.port, "security": "tls"})
        checks = await smtp_checks(smtp_config(settings))

    assert [(c.name, c.result) for c in checks] == [("SMTP TLS", "fail")]
    assert "certificate does not verify" in checks[0].found
