"""End to end in a real headless browser (Debian's chromium and chromedriver, through Selenium):
a real campaign goes out through the SMTP sink, the link is taken from the captured message and
opened; the customer unticks offers and saves, then unsubscribes from everything. The database
and the consent history are checked after each step, axe-core checks accessibility, and
screenshots (1280 and 390 pixels wide) are saved under test-artifacts/web/.

No skip: CI installs chromium and chromium-driver, and a missing browser fails this test.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from mailer.campaigns.sender import send_campaign
from mailer.public import serve
from mailer.store.db import open_db
from tests.campaigns.world import ROOT, UNSUBSCRIBE_ADDRESS, UNSUBSCRIBE_URL, World
from tests.pages import left
from tests.servers import SmtpSink, accepts, free_port
from tests.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts" / "web"
DESKTOP, PHONE = (1280, 1100), (390, 1500)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "the browser test needs Debian's chromium and chromium-driver "
        "(apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="mailer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink) -> World:
    return World.build(tmp_path, smtp_sink, http={"host": "127.0.0.1", "port": free_port()})


def screenshots(driver: WebDriver, name: str) -> None:
    """The whole page, 1280 and 390 CSS pixels wide, from the top."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        driver.set_window_size(width, height)
        page_height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": max(int(page_height), 600), "deviceScaleFactor": 1,
            "mobile": label == "phone"})
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{label}.png"))
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(*DESKTOP)


def serious_violations(driver: WebDriver) -> list[str]:
    axe = Axe(driver)
    axe.inject()
    results: dict[str, Any] = axe.run()
    return [f"{v['id']}: {v['help']}" for v in results["violations"]
            if v["impact"] in ("serious", "critical")]


def csp_errors(driver: WebDriver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


def state(db: Path, email: str) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        [(announcements, offers)] = conn.execute(
            "SELECT announcements, offers FROM customers WHERE email = ?", (email,)).fetchall()
        events = conn.execute(
            "SELECT e.category, e.old_value, e.new_value, e.source, e.reference FROM "
            "consent_events e JOIN customers c ON c.id = e.customer_id WHERE c.email = ? "
            "AND e.source != 'import' ORDER BY e.id", (email,)).fetchall()
    return {"announcements": announcements, "offers": offers}, events


def take_link(world: World) -> str:
    """The one-click link of the message Ann received (header and footer carry the same)."""
    [message] = [m for m in world.parsed() if "ann@example.com" in str(m["To"])]
    header = " ".join(str(message["List-Unsubscribe"]).split())
    link = header.split("<")[2].rstrip(">")
    assert link.startswith(UNSUBSCRIBE_URL + "/")
    html = message.get_body(("html",))
    assert html is not None and f'href="{link}"' in html.get_content()
    return link


def submit(driver: WebDriver, button: str) -> None:
    """Press a form's button and wait for the answer page to replace this one."""
    old_page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.XPATH, f"//button[normalize-space()='{button}']").click()
    WebDriverWait(driver, 30).until(left(old_page))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def browse(driver: WebDriver, url: str, db: Path, reference: str) -> None:
    """What a customer does, step by step, with the database checked after each step."""
    driver.get(url)
    assert driver.title == "Your email choices – Imperial Telecom Ltd"
    assert driver.find_element(By.TAG_NAME, "h1").text == "Your email choices"
    assert "Hello Ann Archer." in driver.page_source
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en-GB"
    # The inline style is applied, so the CSP's hash allows it.
    header = driver.find_element(By.CSS_SELECTOR, ".header")
    assert header.value_of_css_property("background-color") == "rgba(18, 60, 105, 1)"
    offers = driver.find_element(By.ID, "category-offers")
    announcements = driver.find_element(By.ID, "category-announcements")
    assert offers.is_selected() and announcements.is_selected()
    assert serious_violations(driver) == []
    screenshots(driver, "1-page")
    assert state(db, "ann@example.com") == ({"announcements": 1, "offers": 1}, [])

    # Keyboard only: untick offers with the space bar, then Save.
    offers.send_keys(Keys.SPACE)
    assert not offers.is_selected()
    submit(driver, "Save")

    banner = driver.find_element(By.CSS_SELECTOR, ".banner")
    assert "Saved" in banner.text and "Your email choices have been saved." in banner.text
    assert not driver.find_element(By.ID, "category-offers").is_selected()
    assert driver.find_element(By.ID, "category-announcements").is_selected()
    terms = [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".summary dt")]
    answers = [d.text for d in driver.find_elements(By.CSS_SELECTOR, ".summary dd")]
    assert dict(zip(terms, answers, strict=True))["Special offers"] == (
        "No, you do not get these emails")
    assert serious_violations(driver) == []
    screenshots(driver, "2-saved")
    assert state(db, "ann@example.com") == (
        {"announcements": 1, "offers": 0}, [("offers", 1, 0, "preference page", reference)])

    # The answer was a redirect: a refresh shows the page again and posts nothing.
    assert driver.current_url == url + "?saved=choices"
    driver.refresh()
    assert "Your email choices have been saved." in driver.find_element(
        By.CSS_SELECTOR, ".banner").text
    assert state(db, "ann@example.com")[1] == [
        ("offers", 1, 0, "preference page", reference)]

    submit(driver, "Unsubscribe from everything")
    assert "unsubscribed from everything" in driver.find_element(By.CSS_SELECTOR, ".banner").text
    assert not driver.find_element(By.ID, "category-announcements").is_selected()
    assert "We will still send you service messages about your account" in driver.find_element(
        By.ID, "service-messages").text
    assert driver.find_elements(By.CSS_SELECTOR, "button[value=everything]") == []
    assert serious_violations(driver) == []
    screenshots(driver, "3-everything")
    assert state(db, "ann@example.com") == (
        {"announcements": 0, "offers": 0},
        [("offers", 1, 0, "preference page", reference),
         ("announcements", 1, 0, "preference page", reference)])
    assert state(db, "bob@example.com")[0] == {"announcements": 1, "offers": 1}

    # A page left open too long (its nonce is stale): nothing is saved, and the page says so.
    after_everything = state(db, "ann@example.com")
    driver.execute_script("document.querySelectorAll('input[name=nonce]')"
                          ".forEach(function (i) { i.value = '1.AAAAAAAAAAAAAAAAAAAAAA'; })")
    driver.find_element(By.ID, "category-offers").click()
    submit(driver, "Save")
    summary = driver.find_element(By.CSS_SELECTOR, ".error-summary")
    assert "There is a problem" in summary.text and "nothing was saved" in summary.text
    assert driver.title.startswith("Error: ")
    assert serious_violations(driver) == []
    screenshots(driver, "4-stale-page")
    assert state(db, "ann@example.com") == after_everything

    driver.get(url[:-4])
    assert driver.find_element(By.TAG_NAME, "h1").text == "Page not found"
    other_way = driver.find_element(By.PARTIAL_LINK_TEXT, "unsubscribe@")
    assert other_way.get_attribute("href") == (
        f"mailto:{UNSUBSCRIBE_ADDRESS}?subject=Unsubscribe%20special%20offers")
    assert serious_violations(driver) == []
    screenshots(driver, "5-not-found")
    assert csp_errors(driver) == []
    # Developer comments stay in the repository: the served style has none.
    assert "/*" not in driver.find_element(By.TAG_NAME, "style").get_attribute("innerHTML")


