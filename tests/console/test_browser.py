"""End to end in a real headless browser (Debian's chromium and chromedriver, through
Selenium): a marketing user creates and schedules a campaign and watches it go to the SMTP
sink, sent by the real scheduler in this test's event loop; a reviewer resolves a request the
real inbox worker put in review. Every page is photographed at desktop and phone widths
(test-artifacts/console/) and checked with axe-core: no serious or critical violations.

Selenium blocks, and the console and the scheduler run in this test's event loop, so every
browser call goes through `asyncio.to_thread`. A missing browser fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from mailer.campaigns import service
from mailer.campaigns.messages import send_config
from mailer.campaigns.scheduler import CampaignScheduler
from mailer.campaigns.sender import send_campaign
from mailer.console.app import make_app
from mailer.doctor.report import Report, failed, passed, warn
from mailer.doctor.watch import ReputationWatch, doctor_run
from mailer.store import doctor as doctor_store
from mailer.store.db import open_db
from tests.console.test_cli import mailer
from tests.console.test_review import hostile_request
from tests.console.world import PASSWORD, FakeClock, add_users
from tests.doctor.test_reputation import complaint
from tests.helpers import ROOT
from tests.inbox.world import World, make_world
from tests.pages import left
from tests.servers import ImapTestServer, SmtpSink
from tests.waiting import wait_for

T = TypeVar("T")

ARTIFACTS = ROOT / "test-artifacts" / "console"
WIDTHS = {"desktop": 1280, "phone": 390}
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def follow(driver: WebDriver, element: WebElement) -> None:
    """Click something that loads a new page, and wait until the new page is there."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 60).until(left(old))
    WebDriverWait(driver, 60).until(
        expected_conditions.presence_of_element_located((By.TAG_NAME, "main")))


class Browser:
    """The blocking driver, called from the event loop through a thread."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver = driver
        self.base = base
        self.checked: list[str] = []

    async def __call__(self, action: Callable[[WebDriver], T]) -> T:
        return await asyncio.to_thread(action, self.driver)

    async def open(self, path: str) -> None:
        await self(lambda d: d.get(self.base + path))

    async def text(self) -> str:
        return await self(lambda d: d.find_element(By.TAG_NAME, "main").text)

    async def sign_in(self, name: str) -> None:
        def act(d: WebDriver) -> None:
            d.delete_all_cookies()
            d.get(self.base + "/login")
            d.find_element(By.ID, "name").send_keys(name)
            d.find_element(By.ID, "password").send_keys(PASSWORD)
            follow(d, d.find_element(By.CSS_SELECTOR, "main button[type=submit]"))
        await self(act)

    async def photograph(self, name: str, *, console: bool = True) -> None:
        """Screenshots at both widths, and an axe check of the page as it is at each (tables
        become cards at phone width). `console=False` for the campaign's HTML as a mail
        program shows it: not a console page, and its sandbox policy runs no script, axe's
        included."""
        await self(lambda d: _photograph(d, name))
        if console:
            for width in WIDTHS.values():
                await self(lambda d, w=width: d.set_window_size(w, 900))
                violations = await self(_serious_violations)
                assert violations == [], (name, width, violations)
            await self(desktop_width)
        self.checked.append(name)


def _photograph(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, width in WIDTHS.items():
        driver.set_window_size(width, 900)
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(width, min(max(height + 140, 600), 5000))
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{label}.png"))
    driver.set_window_size(1280, 900)


def phone_width(driver: WebDriver) -> None:
    driver.set_window_size(WIDTHS["phone"], 900)


def desktop_width(driver: WebDriver) -> None:
    driver.set_window_size(WIDTHS["desktop"], 900)


def follow_link(driver: WebDriver, text: str) -> None:
    """Follow a link to a page that is not the console's (no `main` to wait for)."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.LINK_TEXT, text).click()
    WebDriverWait(driver, 60).until(left(old))
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def first_tab_stop(driver: WebDriver) -> tuple[str, str]:
    """What one press of Tab focuses on a fresh page: its text and background colour."""
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    element = driver.switch_to.active_element
    return element.text, element.value_of_css_property("background-color")


