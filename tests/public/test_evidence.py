"""A consent change on the web records its evidence, through the real public listener (aiohttp
on loopback, SQLite and PostgreSQL): the client address after `[http] trusted_proxies`, the
user agent, and on the preference page the version of the wording the page showed."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from mailer.public import make_app
from mailer.public.evidence import MAX_USER_AGENT_CHARS, wording_version
from tests.public.world import FakeClock, Site, seed, web_settings

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


@contextlib.asynccontextmanager
async def open_site(tmp_path: Path, database: Path | str | None = None,
                    **overrides: dict[str, Any]) -> AsyncIterator[Site]:
    settings = web_settings(tmp_path, 1, database, **overrides)
    ids, campaign_id = await seed(settings)
    clock = FakeClock()
    async with TestClient(TestServer(make_app(settings, clock=clock))) as client:
        yield Site(client, settings, clock, ids, campaign_id)


def evidence(site: Site, email: str = "ann@example.com") -> list[tuple[Any, ...]]:
    return site.rows(
        "SELECT category, new_value, source, client_address, user_agent, wording, message_id "
        "FROM consent_events WHERE customer_id = ? AND source != 'import' ORDER BY id",
        (site.ids[email],))


async def test_a_one_click_records_the_client_address_and_user_agent(
    tmp_path: Path, database: Path | str
) -> None:
    async with open_site(tmp_path, database) as site:
        response = await site.client.post(site.url(), data={"List-Unsubscribe": "One-Click"},
                                          headers={"User-Agent": "ExampleMail/2.1"})
        assert response.status == 200

        assert evidence(site) == [
            ("announcements", 0, "one-click", "127.0.0.1", "ExampleMail/2.1", "", ""),
            ("offers", 0, "one-click", "127.0.0.1", "ExampleMail/2.1", "", "")]


async def test_behind_a_trusted_proxy_the_forwarded_client_is_recorded_and_a_long_agent_cut(
    tmp_path: Path, database: Path | str
) -> None:
    async with open_site(tmp_path, database, http={"trusted_proxies": ["127.0.0.1"]}) as site:
        response = await site.client.post(
            site.url(), data={"List-Unsubscribe": "One-Click"},
            headers={"X-Forwarded-For": "198.51.100.4, 203.0.113.9", "User-Agent": "x" * 5000})
        assert response.status == 200

        rows = evidence(site)
        assert [r[3] for r in rows] == ["203.0.113.9", "203.0.113.9"]
        assert all(r[4] == "x" * MAX_USER_AGENT_CHARS for r in rows)


async def test_the_preference_page_records_the_wording_it_showed(
    tmp_path: Path, database: Path | str
) -> None:
    async with open_site(tmp_path, database) as site:
        page = await site.client.get(site.url(), headers={"User-Agent": BROWSER})
        html = await page.text()
        nonce = re.search(r'name="nonce" value="([^"]+)"', html)
        assert nonce

        saved = await site.client.post(
            site.url(), data={"nonce": nonce.group(1), "action": "save",
                              "categories": "announcements"},
            headers={"User-Agent": BROWSER}, allow_redirects=False)
        assert saved.status == 303

        shown = wording_version(html)
        assert shown != ""
        assert evidence(site) == [
            ("offers", 0, "preference page", "127.0.0.1", BROWSER, shown, "")]


async def test_a_change_of_the_pages_wording_is_a_new_version_in_the_record(
    tmp_path: Path
) -> None:
    async with open_site(tmp_path / "before") as site:
        before = await (await site.client.get(site.url())).text()

    web_settings(tmp_path / "after")  # copies the templates, which this deployment then edits
    template = tmp_path / "after" / "templates" / "web" / "preferences.html"
    template.write_text(template.read_text().replace(
        "Tick the emails you want.", "Tick the emails you would like."))
    async with open_site(tmp_path / "after") as site:
        after = await (await site.client.get(site.url())).text()
        nonce = re.search(r'name="nonce" value="([^"]+)"', after)
        assert nonce
        response = await site.client.post(
            site.url(), data={"nonce": nonce.group(1), "action": "everything"},
            allow_redirects=False)
        assert response.status == 303

        assert {r[5] for r in evidence(site)} == {wording_version(after)}
        assert wording_version(after) != wording_version(before)
