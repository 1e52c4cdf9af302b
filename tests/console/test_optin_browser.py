"""The consent forms in a real headless browser (Debian's chromium through Selenium), against
the real console, inbox worker, IMAP server and SQLite: a reviewer records an opt-in a request
asked for, records consent given in a shop (refused first without evidence), and imports a CSV
without consent columns (asked for the default first). Every page is photographed at 1280 and
390 px (test-artifacts/console/) and checked with axe-core, as in `test_browser`."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.console.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    Browser,
    browser,
    console,
    follow,
    world,
)
from tests.inbox.world import World
from tests.servers import sample_message

SUBJECT = "Unsubscribe special offers"


def press(driver: WebDriver, label: str) -> None:
    follow(driver, driver.find_element(By.XPATH, f"//main//button[contains(., '{label}')]"))


async def test_a_reviewer_records_an_opt_in_asked_for_by_email(
    browser: Browser, world: World  # noqa: F811
) -> None:
    world.deliver(sample_message(subject=SUBJECT, sender="Bob Roe <bob@example.com>",
                                 body="Please stop.\n"))
    assert (await world.process()).unsubscribed == 1
    world.deliver(sample_message(subject=SUBJECT, sender="Bob Roe <bob@example.com>",
                                 body="I changed my mind, please resubscribe me.\n"))
    assert (await world.process()).review == 1

    await browser.sign_in("reviewer")
    await browser.open("/review/1")
    assert "Record the opt-in this message asks for" in await browser.text()
    await browser.photograph("review-opt-in")

    def opt_in(d: WebDriver) -> None:
        d.find_element(By.ID, "optin-offers").click()
        press(d, "Record the opt-in")

    await browser(opt_in)
    assert "Request 1: opt-in recorded for bob@example.com." in await browser.text()
    assert world.query("SELECT category, source, actor FROM consent_events "
                       "WHERE source = 'email (reviewed)'") == [
        ("offers", "email (reviewed)", "reviewer")]
    assert world.preferences("bob@example.com") == (False, True)


async def test_a_reviewer_records_consent_given_in_a_shop_only_with_evidence(
    browser: Browser, world: World  # noqa: F811
) -> None:
    (ann_id,) = world.query("SELECT id FROM customers WHERE email = 'ann@example.com'")[0]
    await browser.sign_in("reviewer")
    await browser.open(f"/customers/{ann_id}")

    def turn_offers_off(d: WebDriver) -> None:
        d.find_element(By.ID, "consent-offers-off").click()
        press(d, "Record consent")

    await browser(turn_offers_off)
    assert "Recorded: special offers off" in await browser.text()
    await browser.photograph("customer-consent")

    def opt_in_without_evidence(d: WebDriver) -> None:
        d.find_element(By.ID, "consent-offers").click()
        press(d, "Record consent")

    await browser(opt_in_without_evidence)
    text = await browser.text()
    assert "There is a problem" in text and "Error: Say how the customer gave" in text
    await browser.photograph("customer-consent-error")

    def with_evidence(d: WebDriver) -> None:
        d.find_element(By.ID, "consent-offers").click()
        d.find_element(By.ID, "evidence").send_keys("Leeds shop, 6 May, signed form 88")
        press(d, "Record consent")

    await browser(with_evidence)
    assert "Recorded: special offers on" in await browser.text()
    assert world.preferences("ann@example.com") == (True, True)


async def test_an_upload_without_consent_columns_asks_which_consent_the_rows_gave(
    browser: Browser, world: World, tmp_path: Path  # noqa: F811
) -> None:
    people = tmp_path / "people.csv"
    people.write_text("name,email\nNew Person,new@example.com\n", encoding="utf-8")
    await browser.sign_in("reviewer")
    await browser.open("/customers/import")
    checked = await browser(lambda d: [r.is_selected() for r in d.find_elements(
        By.CSS_SELECTOR, "input[name=consent]")])
    assert checked == [False, False]  # no preselected answer

    def upload(d: WebDriver, consent: str = "") -> None:
        d.find_element(By.ID, "file").send_keys(str(people))
        if consent:
            d.find_element(By.ID, consent).click()
        press(d, "Import")

    await browser(upload)
    assert "agreed to: choose below whether they opted in" in await browser.text()
    await browser.photograph("customers-import-consent-error")
    assert world.query("SELECT count(*) FROM customers WHERE email = 'new@example.com'") == [
        (0,)]

    await browser(lambda d: upload(d, "consent-out"))
    assert "Imported people.csv: 1 created" in await browser.text()
    assert world.preferences("new@example.com") == (False, False)