def overflowing(driver: WebDriver) -> list[str]:
    """The scrolling boxes (and the page) whose content is wider than they are."""
    return list(driver.execute_script(
        "const out = [];"
        "if (document.documentElement.scrollWidth > document.documentElement.clientWidth)"
        "  out.push('page');"
        "document.querySelectorAll('.scroll').forEach(function (e) {"
        "  if (e.scrollWidth > e.clientWidth) out.push(e.innerHTML.slice(0, 60)); });"
        "return out;"))


def inside_window(driver: WebDriver, element: WebElement) -> bool:
    return bool(driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.width > 0 && r.left >= 0 && r.right <= document.documentElement.clientWidth;",
        element))


def ends_in_view(driver: WebDriver, chart: WebElement) -> bool:
    """The chart is wider than its box, and the box shows its right end (today)."""
    return bool(driver.execute_script(
        "const c = arguments[0].getBoundingClientRect();"
        "const box = arguments[0].parentElement.getBoundingClientRect();"
        "return c.width > box.width && Math.abs(c.right - box.right) < 2;", chart))


def _serious_violations(driver: WebDriver) -> list[tuple[str, str]]:
    axe = Axe(driver)
    axe.inject()
    results: dict[str, Any] = axe.run()
    return [(v["id"], v["help"]) for v in results["violations"]
            if v.get("impact") in ("serious", "critical")]


