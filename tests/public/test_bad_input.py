"""A body the unsubscribe link cannot read, POSTed with a valid token, is a 400 page that
changes nothing and logs one request line (outcome "unreadable form"), never a traceback.
Through the real app on loopback with aiohttp's test client and a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.public import make_app
from tests.public.world import FakeClock, Site, seed, web_settings


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    settings = web_settings(tmp_path)
    ids, campaign_id = await seed(settings)
    clock = FakeClock()
    async with TestClient(TestServer(make_app(settings, clock=clock))) as client:
        yield Site(client, settings, clock, ids, campaign_id)


def _part(headers: str, value: str = "One-Click") -> bytes:
    return f"--b\r\n{headers}\r\n\r\n{value}\r\n".encode()


ONE_CLICK_NAME = 'Content-Disposition: form-data; name="List-Unsubscribe"'


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click&x=\xff"),
    ("application/x-www-form-urlencoded; charset=x-nope", b"List-Unsubscribe=One-Click"),
    ("multipart/form-data", _part(ONE_CLICK_NAME) + b"--b--\r\n"),
    ("multipart/form-data; boundary=b", _part(ONE_CLICK_NAME)[:-6]),
    ("multipart/form-data; boundary=b",
     _part(ONE_CLICK_NAME) + _part("Content-Disposition: form-data") + b"--b--\r\n"),
    ("multipart/form-data; boundary=b",
     _part(ONE_CLICK_NAME + "\r\nContent-Type: text/plain; charset=x-nope") + b"--b--\r\n"),
], ids=["raw-ff", "unknown-charset", "no-boundary", "truncated", "part-without-name",
        "part-with-unknown-charset"])
async def test_a_body_that_cannot_be_read_gets_400_changes_nothing_and_logs_no_traceback(
    site: Site, caplog: pytest.LogCaptureFixture, content_type: str, body: bytes
) -> None:
    caplog.set_level(logging.INFO, logger="mailer")
    before = site.snapshot()
    response = await site.client.post(site.url(), data=body,
                                      headers={"Content-Type": content_type})

    assert response.status == 400
    assert response.content_type == "text/html"
    assert site.snapshot() == before
    assert [r for r in caplog.records if r.exc_info] == []
    assert any("-> 400" in r.getMessage() and "outcome=unreadable form" in r.getMessage()
               for r in caplog.records)
