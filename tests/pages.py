"""Waiting for a browser to leave a page, for the tests that drive Debian's chromium."""

from __future__ import annotations

from collections.abc import Callable

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement


def left(element: WebElement) -> Callable[[WebDriver], bool]:
    """A wait condition: `element`'s page has been replaced. Selenium's `staleness_of`, but
    also taking chromium's "Node with given id does not belong to the document" (which newer
    chromedrivers answer for an element of a page just replaced) as the page gone."""

    def gone(_driver: WebDriver) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return gone