@pytest.fixture
async def world(tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> World:
    world = await make_world(
        tmp_path, imap_server, smtp_sink,
        campaigns={"unsubscribe_url": "https://imperial.test/unsubscribe",
                   "secret": "browser-test-secret", "batch_size": 5})
    await add_users(world.settings)
    return world


@pytest.fixture
async def console(world: World) -> AsyncIterator[str]:
    # The console's clock runs ten minutes behind the scheduler's: a send time a few minutes
    # ahead on the form is in the future for the form and already due for the scheduler, so
    # the test watches a scheduled campaign go out without waiting for the wall clock.
    clock = FakeClock()
    clock.start = datetime.now(UTC) - timedelta(minutes=10)
    runner = web.AppRunner(make_app(world.settings, clock=clock))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(console: str, tmp_path: Path) -> AsyncIterator[Browser]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield Browser(driver, console)


async def test_marketing_schedules_a_campaign_and_watches_it_reach_every_opted_in_customer(
    browser: Browser, world: World, smtp_sink: SmtpSink
) -> None:
    await browser.open("/")
    await browser.photograph("login")
    # The keyboard's first stop is the skip link, shown with the yellow focus colour.
    focused = await browser(first_tab_stop)
    assert focused == ("Skip to main content", "rgba(255, 221, 0, 1)")
    await browser.sign_in("marketing")
    assert "Overview" in await browser.text()
    await browser.photograph("overview")

    await browser.open("/campaigns/new")
    await browser.photograph("campaign-new")
    await browser(lambda d: follow(d, d.find_element(By.CSS_SELECTOR, "button[value=save]")))
    assert "There is a problem" in await browser.text()
    await browser.photograph("campaign-new-errors")

    def fill(d: WebDriver) -> None:
        d.find_element(By.CSS_SELECTOR, "input[name=kind][value=offers]").click()
        Select(d.find_element(By.ID, "template")).select_by_value("welcome-offer")
        subject = d.find_element(By.ID, "subject")
        subject.clear()
        subject.send_keys("A winter offer for {{ customer.name }}")
        d.find_element(By.ID, "when-schedule").click()
        local = datetime.now(ZoneInfo("Europe/London")) - timedelta(minutes=5)
        # datetime-local typing depends on the browser's locale; set the value it submits.
        d.execute_script("arguments[0].value = arguments[1]", d.find_element(By.ID, "at"),
                         local.strftime("%Y-%m-%dT%H:%M"))
        follow(d, d.find_element(By.CSS_SELECTOR, "button[value=check]"))

    await browser(fill)
    page = await browser.text()
    assert "would go to 10 customers opted in to offers now" in page
    await browser(lambda d: follow(d, d.find_element(By.CSS_SELECTOR, "button[value=save]")))
    page = await browser.text()
    assert "saved as scheduled" in page
    campaign_path = await browser(lambda d: d.current_url.removeprefix(browser.base))

    stop = asyncio.Event()
    scheduler = asyncio.create_task(
        CampaignScheduler.from_settings(world.settings, poll_interval_s=0.2).run(stop))
    try:
        async def sent() -> bool:
            await browser.open(campaign_path.split("?")[0])
            state = await browser(
                lambda d: d.find_element(By.CSS_SELECTOR, "dd .tag").text.strip().lower())
            return state == "sent"
        await wait_for(sent, what="the campaign page to say sent", interval_s=0.5)
    finally:
        stop.set()
        await scheduler
    page = await browser.text()
    assert "Sent\n10" in page or "Sent 10" in page
    assert sorted(a for m in smtp_sink.messages for a in m.rcpt_tos) == sorted(
        str(r[0]) for r in world.query("SELECT email FROM customers WHERE offers = 1"))
    await browser.open(campaign_path.split("?")[0] + "?email=ann%40example.com")
    assert "Dear Ann Lee" in await browser.text()
    await browser.photograph("campaign-sent")
    # The HTML version is a page of its own, as tall as the message: the footer is there.
    await browser(lambda d: follow_link(d, "Open the HTML version for ann@example.com"))
    body = await browser(lambda d: d.find_element(By.TAG_NAME, "body").text)
    assert "Ann Lee" in body and "unsubscribe" in body.lower()
    await browser.photograph("campaign-preview-html", console=False)

    await browser.open("/campaigns")
    page = await browser.text()
    # As a customer reads it, marked as a sample; not the template source.
    assert "A winter offer for Zoë Ó Briain-Müller" in page and "{{" not in page
    assert "sample" in await browser(
        lambda d: d.find_element(By.CSS_SELECTOR, "td .tag.sample").text.lower())
    await browser.photograph("campaigns")
    await browser(phone_width)
    # Below 600 px each row is a card: nothing to scroll sideways, the state in view.
    assert await browser(overflowing) == []
    state = await browser(lambda d: d.find_element(By.CSS_SELECTOR, "td[data-label=State]"))
    assert await browser(lambda d: inside_window(d, state))
    await browser(desktop_width)

    await browser.open("/")
    await browser.photograph("overview-after-send")
    await browser(phone_width)
    # The 90-day charts open on their last day, today, at phone width.
    for chart in await browser(lambda d: d.find_elements(By.CSS_SELECTOR, ".to-end svg")):
        assert await browser(lambda d, c=chart: ends_in_view(d, c))
    await browser(desktop_width)


async def test_marketing_saves_a_draft_then_schedules_it_from_its_page(
    browser: Browser, world: World
) -> None:
    await browser.sign_in("marketing")
    await browser.open("/campaigns/new")

    def save_draft(d: WebDriver) -> None:
        d.find_element(By.CSS_SELECTOR, "input[name=kind][value=announcements]").click()
        Select(d.find_element(By.ID, "template")).select_by_value("welcome-offer")
        d.find_element(By.ID, "subject").send_keys("Network upgrade in your area")
        follow(d, d.find_element(By.CSS_SELECTOR, "button[value=save]"))

    await browser(save_draft)
    assert "saved as draft" in await browser.text()
    await browser.photograph("campaign-draft")

    def schedule(at: str) -> Callable[[WebDriver], None]:
        def act(d: WebDriver) -> None:
            d.execute_script("arguments[0].value = arguments[1]", d.find_element(By.ID, "at"),
                             at)
            follow(d, d.find_element(By.XPATH, "//button[text()='Schedule campaign']"))
        return act

    # Cancel asks first, on a page of its own; "No, keep it" changes nothing.
    await browser(lambda d: follow(d, d.find_element(By.LINK_TEXT, "Cancel campaign")))
    assert "You cannot undo this." in await browser.text()
    await browser.photograph("campaign-cancel")
    await browser(lambda d: follow(d, d.find_element(By.LINK_TEXT, "No, keep it")))
    assert world.query("SELECT status FROM campaigns") == [("draft",)]

    await browser(schedule("2001-01-01T09:00"))
    page = await browser.text()
    assert "There is a problem" in page and "The send time must be in the future" in page
    await browser.photograph("campaign-schedule-error")
    later = datetime.now(ZoneInfo("Europe/London")) + timedelta(days=3)
    await browser(schedule(later.strftime("%Y-%m-%dT%H:%M")))
    page = await browser.text()
    assert f"is scheduled for {later:%d %b %Y %H:%M}" in page
    assert world.query("SELECT status FROM campaigns") == [("scheduled",)]
    await browser.photograph("campaign-scheduled")


async def test_a_reviewer_resolves_a_request_the_inbox_worker_put_in_review(
    browser: Browser, world: World
) -> None:
    world.deliver(hostile_request())
    assert (await world.process()).review == 1

    await browser.sign_in("reviewer")
    await browser.open("/review")
    await browser.photograph("review-queue")
    await browser(lambda d: follow(d, d.find_element(By.LINK_TEXT,
                                                     "Unsubscribe special offers")))
    page = await browser.text()
    assert "Please stop <script>alert('text')</script> the offers." in page  # as text
    alerts = await browser(lambda d: len(d.find_elements(By.CSS_SELECTOR, "main script")))
    assert alerts == 0
    await browser.photograph("review-item")

    def resolve(d: WebDriver) -> None:
        for box in d.find_elements(By.CSS_SELECTOR, "input[name=customer]"):
            box.click()
        follow(d, d.find_element(By.XPATH, "//button[contains(., 'Unsubscribe and send')]"))

    await browser(resolve)
    assert "Request 1 resolved: 2 customers unsubscribed." in await browser.text()
    assert world.opted_out() == {"john.smith@example.com", "jsmith@example.org"}
    assert {tuple(r) for r in world.query(
        "SELECT source, actor FROM consent_events WHERE new_value = 0")} == {
        ("email", "reviewer")}

    await browser.open("/customers?q=john+smith")
    await browser.photograph("customers-search")
    await browser(lambda d: follow(d, d.find_element(By.LINK_TEXT, "John Smith")))
    assert "reviewer" in await browser.text()
    await browser.photograph("customer")
    await browser.open("/customers/import")
    await browser.photograph("customers-import")
    await browser.open("/campaigns")
    assert "You cannot use this page" in await browser.text()
    await browser.photograph("refused")


async def test_an_administrator_reads_who_did_what_in_the_audit_log_cli_included(
    browser: Browser, world: World
) -> None:
    added = await asyncio.to_thread(
        mailer, world.settings_path, "users", "add", "ops", "--role", "reviewer",
        stdin="a long and unguessable pass phrase 2026\n")
    assert added.returncode == 0, added.stderr
    await browser.sign_in("marketing")
    await browser.open("/campaigns/new")

    def save_draft(d: WebDriver) -> None:
        d.find_element(By.CSS_SELECTOR, "input[name=kind][value=offers]").click()
        Select(d.find_element(By.ID, "template")).select_by_value("welcome-offer")
        d.find_element(By.ID, "subject").send_keys("Hello {{ customer.name }}")
        follow(d, d.find_element(By.CSS_SELECTOR, "button[value=save]"))

    await browser(save_draft)
    await browser(lambda d: follow(d, d.find_element(By.LINK_TEXT, "Cancel campaign")))
    await browser(lambda d: follow(d, d.find_element(By.XPATH,
                                                     "//button[starts-with(., 'Yes, cancel')]")))
    assert "Campaign 1 is now cancelled" in await browser.text()
    await browser.open("/audit")
    assert "You cannot use this page" in await browser.text()  # administrators only

    await browser.sign_in("admin")
    await browser(lambda d: follow(d, d.find_element(By.LINK_TEXT, "Audit log")))
    rows = await browser(lambda d: [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in d.find_elements(By.CSS_SELECTOR, "main tbody tr")])
    assert [r[1:] for r in rows if r[2] != "signed in"] == [
        ["marketing", "cancel campaign", "campaign 1"],
        ["marketing", "created campaign (draft)", "campaign 1"],
        ["cli", "added user (reviewer)", "ops"],
    ]
    await browser.photograph("audit")
    # Every page so far fetched its icon and style within the policy: nothing refused or
    # missing in the browser's console (a 404 told by its status: a port may hold "404").
    complaints = await browser(lambda d: [e["message"] for e in d.get_log("browser")
                                          if "Content Security Policy" in e["message"]
                                          or "status of 404" in e["message"]])
    assert complaints == []
    await browser.open("/favicon.ico")
    icon = await browser(lambda d: d.page_source)
    assert "<svg" in icon


async def test_the_overview_shows_the_complaint_rates_the_pause_and_the_last_doctor_result(
    browser: Browser, world: World, smtp_sink: SmtpSink
) -> None:
    async with open_db(world.db_path) as conn:
        sent = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="An offer")
        await send_campaign(conn, send_config(world.settings), sent.id, stop=asyncio.Event())
        later = await service.create_campaign(
            conn, world.settings.templates.dir, kind="offers", template="welcome-offer",
            subject="A later offer")
        await service.schedule(conn, later.id, "2099-01-01T09:00:00")
    world.deliver(complaint(smtp_sink.messages[0], 1))
    assert (await world.process()).complaints == 1
    watch = ReputationWatch(world.db_path, min_sample=1)
    assert (await watch.run_once()).paused == [later.id]
    report = Report.of([
        passed("dns", "SPF", "v=spf1 ip4:127.0.0.1 ~all"),
        failed("dns", "DMARC", "_dmarc.imperial.test: no DMARC record",
               'publish _dmarc.imperial.test. IN TXT "v=DMARC1; p=none; '
               'rua=mailto:dmarc-reports@imperial.test"'),
        warn("messages", "List-Unsubscribe", "one-click only", "set [unsubscribe] address")])
    async with open_db(world.db_path) as conn:
        await doctor_store.record_run(conn, doctor_run(report, "2026-12-06T08:00:00+00:00"))

    await browser.sign_in("marketing")
    text = await browser.text()
    await browser(phone_width)
    overflow = await browser(overflowing)
    await browser(desktop_width)
    await browser.photograph("overview-reputation")

    rates = await browser(lambda d: [
        [cell.text for cell in tr.find_elements(By.CSS_SELECTOR, "th, td")]
        for tr in d.find_elements(By.CSS_SELECTOR, "#complaint-rates tbody tr")])
    assert rates[0] == ["Last day", "FAIL",
                        "1 complaint / 10 sent = 10.00% (providers refuse mail at 0.30%)"]
    assert [row[0] for row in rates] == ["Last day", "Last 7 days", "Last 30 days"]
    assert "Last doctor result: 1 pass, 1 warn, 1 fail at 6 Dec 2026 08:00 UTC" in text
    assert "DMARC: _dmarc.imperial.test: no DMARC record" in text
    assert ("paused: sender-wide complaint rate 10.00% over the last day (1 complaint / "
            "10 sent): providers refuse mail at 0.30%") in text
    assert "page" not in overflow  # the charts scroll in their boxes; the page does not
