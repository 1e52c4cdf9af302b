"""The unsubscribe link over HTTP, through aiohttp's test client (a real server on loopback):
RFC 8058 one-click in both body encodings, the preference page's forms, tokens, limits and the
headers on every answer. Every refusal is checked to change nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.mail import tokens
from mailer.public import make_app
from tests.campaigns.world import SECRET, UNSUBSCRIBE_ADDRESS
from tests.public.world import OLD_SECRET, FakeClock, Site, seed, web_settings

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@contextlib.asynccontextmanager
async def open_site(tmp_path: Path, database: Path | str | None = None,
                    **overrides: dict[str, Any]) -> AsyncIterator[Site]:
    settings = web_settings(tmp_path, 1, database, **overrides)
    ids, campaign_id = await seed(settings)
    clock = FakeClock()
    async with TestClient(TestServer(make_app(settings, clock=clock))) as client:
        yield Site(client, settings, clock, ids, campaign_id)


@pytest.fixture
async def site(tmp_path: Path, database: Path | str) -> AsyncIterator[Site]:
    # Consent recording runs on both engines; tests of HTTP alone open a SQLite site.
    async with open_site(tmp_path, database) as s:
        yield s


@pytest.fixture
async def sqlite_site(tmp_path: Path) -> AsyncIterator[Site]:
    """A site on SQLite, for the tests that break its database underneath it (a row deleted
    past its foreign keys, a table dropped), which SQLite lets a plain connection do."""
    async with open_site(tmp_path) as s:
        yield s


def multipart(fields: dict[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def page_nonce(site: Site, email: str = "ann@example.com") -> str:
    response = await site.client.get(site.url(email))
    assert response.status == 200
    match = re.search(r'name="nonce" value="([^"]+)"', await response.text())
    assert match
    return match.group(1)


# --- one click ------------------------------------------------------------------------------


async def test_one_click_post_opts_out_at_once_and_answers_200_with_a_short_plain_body(
    site: Site,
) -> None:
    response = await site.client.post(site.url(), data=ONE_CLICK, allow_redirects=False)

    assert response.status == 200
    assert response.content_type == "text/plain"
    assert "unsubscribed" in await response.text()
    assert "Set-Cookie" not in response.headers and "Location" not in response.headers
    assert site.preferences() == {"announcements": 0, "offers": 0}
    reference = f"campaign {site.campaign_id}"
    assert site.events() == [("announcements", 1, 0, "one-click", reference),
                             ("offers", 1, 0, "one-click", reference)]
    assert site.pending() == "skipped"
    assert site.pending("bob@example.com") == "pending"
    assert site.rows("SELECT count(*) FROM outbox") == [(0,)]  # no confirmation email
    assert site.preferences("bob@example.com") == {"announcements": 1, "offers": 1}


async def test_one_click_post_as_multipart_form_data_is_honoured_the_same(site: Site) -> None:
    response = await site.client.post(site.url(), data=multipart(ONE_CLICK))

    assert response.status == 200
    assert site.preferences() == {"announcements": 0, "offers": 0}
    assert [e[3] for e in site.events()] == ["one-click", "one-click"]


async def test_one_click_post_twice_changes_nothing_more_and_still_answers_200(
    site: Site,
) -> None:
    first = await site.client.post(site.url(), data=ONE_CLICK)
    after_first = site.snapshot()
    second = await site.client.post(site.url(), data=multipart(ONE_CLICK))

    assert (first.status, second.status) == (200, 200)
    assert await first.text() == await second.text()
    assert site.snapshot() == after_first


async def test_one_click_turns_off_only_the_configured_categories(
    tmp_path: Path, database: Path | str
) -> None:
    async with open_site(tmp_path, database, unsubscribe={"categories": ["offers"]}) as site:
        response = await site.client.post(site.url(), data=ONE_CLICK)

        assert response.status == 200
        assert "special offers" in await response.text()
        assert site.preferences() == {"announcements": 1, "offers": 0}


async def test_one_click_with_extra_fields_is_still_honoured(site: Site) -> None:
    response = await site.client.post(site.url(), data={**ONE_CLICK, "utm_source": "x"})

    assert response.status == 200
    assert site.preferences()["offers"] == 0


@pytest.mark.parametrize("body", [
    b"", b"List-Unsubscribe=Yes", b"List-Unsubscribe=one-click", b"unsubscribe=1",
    b"List-Unsubscribe=One-Click&List-Unsubscribe=One-Click",
])
async def test_one_click_without_exactly_the_rfc_8058_field_gets_400_and_changes_nothing(
    site: Site, body: bytes,
) -> None:
    before = site.snapshot()
    response = await site.client.post(
        site.url(), data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert response.status == 400
    assert response.content_type == "text/html"
    assert site.snapshot() == before


@pytest.mark.parametrize("content_type", [
    "application/json", "text/plain", "application/octet-stream", None,
])
async def test_a_post_that_is_not_a_form_gets_415_and_changes_nothing(
    site: Site, content_type: str | None,
) -> None:
    before = site.snapshot()
    headers = {"Content-Type": content_type} if content_type else {}
    response = await site.client.post(
        site.url(), data=b"List-Unsubscribe=One-Click", headers=headers,
        skip_auto_headers=["Content-Type"])

    assert response.status == 415
    assert site.snapshot() == before


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_an_oversized_body_gets_413_and_changes_nothing(site: Site, encoding: str) -> None:
    before = site.snapshot()
    fields = {**ONE_CLICK, "padding": "x" * 10_000}
    data = multipart(fields) if encoding == "multipart" else fields
    response = await site.client.post(site.url(), data=data)

    assert response.status == 413
    assert site.snapshot() == before


# --- reading never changes anything ---------------------------------------------------------


async def test_get_and_head_show_the_page_and_never_change_anything(site: Site) -> None:
    before = site.snapshot()
    got = await site.client.get(site.url("bob@example.com"))
    head = await site.client.head(site.url("bob@example.com"))
    again = await site.client.get(site.url("bob@example.com"))

    assert (got.status, head.status, again.status) == (200, 200, 200)
    html = await got.text()
    assert await head.read() == b""
    assert "Bob &lt;b&gt;Baker&lt;/b&gt;" in html  # autoescaped, never markup
    assert "<b>" not in html
    assert "Unsubscribe from everything" in html and ">Save<" in html
    assert 'lang="en-GB"' in html
    assert "Special offers" in html and "Announcements about important changes" in html
    assert "bob@example.com" not in html  # nothing but the name is shown
    assert "Ann Archer" not in html
    assert site.snapshot() == before


# --- tokens ---------------------------------------------------------------------------------


def _other_customers_token(site: Site) -> str:
    ann, bob = site.token("ann@example.com"), site.token("bob@example.com")
    return f"{bob.split('.')[0]}.{ann.split('.', 1)[1]}"  # Bob's id with Ann's signature


@pytest.mark.parametrize("make_path", [
    lambda s: f"{s.prefix}/{s.token()[:-1]}",                      # truncated
    lambda s: f"{s.prefix}/{s.token()[:-2]}AA",                    # forged signature
    lambda s: f"{s.prefix}/{s.token(secret='a-secret-never-used')}",  # unknown secret
    lambda s: f"{s.prefix}/{_other_customers_token(s)}",          # another customer's
    lambda s: f"{s.prefix}/",                                      # empty
    lambda s: f"{s.prefix}/{s.token()}/more",
    lambda s: f"{s.prefix}/{'9' * 30}.1.{'A' * 22}",
    lambda s: f"{s.prefix}/%00%ff",
], ids=["truncated", "forged", "unknown-secret", "other-customer", "empty", "extra-path",
        "huge-id", "binary"])
async def test_a_bad_token_gets_the_same_plain_404_page_and_changes_nothing(
    site: Site, make_path: Any,
) -> None:
    before = site.snapshot()
    path = make_path(site)
    got = await site.client.get(path)
    posted = await site.client.post(path, data=ONE_CLICK)
    reference = await site.client.get(f"{site.prefix}/no-such-token")

    assert got.status == posted.status == 404
    assert await got.text() == await reference.text()
    assert "Page not found" in await got.text()
    assert "token" not in (await got.text()).lower()
    assert "Traceback" not in await posted.text()
    assert site.snapshot() == before


async def test_a_link_that_is_not_found_offers_to_unsubscribe_by_email_instead(
    site: Site,
) -> None:
    html = await (await site.client.get(f"{site.prefix}/no-such-token")).text()
    assert "Unsubscribe by email instead" in html
    assert (f'<a href="mailto:{UNSUBSCRIBE_ADDRESS}?subject=Unsubscribe%20special%20offers">'
            f"{UNSUBSCRIBE_ADDRESS}</a>") in html
    assert "with the subject “Unsubscribe special offers”" in html
    # Other errors are about the request, not the link: no such offer there.
    wrong_type = await site.client.post(site.url(), data=b"x",
                                        headers={"Content-Type": "text/plain"})
    assert wrong_type.status == 415
    assert "mailto:" not in await wrong_type.text()


async def test_a_token_signed_with_a_previous_secret_still_works(site: Site) -> None:
    url = site.url(secret=OLD_SECRET)

    assert (await site.client.get(url)).status == 200
    assert (await site.client.post(url, data=ONE_CLICK)).status == 200
    assert site.preferences()["offers"] == 0


async def test_a_category_token_from_mail_already_sent_still_works(site: Site) -> None:
    token = tokens.unsubscribe_token(SECRET, site.ids["ann@example.com"], "offers")

    response = await site.client.post(f"{site.prefix}/{token}", data=ONE_CLICK)

    assert response.status == 200
    assert site.events()[-1] == ("offers", 1, 0, "one-click", "unsubscribe link (offers)")


async def test_the_token_of_an_erased_customer_gets_the_plain_404_and_changes_nothing(
    sqlite_site: Site,
) -> None:
    site = sqlite_site
    ann = site.ids["ann@example.com"]
    site.rows("DELETE FROM campaign_recipients WHERE customer_id = ?", (ann,))
    site.rows("DELETE FROM customers WHERE id = ?", (ann,))
    before = site.snapshot()
    nonce_page = await site.client.get(site.url("bob@example.com"))

    got = await site.client.get(site.url())
    posted = await site.client.post(site.url(), data=ONE_CLICK)
    nonce = re.search(r'name="nonce" value="([^"]+)"', await nonce_page.text())
    assert nonce
    saved = await site.client.post(site.url(), data={"nonce": nonce.group(1),
                                                    "action": "everything"})

    assert got.status == posted.status == saved.status == 404
    assert site.snapshot() == before


# --- the preference page's forms ------------------------------------------------------------


async def test_saving_the_page_applies_exactly_the_ticked_categories(site: Site) -> None:
    nonce = await page_nonce(site)
    response = await site.client.post(site.url(), data={
        "nonce": nonce, "action": "save", "categories": "announcements"},
        allow_redirects=False)

    # Post/redirect/get: the answer is a 303 to the page, so a refresh does not post again.
    assert response.status == 303
    assert response.headers["Location"] == site.url() + "?saved=choices"
    shown = await site.client.get(response.headers["Location"])
    html = await shown.text()
    assert "Saved" in html and "Your email choices have been saved." in html
    assert 'value="offers">' in html and 'value="announcements" checked>' in html
    assert site.preferences() == {"announcements": 1, "offers": 0}
    assert site.events() == [("offers", 1, 0, "preference page", f"campaign {site.campaign_id}")]
    assert site.pending() == "skipped"
    assert site.rows("SELECT count(*) FROM outbox") == [(0,)]


async def test_opting_back_in_is_possible_on_the_page_and_nowhere_else(site: Site) -> None:
    await site.client.post(site.url(), data=ONE_CLICK)
    nonce = await page_nonce(site)
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in [("nonce", nonce), ("action", "save"), ("categories", "offers"),
                        ("categories", "announcements")]:
        form.add_field(name, value)
    response = await site.client.post(site.url(), data=form)

    assert response.status == 200
    assert site.preferences() == {"announcements": 1, "offers": 1}
    assert [e[2:4] for e in site.events()[2:]] == [(1, "preference page"),
                                                   (1, "preference page")]
    # One-click after that opts out again; it never opts in.
    await site.client.post(site.url(), data=ONE_CLICK)
    assert site.preferences() == {"announcements": 0, "offers": 0}


async def test_unsubscribe_from_everything_turns_every_category_off(site: Site) -> None:
    nonce = await page_nonce(site)
    response = await site.client.post(site.url(), data={"nonce": nonce, "action": "everything"})

    assert [r.status for r in response.history] == [303]
    assert response.status == 200 and response.url.query_string == "saved=everything"
    html = await response.text()
    assert "unsubscribed from everything" in html
    assert "We will still send you service messages about your account" in html
    # Nothing is left to stop: the same button is not offered again.
    assert 'value="everything"' not in html
    assert site.preferences() == {"announcements": 0, "offers": 0}
    assert {e[3] for e in site.events()} == {"preference page"}


async def test_a_saved_notice_is_only_one_of_the_pages_own_words(site: Site) -> None:
    html = await (await site.client.get(site.url() + "?saved=<b>hacked</b>")).text()
    assert "Saved" not in html and "hacked" not in html


async def test_saving_the_same_choices_again_records_nothing_more(site: Site) -> None:
    nonce = await page_nonce(site)
    data = {"nonce": nonce, "action": "save", "categories": "offers"}
    await site.client.post(site.url(), data=data)
    after_first = site.snapshot()
    again = await site.client.post(site.url(), data=data)

    assert again.status == 200
    assert site.snapshot() == after_first


@pytest.mark.parametrize("fields", [
    {"action": "save", "categories": "offers"},                        # no nonce
    {"nonce": "NONCE", "categories": "offers"},                        # no action
    {"nonce": "NONCE", "action": "delete-my-account"},                 # unknown action
    {"nonce": "NONCE", "action": "save", "categories": "everything"},  # unknown category
], ids=["no-nonce", "no-action", "unknown-action", "unknown-category"])
async def test_a_form_with_missing_or_unknown_fields_gets_400_and_changes_nothing(
    site: Site, fields: dict[str, str],
) -> None:
    nonce = await page_nonce(site)
    before = site.snapshot()
    data = {k: (nonce if v == "NONCE" else v) for k, v in fields.items()}
    response = await site.client.post(site.url(), data=data)

    assert response.status == 400
    assert site.snapshot() == before


async def test_a_form_with_a_forged_stale_or_other_customers_nonce_saves_nothing(
    site: Site,
) -> None:
    bobs_nonce = await page_nonce(site, "bob@example.com")
    ann_nonce = await page_nonce(site)
    issued, _, sig = ann_nonce.partition(".")
    before = site.snapshot()
    stale = []
    for nonce in (bobs_nonce, f"{issued}.{sig[:-2]}AA", f"{int(issued) + 1}.{sig}", ""):
        response = await site.client.post(site.url(), data={"nonce": nonce, "action": "save"})
        stale.append((response.status, "nothing was saved" in await response.text()))
    site.clock.advance(25 * 3600)
    expired = await site.client.post(site.url(), data={"nonce": ann_nonce, "action": "save"})

    assert stale == [(400, True)] * 4
    assert expired.status == 400
    html = await expired.text()
    assert "There is a problem" in html and "nothing was saved" in html
    assert site.snapshot() == before


# --- limits, health, headers, logging -------------------------------------------------------


async def test_the_rate_limit_answers_429_with_retry_after_and_recovers_in_time(
    tmp_path: Path,
) -> None:
    async with open_site(tmp_path, http={"rate_limit_per_min": 3}) as site:
        statuses = [(await site.client.get(site.url())).status for _ in range(4)]
        limited = await site.client.post(site.url(), data=ONE_CLICK)
        health = await site.client.get("/healthz")

        assert statuses == [200, 200, 200, 429]
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "Too many requests" in await limited.text()
        assert site.preferences()["offers"] == 1
        assert health.status == 200  # the proxy's and systemd's checks are never limited
        site.clock.advance(20)
        assert (await site.client.get(site.url())).status == 200


async def test_the_rate_limit_follows_x_forwarded_for_only_from_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    async with open_site(tmp_path, http={"rate_limit_per_min": 1,
                                                "trusted_proxies": ["127.0.0.0/8"]}) as site:
        one = {"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}
        other = {"X-Forwarded-For": "203.0.113.9, 198.51.100.2"}

        assert (await site.client.get(site.url(), headers=one)).status == 200
        assert (await site.client.get(site.url(), headers=one)).status == 429
        assert (await site.client.get(site.url(), headers=other)).status == 200

    async with open_site(tmp_path / "untrusted", http={
            "rate_limit_per_min": 1, "trusted_proxies": ["192.0.2.1"]}) as site:
        assert (await site.client.get(site.url(), headers=one)).status == 200
        assert (await site.client.get(site.url(), headers=other)).status == 429


async def test_healthz_answers_200_while_the_database_is_usable_and_503_when_not(
    sqlite_site: Site,
) -> None:
    site = sqlite_site
    assert (await site.client.get("/healthz")).status == 200
    site.rows("DROP TABLE customers")  # no foreign keys on this connection: it goes
    assert (await site.client.get("/healthz")).status == 503


def _style_hash(html: str) -> str:
    match = re.search(r"<style>(.*?)</style>", html, re.S)
    assert match
    return base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode()


async def test_every_answer_carries_the_security_headers(tmp_path: Path) -> None:
    async with open_site(tmp_path, http={"rate_limit_per_min": 10}) as site:
        page = await site.client.get(site.url())
        style_hash = _style_hash(await page.text())
        answers = {
            "page": page,
            "head": await site.client.head(site.url()),
            "one-click": await site.client.post(site.url("bob@example.com"), data=ONE_CLICK),
            "not found": await site.client.get(f"{site.prefix}/nope"),
            "unknown path": await site.client.get("/"),
            "wrong method": await site.client.put(site.url(), data=b"x"),
            "not a form": await site.client.post(site.url(), data=b"{}",
                                                 headers={"Content-Type": "application/json"}),
            "too large": await site.client.post(
                site.url(), data=b"x=" + b"y" * 9000,
                headers={"Content-Type": "application/x-www-form-urlencoded"}),
            "bad form": await site.client.post(site.url(), data={"action": "save"}),
            "health": await site.client.get("/healthz"),
        }
        for _ in range(10):  # what is left of this link's bucket, and one more
            answers["rate limited"] = await site.client.get(site.url())

        statuses = {name: r.status for name, r in answers.items()}
        assert statuses == {"page": 200, "head": 200, "one-click": 200, "not found": 404,
                            "unknown path": 404, "wrong method": 405, "not a form": 415,
                            "too large": 413, "bad form": 400, "health": 200,
                            "rate limited": 429}
        for name, response in answers.items():
            headers = response.headers
            csp = headers.get("Content-Security-Policy", "")
            assert csp.startswith("default-src 'none'; "), name
            assert f"style-src 'sha256-{style_hash}'" in csp, name
            assert "frame-ancestors 'none'" in csp, name
            assert headers.get("X-Frame-Options") == "DENY", name
            assert headers.get("Referrer-Policy") == "no-referrer", name
            assert headers.get("X-Content-Type-Options") == "nosniff", name
            assert headers.get("Cache-Control") == "no-store", name
            assert "Set-Cookie" not in headers, name
            assert headers.get("Server") == "mailer", name  # no versions to fingerprint


async def test_the_page_loads_nothing_from_elsewhere_and_runs_no_script(site: Site) -> None:
    html = await (await site.client.get(site.url())).text()
    error = await (await site.client.get(f"{site.prefix}/nope")).text()

    for page in (html, error):
        assert "<script" not in page and "<link" not in page and "<img" not in page
        assert "src=" not in page and "url(" not in page and "@import" not in page
        assert "http://" not in page and "https://" not in page
        assert " style=" not in page  # inline style attributes would break the CSP
    assert _style_hash(html) == _style_hash(error)


async def test_each_request_logs_one_line_with_customer_and_outcome_never_token_or_address(
    site: Site, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailer")
    token = site.token()
    await site.client.get(site.url())
    await site.client.post(site.url(), data=ONE_CLICK)
    await site.client.get(f"{site.prefix}/{token[:-3]}")

    lines = [r.getMessage() for r in caplog.records if r.name == "mailer.public.middlewares"]
    ann = site.ids["ann@example.com"]
    assert len(lines) == 3
    assert f"customer={ann} outcome=page shown" in lines[0]
    assert f"customer={ann} outcome=one-click off:announcements,offers" in lines[1]
    assert "-> 404" in lines[2] and "outcome=bad token" in lines[2]
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert token[-10:] not in everything and "ann@example.com" not in everything


async def test_one_clicks_arriving_together_each_answer_200_and_opt_out_their_own_customer(
    site: Site,
) -> None:
    ann, bob = site.url("ann@example.com"), site.url("bob@example.com")
    forged = f"{site.prefix}/{site.token()[:-2]}AA"
    responses = await asyncio.gather(*(site.client.post(url, data=ONE_CLICK)
                                       for url in (ann, bob, ann, forged, bob)))

    assert [r.status for r in responses] == [200, 200, 200, 404, 200]
    assert site.preferences("ann@example.com") == site.preferences("bob@example.com") == {
        "announcements": 0, "offers": 0}
    assert len(site.events("ann@example.com")) == len(site.events("bob@example.com")) == 2
    assert site.pending("ann@example.com") == site.pending("bob@example.com") == "skipped"


async def test_a_one_click_the_database_cannot_take_gets_a_plain_error_and_changes_nothing(
    sqlite_site: Site,
) -> None:
    site = sqlite_site
    site.rows("DROP TABLE campaign_recipients")
    before = site.snapshot()[:2]
    response = await site.client.post(site.url(), data=ONE_CLICK)

    assert response.status == 503  # the store said what failed: unavailable, try later
    assert "Nothing has been changed" in await response.text()
    assert "Traceback" not in await response.text()
    assert site.snapshot()[:2] == before
