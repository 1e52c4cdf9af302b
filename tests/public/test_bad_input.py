"""A body the unsubscribe link cannot read, POSTed with a valid token, is a 400 page that
changes nothing and logs one request line (outcome "unreadable form"), never a traceback.
Through the real app on loopback with aiohttp's test client and a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.public import make_app
from tests.public.world import FakeClock, Site, seed, web_settings


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    # No rate limit: these requests are about bodies, and the property test sends many.
    settings = web_settings(tmp_path, http={"rate_limit_per_min": 0})
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


_FIELD_NAMES = st.sampled_from(["List-Unsubscribe", "action", "nonce", "categories", "x", ""])
_FIELD_VALUES = st.sampled_from(["One-Click", "save", "everything", "offers", "announcements",
                                 ""]) | st.text(max_size=30)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=st.lists(st.tuples(_FIELD_NAMES, _FIELD_VALUES), max_size=5),
       multipart=st.booleans())
async def test_any_form_posted_to_a_valid_link_is_answered_without_a_server_error(
    site: Site, fields: list[tuple[str, str]], multipart: bool
) -> None:
    data = aiohttp.FormData(fields, default_to_multipart=multipart)
    response = await site.client.post(site.url(), data=data)
    assert response.status in (200, 400), await response.text()
