"""Bad input to the console is a 4xx with one line, changes nothing and logs no traceback:
malformed or non-UTF-8 forms, ids and page numbers past SQLite's 64-bit integers, send times
at the end of year 9999, an upload whose file name holds a line break. Through the real app
on loopback with aiohttp's test client and a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.campaigns.world import World
from tests.console.world import add_users, csrf, login, query
from tests.servers import SmtpSink

Client = TestClient[object, object]
HUGE = "9" * 20  # past 2**63 - 1


@pytest.fixture
async def world(tmp_path: Path, smtp_sink: SmtpSink) -> World:
    # A console east of UTC: the end of year 9999 in UTC is already year 10000 there.
    world = World.build(tmp_path, smtp_sink, console={"timezone": "Asia/Kolkata"})
    await world.import_csv("name,email,company,announcements,offers\n"
                           "Ann Lee,ann@example.com,Lee Plumbing Ltd,yes,yes\n")
    await add_users(world.settings)
    return world



@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None] | None:
    caplog.set_level(logging.INFO)
    yield None
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == []


def one_line_error(page: str) -> str:
    """The message of the console's error page (its only <p>)."""
    start = page.index("<p>") + 3
    return page[start:page.index("</p>", start)].strip()


@pytest.mark.parametrize(("content_type", "body"), [
    ("multipart/form-data", b"--x\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nA"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nA\r\n"),
    ("application/x-www-form-urlencoded", b"name=\xff&password=\xfe"),
    ("application/x-www-form-urlencoded; charset=x-nope", b"name=a"),
])
async def test_a_sign_in_form_that_cannot_be_read_is_a_400_with_one_line(
    client: Client, world: World, content_type: str, body: bytes
) -> None:
    response = await client.post("/login", data=body, headers={"Content-Type": content_type},
                                 allow_redirects=False)
    assert response.status == 400
    assert one_line_error(await response.text()).startswith("The form could not be read: ")
    assert query(world.db, "SELECT count(*) FROM console_sessions") == [(0,)]


async def test_a_signed_in_form_that_cannot_be_read_is_a_400_and_changes_nothing(
    client: Client, world: World
) -> None:
    assert await login(client, "marketing") == 303
    body = b'--x\r\nContent-Disposition: form-data; name="csrf"\r\n\r\ntruncat'
    response = await client.post("/campaigns/new", data=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status == 400
    assert "malformed multipart/form-data body" in one_line_error(await response.text())
    assert query(world.db, "SELECT count(*) FROM campaigns") == [(0,)]


@pytest.mark.parametrize("path", [f"/customers/{HUGE}", f"/campaigns/{HUGE}",
                                  f"/campaigns/{HUGE}/preview.html", f"/review/{HUGE}"])
async def test_an_id_past_sqlites_integers_is_a_404(client: Client, path: str) -> None:
    assert await login(client, "admin") == 303
    response = await client.get(path, allow_redirects=False)
    assert response.status == 404


async def test_an_id_past_sqlites_integers_in_a_form_action_is_a_404_and_changes_nothing(
    client: Client, world: World
) -> None:
    assert await login(client, "admin") == 303
    token = await csrf(client)
    response = await client.post(f"/campaigns/{HUGE}/pause", data={"csrf": token},
                                 allow_redirects=False)
    assert response.status == 404
    assert query(world.db, "SELECT count(*) FROM console_audit WHERE action LIKE 'pause%'") \
        == [(0,)]


@pytest.mark.parametrize("after", [HUGE, "-1", "ten", "1e3"])
async def test_a_customer_page_number_that_is_not_an_id_is_a_400_with_one_line(
    client: Client, after: str
) -> None:
    assert await login(client, "reviewer") == 303
    response = await client.get("/customers", params={"q": "Lee", "after": after})
    assert response.status == 400
    assert one_line_error(await response.text()) == (
        "The page to show (&#39;after&#39;) must be a customer id.")


async def test_an_audit_log_page_number_that_is_not_an_id_is_a_400_with_one_line(
    client: Client,
) -> None:
    assert await login(client, "admin") == 303
    response = await client.get("/audit", params={"before": HUGE})
    assert response.status == 400
    assert one_line_error(await response.text()) == (
        "The page to show (&#39;before&#39;) must be an entry&#39;s id.")


async def test_a_send_time_past_year_9999_in_its_zone_is_refused_next_to_the_field(
    client: Client, world: World
) -> None:
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    form = {"csrf": token, "kind": "offers", "template": "welcome-offer", "subject": "Hello",
            "when": "draft", "zone": "Europe/London", "action": "save"}
    assert (await client.post("/campaigns/new", data=form, allow_redirects=False)).status == 303
    response = await client.post("/campaigns/1/schedule", data={
        "csrf": token, "at": "9999-12-31T23:59", "zone": "Etc/GMT+12"})
    assert response.status == 400
    assert "Enter a time before the year 9999 ends in Etc/GMT+12" in await response.text()
    created = await client.post("/campaigns/new", data={
        **form, "when": "schedule", "at": "9999-12-31T23:59", "zone": "Etc/GMT+12"})
    assert created.status == 400
    assert "Enter a time before the year 9999 ends in Etc/GMT+12" in await created.text()
    assert query(world.db, "SELECT status, scheduled_at FROM campaigns") == [("draft", None)]


async def test_a_campaign_at_the_end_of_year_9999_utc_is_listed_east_of_utc(
    client: Client, world: World
) -> None:
    await world.create_campaign(at="9999-12-31T23:59")
    assert await login(client, "marketing") == 303
    for path in ("/campaigns", "/campaigns/1", "/"):
        response = await client.get(path)
        assert response.status == 200, path
    assert "31 Dec 9999 23:59 UTC" in await (await client.get("/campaigns")).text()


async def test_an_upload_whose_file_name_holds_a_line_break_is_refused_and_imports_nothing(
    client: Client, world: World
) -> None:
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/customers/import")
    # The name as RFC 5987 encodes it (a client cannot put a raw CRLF in a header line).
    body = (f'--x\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n'
            "--x\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename*=utf-8''people%0D%0ALocation%3A%20x.csv\r\n"
            "Content-Type: text/csv\r\n\r\n"
            "name,email,company,announcements,offers\r\n"
            "New Person,new@example.com,,yes,yes\r\n\r\n--x--\r\n").encode()
    response = await client.post("/customers/import", data=body, allow_redirects=False,
                                 headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status == 400
    assert "holds control characters" in one_line_error(await response.text())
    assert query(world.db, "SELECT count(*) FROM customers WHERE email = 'new@example.com'") \
        == [(0,)]
