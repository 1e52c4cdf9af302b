"""The public listener's limits and health over HTTP (aiohttp's test client, a real server on
loopback): one-clicks from a mail provider's shared address, guessed tokens, IPv6 clients, a
proxy nobody trusted, and what /healthz answers for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.http.client import limit_key
from mailer.public import make_app
from tests.public.world import FakeClock, Site, seed, web_settings

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@contextlib.asynccontextmanager
async def open_site(tmp_path: Path, customers: int = 0,
                    **overrides: dict[str, Any]) -> AsyncIterator[Site]:
    """The public app over Ann, Bob and `customers` more (c0@example.com, ...)."""
    settings = web_settings(tmp_path, **overrides)
    ids, campaign_id = await seed(settings, customers)
    async with TestClient(TestServer(make_app(settings, clock=FakeClock()))) as client:
        yield Site(client, settings, FakeClock(), ids, campaign_id)


async def test_one_clicks_for_many_customers_from_one_shared_address_are_all_honoured(
    tmp_path: Path,
) -> None:
    async with open_site(tmp_path, customers=150, http={"rate_limit_per_min": 60}) as site:
        emails = [f"c{n}@example.com" for n in range(150)]
        responses = await asyncio.gather(*(site.client.post(site.url(email), data=ONE_CLICK)
                                           for email in emails))

        assert [r.status for r in responses] == [200] * len(emails)
        [(opted_out,)] = site.rows("SELECT count(*) FROM customers WHERE offers = 0")
        assert opted_out == len(emails)


async def test_tokens_that_do_not_verify_are_limited_hard_and_real_links_still_work(
    tmp_path: Path,
) -> None:
    async with open_site(tmp_path, http={"rate_limit_per_min": 60}) as site:
        token = site.token()
        guesses = [f"{site.prefix}/{token[:-4]}{n:04d}" for n in range(12)]
        statuses = [(await site.client.post(g, data=ONE_CLICK)).status for g in guesses]

        assert statuses[:10] == [404] * 10  # a mistyped link or two is only a 404
        assert statuses[10:] == [429, 429]
        assert (await site.client.post(site.url(), data=ONE_CLICK)).status == 200
        assert site.preferences()["offers"] == 0


async def test_a_link_hammered_from_one_address_is_still_limited(tmp_path: Path) -> None:
    async with open_site(tmp_path, http={"rate_limit_per_min": 5}) as site:
        statuses = [(await site.client.get(site.url())).status for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        assert (await site.client.get(site.url("bob@example.com"))).status == 200


def test_an_ipv6_client_is_counted_by_its_64_and_ipv4_as_itself() -> None:
    assert limit_key("2001:db8:1:2::1") == limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == (
        "2001:db8:1:2::/64")
    assert limit_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert limit_key("::ffff:192.0.2.7") == limit_key("192.0.2.7") == "192.0.2.7"
    assert limit_key("not an address") == "not an address"


async def test_addresses_of_one_ipv6_64_share_one_rate_limit(tmp_path: Path) -> None:
    async with open_site(tmp_path, http={"rate_limit_per_min": 2,
                                         "trusted_proxies": ["127.0.0.1"]}) as site:
        def via(address: str) -> dict[str, str]:
            return {"X-Forwarded-For": address}

        assert (await site.client.get("/", headers=via("2001:db8:1:2::1"))).status == 404
        assert (await site.client.get("/", headers=via("2001:db8:1:2::2"))).status == 404
        assert (await site.client.get("/", headers=via("2001:db8:1:2::3"))).status == 429
        assert (await site.client.get("/", headers=via("2001:db8:1:3::1"))).status == 404


async def test_forwarded_requests_from_an_untrusted_proxy_are_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mailer.http")
    async with open_site(tmp_path) as site:
        assert (await site.client.get(site.url())).status == 200
        assert not caplog.records  # nothing forwarded, nothing to say
        for _ in range(3):
            await site.client.get(site.url(), headers={"X-Forwarded-For": "203.0.113.9"})

    warnings = [r.getMessage() for r in caplog.records if r.name == "mailer.http.client"]
    assert len(warnings) == 1
    assert "X-Forwarded-For from 127.0.0.1" in warnings[0]
    assert "trusted_proxies" in warnings[0] and "203.0.113.9" not in warnings[0]


async def test_healthz_answers_for_the_listener_and_full_for_the_daemon(
    tmp_path: Path,
) -> None:
    async with open_site(tmp_path) as site:
        health = await site.client.get("/healthz")
        full = await site.client.get("/healthz?full")

        assert health.status == 200 and await health.text() == "ok\n"
        # No daemon has run on this database: the link works, the daemon is not running.
        assert full.status == 503
        body = await full.json()
        assert body["status"] == "not running" and body["code"] == 2
