"""The public listener's probe route (what the doctor GETs), and the daemon's start report:
one log line per failure, and DNS trouble never stops it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.doctor.probe import PROBE_BODY, probe_url
from mailer.doctor.run import startup_report
from mailer.mail import tokens
from mailer.public import make_app
from tests.doctor.conftest import DOMAIN, World
from tests.doctor.dns_zone import DnsServer
from tests.public.world import seed, web_settings


async def test_the_probe_answers_under_the_unsubscribe_path_and_tokens_still_work(
        tmp_path: Path) -> None:
    settings = web_settings(tmp_path)
    ids, campaign_id = await seed(settings)
    token = tokens.campaign_token(settings.campaigns.secret, ids["ann@example.com"], campaign_id)
    async with TestClient(TestServer(make_app(settings))) as client:
        probe = await client.get("/unsubscribe/doctor-probe")
        page = await client.get(f"/unsubscribe/{token}")
        post = await client.post("/unsubscribe/doctor-probe")

        assert (probe.status, await probe.text()) == (200, PROBE_BODY)
        assert probe.headers["Cache-Control"] == "no-store"
        assert page.status == 200
        assert post.status in (400, 404)  # the probe takes no one-click


def test_the_probe_url_keeps_scheme_host_and_port() -> None:
    assert probe_url("https://u.imperial.test:8443/unsubscribe/") == (
        "https://u.imperial.test:8443/unsubscribe/doctor-probe")
    assert probe_url("https://u.imperial.test") == "https://u.imperial.test/unsubscribe/doctor-probe"


async def test_the_start_report_logs_one_line_per_failure(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.zone.remove(DOMAIN, "MX")
    world.zone.remove(f"_dmarc.{DOMAIN}", "TXT")

    with caplog.at_level(logging.WARNING, logger="mailer.doctor.run"):
        report = await startup_report(world.settings())

    assert {c.name for c in report.failures()} == {"MX", "DMARC"}
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2
    assert lines[0].startswith(f"doctor: DMARC failed: _dmarc.{DOMAIN}: no DMARC record (fix: ")
    assert all("\n" not in line for line in lines)


async def test_the_start_report_with_dns_down_fails_a_check_and_returns(world: World) -> None:
    with DnsServer() as gone:
        address = gone.address
    settings = world.settings(doctor={"nameservers": [address]})

    report = await startup_report(settings)

    assert [c.name for c in report.failures()] == ["DNS", "DKIM signature"]


async def test_an_unreadable_dkim_key_is_named_not_taken_for_dkim_off(world: World) -> None:
    settings = world.settings()
    (world.path.parent / "dkim.pem").write_text("not a key")

    report = await startup_report(settings)

    failures = {c.name: c.found for c in report.failures()}
    assert failures["DKIM private key"].startswith("[dkim] private_key_file: not an RSA "
                                                   "private key")
    assert failures["DKIM key"] == "[dkim] is set but its private key cannot be loaded"
