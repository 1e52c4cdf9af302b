"""The customer's data rights in the console, in a real headless browser against the real
console server, Dovecot and SQLite: an administrator downloads a customer's data and erases
them after a confirmation page that asks why; a reviewer is offered neither. The pages are
photographed at 1280 and 390 px (test-artifacts/console/) and checked with axe-core."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from mailer.consent import rights
from mailer.console.app import make_app
from mailer.store.db import open_db
from tests.console.test_browser import Browser, chromium, follow
from tests.console.world import FakeClock, add_users
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink, sample_message


@pytest.fixture
async def world(tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
                monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("MAILER_SUPPRESSION_KEY", "a browser test key, long enough")
    world = await make_world(tmp_path, imap_server, smtp_sink)
    await add_users(world.settings)
    world.deliver(sample_message(subject="Unsubscribe special offers",
                                 sender="Ann Lee <ann@example.com>",
                                 to="unsubscribe@imperial.test", body="Stop, please.\n"))
    assert (await world.process()).unsubscribed == 1
    return world


@pytest.fixture
async def browser(world: World, tmp_path: Path) -> AsyncIterator[Browser]:
    runner = web.AppRunner(make_app(world.settings, clock=FakeClock()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with chromium(tmp_path / "chromium-profile") as driver:
            yield Browser(driver, base)
    finally:
        await runner.cleanup()


async def download(browser: Browser, path: str) -> tuple[int, str, str]:
    """GET `path` with the browser's session cookie (a download leaves the page as it is)."""
    cookies = await browser(lambda d: {c["name"]: c["value"] for c in d.get_cookies()})
    async with aiohttp.ClientSession(cookies=cookies) as session, \
            session.get(browser.base + path, allow_redirects=False) as response:
        return (response.status, response.headers.get("Content-Disposition", ""),
                await response.text())


async def test_an_administrator_downloads_a_customers_data_then_erases_them(
    browser: Browser, world: World
) -> None:
    ((ann_id,),) = world.query("SELECT id FROM customers WHERE email = 'ann@example.com'")
    await browser.sign_in("admin")
    await browser.open(f"/customers/{ann_id}")
    await browser.photograph("customer-admin")

    status, disposition, body = await download(browser, f"/customers/{ann_id}/export")
    assert status == 200
    assert disposition == f'attachment; filename="customer-{ann_id}.json"'
    document = json.loads(body)
    assert document["record"]["company"] == "Lee Plumbing Ltd"
    assert [m["folder"] for m in document["request_emails"]] == ["Processed"]
    assert "bob@example.com" not in body

    await browser(lambda d: follow(d, d.find_element(By.LINK_TEXT, "Erase")))
    assert "Are you sure you want to erase Ann Lee?" in await browser.text()
    await browser.photograph("customer-erase")
    await browser(lambda d: follow(d, d.find_element(
        By.XPATH, "//button[contains(., 'Yes, erase')]")))
    assert "Enter why this customer is erased" in await browser.text()
    assert world.query("SELECT count(*) FROM erasures") == [(0,)]
    await browser.photograph("customer-erase-error")

    def confirm(d: WebDriver) -> None:
        d.find_element(By.ID, "reason").send_keys("asked by phone, identity checked")
        follow(d, d.find_element(By.XPATH, "//button[contains(., 'Yes, erase')]"))

    await browser(confirm)
    assert f"Customer {ann_id} is erased." in await browser.text()
    assert world.query("SELECT reason, actor FROM erasures") == [
        ("asked by phone, identity checked", "admin")]
    assert world.query("SELECT count(*) FROM customers WHERE email = 'ann@example.com'") == [
        (0,)]
    assert world.folder_subjects("Processed") == []
    await browser.open(f"/customers/{ann_id}")
    assert f"Customer {ann_id} was erased on" in await browser(lambda d: d.page_source)


async def test_a_reviewer_is_offered_neither_download_nor_erase(
    browser: Browser, world: World
) -> None:
    ((ann_id,),) = world.query("SELECT id FROM customers WHERE email = 'ann@example.com'")
    await browser.sign_in("reviewer")
    await browser.open(f"/customers/{ann_id}")
    page = await browser.text()
    assert "Ann Lee" in page
    assert "Download data" not in page and "Erase" not in page
    assert (await download(browser, f"/customers/{ann_id}/export"))[0] == 403
    assert (await download(browser, f"/customers/{ann_id}/erase"))[0] == 403


async def test_an_erased_address_uploaded_again_is_created_opted_out_and_reported(
    browser: Browser, world: World, tmp_path: Path
) -> None:
    async with open_db(world.settings.database.path) as conn:
        await rights.erase(conn, "ann@example.com", key=world.settings.privacy.key,
                           reason="asked", actor="test")
    upload = tmp_path / "again.csv"
    upload.write_text("name,email,announcements,offers\nAnn Lee,ann@example.com,yes,yes\n",
                      encoding="utf-8")
    await browser.sign_in("reviewer")
    await browser.open("/customers/import")

    def send(d: WebDriver) -> None:
        d.find_element(By.ID, "file").send_keys(str(upload))
        follow(d, d.find_element(By.XPATH, "//button[contains(., 'Import')]"))

    await browser(send)
    assert ("Imported again.csv: 1 created, 0 updated, 0 unchanged, 0 opt-outs kept, "
            "1 suppressed (erased before: opted out of everything)") in await browser.text()
    assert world.preferences("ann@example.com") == (False, False)