async def test_a_customer_follows_the_link_in_a_real_campaign_and_changes_their_choices(
    world: World, browser: WebDriver,
) -> None:
    await world.import_csv("name,email,announcements,offers\n"
                           "Ann Archer,ann@example.com,yes,yes\n"
                           "Bob Baker,bob@example.com,yes,yes\n")
    campaign_id = await world.create_campaign(kind="offers")
    async with open_db(world.db) as conn:
        outcome = await send_campaign(conn, world.config(), campaign_id, stop=asyncio.Event())
    assert outcome.status == "sent" and len(world.sink.messages) == 2
    link = take_link(world)
    # The TLS proxy in front forwards the path as it is.
    local = link.replace(UNSUBSCRIBE_URL, f"http://127.0.0.1:{world.settings.http.port}"
                         "/unsubscribe")
    stop = asyncio.Event()
    server = asyncio.create_task(serve(world.settings, stop))
    try:
        port = world.settings.http.port
        await wait_for(lambda: accepts(port) or server.done(), what="the web listener")
        if server.done():
            server.result()  # raises why it never listened
        reference_of = await _reference(world, link)
        await asyncio.to_thread(browse, browser, local, world.db, reference_of)
    finally:
        stop.set()
        await server


async def _reference(world: World, link: str) -> str:
    """The consent reference a change through this link records (the link's own campaign,
    or its category for the first kind of token)."""
    from mailer.mail.tokens import read_link_token

    token = read_link_token(world.settings.campaigns.link_secrets, link.rpartition("/")[2])
    assert token is not None
    return token.reference


def look_at_inert_page(driver: WebDriver, url: str, title: str, says: str, name: str) -> None:
    """A link that changes nothing: its page says so plainly, passes axe, keeps the CSP."""
    driver.get(url)
    assert driver.title == f"{title} – Imperial Telecom Ltd"
    assert driver.find_element(By.TAG_NAME, "h1").text == title
    assert says in driver.find_element(By.TAG_NAME, "main").text
    assert driver.find_elements(By.TAG_NAME, "form") == []  # nothing to press
    assert serious_violations(driver) == []
    screenshots(driver, name)
    assert csp_errors(driver) == []


async def test_the_sample_link_of_a_preview_and_a_test_copys_link_show_their_pages(
    world: World, browser: WebDriver,
) -> None:
    from mailer.campaigns import service
    from mailer.mail.tokens import SAMPLE_TOKEN

    await world.import_csv("name,email,announcements,offers\n"
                           "Ann Archer,ann@example.com,yes,yes\n")
    campaign_id = await world.create_campaign(kind="offers")
    async with open_db(world.db) as conn:
        await service.send_test(conn, world.config(), campaign_id, "ann@example.com")
    test_link = take_link(world)
    before = state(world.db, "ann@example.com")
    local = f"http://127.0.0.1:{world.settings.http.port}/unsubscribe"
    stop = asyncio.Event()
    server = asyncio.create_task(serve(world.settings, stop))
    try:
        port = world.settings.http.port
        await wait_for(lambda: accepts(port) or server.done(), what="the web listener")
        if server.done():
            server.result()  # raises why it never listened
        await asyncio.to_thread(
            look_at_inert_page, browser, f"{local}/{SAMPLE_TOKEN}", "This is a sample link",
            "This is a sample link in a preview; nothing was changed.", "6-sample-link")
        await asyncio.to_thread(
            look_at_inert_page, browser, test_link.replace(UNSUBSCRIBE_URL, local),
            "This is a test copy",
            "This link came in a test copy of a campaign; nothing was changed.", "7-test-copy")
    finally:
        stop.set()
        await server
    assert state(world.db, "ann@example.com") == before
