"""The console over HTTP with aiohttp's test client: who may use what, CSRF, sessions,
throttling, headers, and hostile content shown inert. A real SQLite file and, where a page
sends mail, the real SMTP sink."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from mailer.console.app import routes
from mailer.store import users
from mailer.store.db import open_db, transaction
from tests.campaigns.world import World
from tests.console.world import (
    FakeClock,
    add_users,
    csrf,
    login,
    query,
    token_in,
)
from tests.servers import SmtpSink

Client = TestClient[object, object]

HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@pytest.fixture
async def world(tmp_path: Path, smtp_sink: SmtpSink) -> World:
    world = World.build(tmp_path, smtp_sink)
    await world.import_csv(
        "name,email,company,announcements,offers\n"
        "Ann Lee,ann@example.com,Lee Plumbing Ltd,yes,yes\n"
        "<script>alert(1)</script>,evil@example.com,<b>Bold & Co</b>,yes,yes\n"
        "Bob Roe,bob@example.com,,yes,no\n")
    await add_users(world.settings)
    return world



def concrete(path: str) -> str:
    """A route's path with its variables filled in (id 1, action pause)."""
    return re.sub(r"\{action[^}]*\}", "pause", re.sub(r"\{\w+:\\d\+\}", "1", path))


PUBLIC = {"/login", "/favicon.svg", "/favicon.ico"}
PROTECTED = [(r.method, concrete(r.path)) for r in routes() if r.path not in PUBLIC]
BY_ROLE = {
    "marketing": {p for m, p in PROTECTED if p.startswith("/campaigns")},
    "reviewer": {p for m, p in PROTECTED if p.startswith(("/review", "/customers"))},
}


async def test_every_page_and_form_sends_an_anonymous_user_to_sign_in(
    client: Client, world: World
) -> None:
    await world.create_campaign()
    for method, path in PROTECTED:
        response = await client.request(method, path, data={"csrf": "x"},
                                        allow_redirects=False)
        assert response.status == 303, (method, path)
        assert response.headers["Location"].startswith("/login"), (method, path)
    assert query(world.db, "SELECT status FROM campaigns") == [("draft",)]


@pytest.mark.parametrize("role", ["marketing", "reviewer"])
async def test_every_page_and_form_of_another_role_is_refused_with_403(
    client: Client, world: World, role: str
) -> None:
    campaign_id = await world.create_campaign(at="2030-01-01T09:00")
    assert await login(client, role) == 303
    token = await csrf(client)
    others = [(m, p) for m, p in PROTECTED
              if p.startswith(("/campaigns", "/review", "/customers")) and p not in BY_ROLE[role]]
    assert others
    for method, path in others:
        response = await client.request(method, path, data={"csrf": token},
                                        allow_redirects=False)
        assert response.status == 403, (role, method, path)
    assert query(world.db, "SELECT status FROM campaigns WHERE id = ?", campaign_id) == [
        ("scheduled",)]


async def test_an_admin_may_use_every_page(client: Client, world: World) -> None:
    await world.create_campaign()
    assert await login(client, "admin") == 303
    for method, path in PROTECTED:
        if method != "GET":
            continue
        response = await client.get(path, allow_redirects=False)
        # A redirect is a refusal only when it sends the admin to sign in; the export, with
        # no IMAP server in this world, goes back to the customer's page with a notice.
        refused = response.status == 403 or (
            response.status == 303 and response.headers["Location"].startswith("/login"))
        assert not refused, path


async def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    client: Client, world: World
) -> None:
    campaign_id = await world.create_campaign(at="2030-01-01T09:00")
    assert await login(client, "marketing") == 303
    for data in ({}, {"csrf": "forged"}):
        response = await client.post(f"/campaigns/{campaign_id}/cancel", data=data,
                                     allow_redirects=False)
        assert response.status == 403
        assert "This form has expired" in await response.text()
    assert query(world.db, "SELECT status FROM campaigns") == [("scheduled",)]
    token = await csrf(client)
    response = await client.post(f"/campaigns/{campaign_id}/cancel",
                                 data={"csrf": token, "confirm": "yes"}, allow_redirects=False)
    assert response.status == 303
    assert query(world.db, "SELECT status FROM campaigns") == [("cancelled",)]
    assert query(world.db, "SELECT actor, action FROM console_audit WHERE action LIKE 'cancel%'"
                 ) == [("marketing", "cancel campaign")]


async def test_another_users_csrf_token_does_not_pass(client: Client, world: World) -> None:
    campaign_id = await world.create_campaign(at="2030-01-01T09:00")
    assert await login(client, "admin") == 303
    admin_token = await csrf(client)
    assert await login(client, "marketing") == 303
    response = await client.post(f"/campaigns/{campaign_id}/cancel",
                                 data={"csrf": admin_token, "confirm": "yes"},
                                 allow_redirects=False)
    assert response.status == 403
    assert query(world.db, "SELECT status FROM campaigns") == [("scheduled",)]


async def test_the_session_cookie_is_httponly_and_samesite_strict(client: Client) -> None:
    page = await client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', await page.text())
    assert token
    response = await client.post("/login", data={"name": "admin", "password":
                                                  "correct horse battery staple",
                                                  "login_token": token.group(1)},
                                 allow_redirects=False)
    cookie = [v for v in response.headers.getall("Set-Cookie") if "console_session=" in v]
    assert cookie and "HttpOnly" in cookie[0] and "SameSite=Strict" in cookie[0]


async def test_a_sign_in_without_the_forms_own_token_is_refused(client: Client) -> None:
    response = await client.post("/login", data={"name": "admin", "password":
                                                 "correct horse battery staple"},
                                 allow_redirects=False)
    assert response.status == 403
    assert "console_session" not in response.cookies


async def test_a_session_ends_after_idle_time_and_a_moved_clock(
    client: Client, world: World, clock: FakeClock
) -> None:
    assert await login(client, "reviewer") == 303
    clock.advance(world.settings.console.session_idle_s - 60)
    assert (await client.get("/review", allow_redirects=False)).status == 200
    clock.advance(world.settings.console.session_idle_s - 60)
    assert (await client.get("/review", allow_redirects=False)).status == 200
    clock.advance(world.settings.console.session_idle_s + 1)
    response = await client.get("/review", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/login")
    assert query(world.db, "SELECT count(*) FROM console_sessions") == [(0,)]


async def test_a_busy_session_still_ends_at_its_maximum_age(
    client: Client, world: World, clock: FakeClock
) -> None:
    assert await login(client, "reviewer") == 303
    settings = world.settings.console
    elapsed = 0.0
    while elapsed + settings.session_idle_s / 2 < settings.session_max_s:
        clock.advance(settings.session_idle_s / 2)
        elapsed += settings.session_idle_s / 2
        assert (await client.get("/review", allow_redirects=False)).status == 200
    clock.advance(settings.session_max_s - elapsed + 1)  # within the idle time, past the age
    assert (await client.get("/review", allow_redirects=False)).status == 303


async def test_signing_out_ends_the_session(client: Client) -> None:
    assert await login(client, "reviewer") == 303
    token = await csrf(client)
    cookies = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    stolen = cookies["console_session"].value
    response = await client.post("/logout", data={"csrf": token}, allow_redirects=False)
    assert response.status == 303
    client.session.cookie_jar.update_cookies({"console_session": stolen})
    assert (await client.get("/review", allow_redirects=False)).status == 303


async def test_logins_are_refused_after_repeated_failures_until_the_lockout_passes(
    client: Client, world: World, clock: FakeClock
) -> None:
    limit = world.settings.console.login_max_failures
    for _ in range(limit):
        assert await login(client, "admin", "wrong password!") == 401
    assert await login(client, "admin") == 429  # the right password, but locked
    assert await login(client, "reviewer") == 303  # another name from the same client
    clock.advance(world.settings.console.login_lockout_s + 1)
    assert await login(client, "admin") == 303


async def test_a_client_guessing_many_names_is_locked_out_for_every_name(
    client: Client, world: World, clock: FakeClock
) -> None:
    limit = world.settings.console.login_max_failures * 4
    for n in range(limit):
        assert await login(client, f"guess{n}", "wrong password!") == 401
    assert await login(client, "reviewer") == 429
    clock.advance(world.settings.console.login_lockout_s + 1)
    assert await login(client, "reviewer") == 303


async def test_an_unknown_name_fails_like_a_wrong_password(client: Client) -> None:
    assert await login(client, "nobody", "whatever it is") == 401


async def test_every_answer_carries_the_security_headers(client: Client, world: World) -> None:
    answers = [await client.get("/login"), await client.get("/no-such-page")]
    assert await login(client, "reviewer") == 303
    answers += [await client.get("/review"), await client.get("/campaigns"),
                await client.get("/customers?q=ann")]
    statuses = [a.status for a in answers]
    assert statuses == [200, 404, 200, 403, 200]
    for answer in answers:
        for name, value in HEADERS.items():
            assert answer.headers[name] == value
        policy = answer.headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'none'") and "style-src 'sha256-" in policy
        assert "frame-ancestors 'none'" in policy
        text = await answer.text()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in text


async def test_a_customer_named_with_markup_is_shown_inert(client: Client, world: World) -> None:
    assert await login(client, "reviewer") == 303
    page = await (await client.get("/customers?q=alert")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    (customer_id,) = query(world.db, "SELECT id FROM customers WHERE email = ?",
                           "evil@example.com")[0]
    page = await (await client.get(f"/customers/{customer_id}")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;Bold &amp; Co&lt;/b&gt;" in page
    assert "<script>" not in page and "<b>" not in page


async def test_customer_search_finds_by_name_company_and_address_and_pages_by_id(
    client: Client, world: World
) -> None:
    await world.add_customers(60)
    assert await login(client, "reviewer") == 303
    page = await (await client.get("/customers?q=lee+plumb")).text()
    assert "ann@example.com" in page and "bob@example.com" not in page
    page = await (await client.get("/customers?q=BOB%40example")).text()
    assert "bob@example.com" in page
    first = await (await client.get("/customers?q=customer")).text()
    assert len(re.findall(r'href="/customers/\d+"', first)) == 25
    after = re.search(r"after=(\d+)", first)
    assert after
    second = await (await client.get(f"/customers?q=customer&after={after.group(1)}")).text()
    shown = set(re.findall(r"c\d+@example.com", first))
    assert shown.isdisjoint(re.findall(r"c\d+@example.com", second))


async def test_a_campaign_is_created_in_local_time_and_stored_in_utc(
    client: Client, world: World
) -> None:
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    form = {"csrf": token, "kind": "offers", "template": "welcome-offer",
            "subject": "Summer offer for {{ customer.name }}", "when": "schedule",
            "at": "2027-07-01T09:30", "zone": "Europe/London", "action": "save"}
    response = await client.post("/campaigns/new", data=form, allow_redirects=False)
    assert response.status == 303
    assert query(world.db, "SELECT status, scheduled_at FROM campaigns") == [
        ("scheduled", "2027-07-01T08:30:00.000000+00:00")]  # BST is UTC+1


async def test_the_create_form_shows_the_audience_before_saving(
    client: Client, world: World
) -> None:
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    form = {"csrf": token, "kind": "offers", "template": "welcome-offer",
            "subject": "Hello", "when": "draft", "zone": "Europe/London", "action": "check"}
    page = await (await client.post("/campaigns/new", data=form)).text()
    assert "would go to 2 customers opted in to offers now" in page
    assert query(world.db, "SELECT count(*) FROM campaigns") == [(0,)]


async def test_create_form_errors_are_shown_next_to_each_field_and_summarised(
    client: Client, world: World
) -> None:
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    form = {"csrf": token, "kind": "", "template": "", "subject": "", "when": "schedule",
            "at": "2027-03-28T01:30", "zone": "Europe/London", "action": "save"}
    response = await client.post("/campaigns/new", data=form)
    page = await response.text()
    assert response.status == 400
    assert "There is a problem" in page
    for field, message in (("kind", "Choose what kind of campaign this is"),
                           ("template", "Choose a template"),
                           ("subject", "Enter a subject line"),
                           ("at", "01:30 on 28 March 2027 does not exist in Europe/London")):
        assert f'<a href="#{field}">{message}' in page, message  # summarised at the top
        assert f"Error: {message}" in page, message  # and next to the field
    assert query(world.db, "SELECT count(*) FROM campaigns") == [(0,)]


async def test_a_template_error_appears_on_the_form_with_file_and_line_as_the_cli_says_it(
    client: Client, world: World
) -> None:
    world.write_template("broken.txt", "Hello\n{{ customer.nmae }}\n")
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    form = {"csrf": token, "kind": "offers", "template": "broken", "subject": "Hi",
            "when": "draft", "zone": "Europe/London", "action": "save"}
    response = await client.post("/campaigns/new", data=form)
    page = await response.text()
    assert response.status == 400
    assert re.search(r"campaigns/broken\.txt.{0,20}line 2", page), page
    assert query(world.db, "SELECT count(*) FROM campaigns") == [(0,)]


@pytest.mark.parametrize(("template", "subject", "field"), [
    # A template whose name says "subject": its error still belongs to the template field.
    ("subject-line-offer", "Hi", "template"),
    ("welcome-offer", "Hi {{ customer.nmae }}", "subject"),
])
async def test_a_template_error_is_shown_next_to_the_field_at_fault(
    client: Client, world: World, template: str, subject: str, field: str
) -> None:
    world.write_template("subject-line-offer.txt", "Hello\n{{ customer.nmae }}\n")
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    form = {"csrf": token, "kind": "offers", "template": template, "subject": subject,
            "when": "draft", "zone": "Europe/London", "action": "save"}
    response = await client.post("/campaigns/new", data=form)
    page = await response.text()
    assert response.status == 400
    assert f'<a href="#{field}">template campaigns/{template}' in page, page


async def test_the_html_preview_is_a_whole_page_of_its_own_under_a_sandboxing_policy(
    client: Client, world: World
) -> None:
    campaign_id = await world.create_campaign()
    assert await login(client, "marketing") == 303
    page = await (await client.get(f"/campaigns/{campaign_id}?email=ann%40example.com")).text()
    assert "<iframe" not in page  # a frame of fixed height cut the footer off
    assert (f'href="/campaigns/{campaign_id}/preview.html?email=ann%40example.com"'
            in page)
    assert "Dear Ann Lee" in page
    html = await client.get(f"/campaigns/{campaign_id}/preview.html?email=ann%40example.com")
    assert "Unsubscribe" in await html.text()  # the footer, at the end of the message
    policy = html.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'") and "sandbox" in policy
    assert "script-src" not in policy
    assert html.headers["X-Frame-Options"] == "SAMEORIGIN"


async def test_a_test_copy_goes_to_the_address_through_smtp(
    client: Client, world: World, smtp_sink: SmtpSink
) -> None:
    campaign_id = await world.create_campaign()
    assert await login(client, "marketing") == 303
    token = await csrf(client, f"/campaigns/{campaign_id}")
    response = await client.post(f"/campaigns/{campaign_id}/test",
                                 data={"csrf": token, "address": "me@imperial.test"},
                                 allow_redirects=False)
    assert response.status == 303
    assert [list(m.rcpt_tos) for m in smtp_sink.messages] == [["me@imperial.test"]]
    assert query(world.db, "SELECT count(*) FROM campaign_recipients") == [(0,)]


async def test_a_test_copy_past_the_days_cap_is_refused_next_to_the_field(
    client: Client, world: World, smtp_sink: SmtpSink
) -> None:
    campaign_id = await world.create_campaign()
    today = datetime.now(UTC).date().isoformat()
    # Today's 20 copies, sent before this test.
    query(world.db, "INSERT INTO campaign_test_copies (campaign_id, day, count) "
          "VALUES (?, ?, 20)", campaign_id, today)
    assert await login(client, "marketing") == 303
    token = await csrf(client, f"/campaigns/{campaign_id}")
    response = await client.post(f"/campaigns/{campaign_id}/test",
                                 data={"csrf": token, "address": "me@imperial.test"},
                                 allow_redirects=False)
    assert response.status == 400
    assert (f"campaign {campaign_id}: 20 test copies sent today, the most [campaigns] "
            "test_copies_per_day allows; send more tomorrow (UTC)") in await response.text()
    assert smtp_sink.messages == []


async def test_a_csv_upload_with_bad_rows_imports_nothing_and_names_each_line(
    client: Client, world: World
) -> None:
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/customers/import")
    data = FormData()
    data.add_field("csrf", token)
    data.add_field("file", io.BytesIO(
        b"name,email,company,announcements,offers\n"
        b"New Person,new@example.com,,yes,yes\n"
        b"Broken,not-an-address,,yes,yes\n"
        b"Also Broken,also@example.com,,maybe,yes\n"), filename="people.csv",
        content_type="text/csv")
    response = await client.post("/customers/import", data=data)
    page = await response.text()
    assert response.status == 400
    assert "people.csv: line 3:" in page and "people.csv: line 4:" in page
    assert "nothing was imported" in page
    assert query(world.db, "SELECT count(*) FROM customers WHERE email = 'new@example.com'"
                 ) == [(0,)]


async def test_a_good_csv_upload_imports_and_is_recorded_with_the_users_name(
    client: Client, world: World
) -> None:
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/customers/import")
    data = FormData()
    data.add_field("csrf", token)
    data.add_field("file", io.BytesIO(b"name,email\nNew Person,new@example.com\n"),
                   filename="people.csv", content_type="text/csv")
    data.add_field("consent", "opted-in")
    response = await client.post("/customers/import", data=data)
    assert response.status == 200
    assert "1 created" in await response.text()
    assert query(world.db, "SELECT name FROM customers WHERE email = 'new@example.com'") == [
        ("New Person",)]
    assert query(world.db, "SELECT actor FROM console_audit WHERE action = "
                 "'imported customers'") == [("reviewer",)]


async def test_the_overview_charts_opt_outs_by_source_and_messages_sent(
    client: Client, world: World, clock: FakeClock
) -> None:
    from mailer.consent.change import Refusal, opt_out
    from mailer.store.db import open_db, transaction

    async with open_db(world.db) as conn, transaction(conn):
        await opt_out(conn, [Refusal((1,), "campaign 1")], ["offers"], source="one-click")
    clock.start = __import__("datetime").datetime.now(__import__("datetime").UTC)
    assert await login(client, "reviewer") == 303
    page = await (await client.get("/")).text()
    assert "<svg" in page and "one-click: 1" in page
    assert "Opt-outs per day" in page


async def test_a_notice_in_a_link_made_elsewhere_is_not_shown(client: Client) -> None:
    assert await login(client, "reviewer") == 303
    page = await (await client.get("/review?done=Call+0800+to+keep+your+account")).text()
    assert "Call 0800" not in page


async def test_the_overview_shows_the_progress_of_each_active_campaign(
    client: Client, world: World
) -> None:
    import asyncio

    from mailer.campaigns import service
    from mailer.store.db import open_db

    await world.add_customers(20)
    campaign_id = await world.create_campaign()
    stop = asyncio.Event()
    stop.set()  # stopped before the first message: the campaign pauses with its audience
    async with open_db(world.db) as conn:
        await service.send_now(conn, world.config(), campaign_id, stop=stop)
    (status,) = query(world.db, "SELECT status FROM campaigns")[0]
    assert status == "paused"
    assert await login(client, "marketing") == 303
    page = await (await client.get("/")).text()
    assert f'href="/campaigns/{campaign_id}"' in page
    assert '<progress max="22" value="0"' in page and "0 sent of 22" in page


async def save_draft(client: Client) -> str:
    """Sign in as marketing and save an offers draft; the session's CSRF token."""
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    form = {"csrf": token, "kind": "offers", "template": "welcome-offer", "subject": "Hello",
            "when": "draft", "zone": "Europe/London", "action": "save"}
    assert (await client.post("/campaigns/new", data=form, allow_redirects=False)).status == 303
    return token


async def test_a_draft_is_scheduled_from_its_page_in_local_time_and_then_moved(
    client: Client, world: World
) -> None:
    token = await save_draft(client)
    [(campaign_id,)] = query(world.db, "SELECT id FROM campaigns")
    page = await (await client.get(f"/campaigns/{campaign_id}")).text()
    assert "Schedule campaign" in page
    response = await client.post(
        f"/campaigns/{campaign_id}/schedule",
        data={"csrf": token, "at": "2027-07-01T09:30", "zone": "Europe/London"})
    page = await response.text()
    assert "Campaign 1 is scheduled for 01 Jul 2027 09:30 BST" in page
    assert query(world.db, "SELECT status, scheduled_at FROM campaigns") == [
        ("scheduled", "2027-07-01T08:30:00.000000+00:00")]
    assert 'value="2027-07-01T09:30"' in page  # the field shows the time it is set for
    assert "Change send time" in page
    await client.post(f"/campaigns/{campaign_id}/schedule",
                      data={"csrf": token, "at": "2027-12-01T09:30", "zone": "Asia/Kolkata"})
    assert query(world.db, "SELECT scheduled_at FROM campaigns") == [
        ("2027-12-01T04:00:00.000000+00:00",)]
    assert query(world.db, "SELECT action FROM console_audit WHERE action LIKE 'scheduled%'") \
        == [("scheduled campaign",), ("scheduled campaign",)]


async def test_a_send_time_that_cannot_be_is_shown_next_to_the_field_and_changes_nothing(
    client: Client, world: World
) -> None:
    token = await save_draft(client)
    for at, message in (("", "Enter the date and time to send the campaign"),
                        ("2027-03-28T01:30",
                         "01:30 on 28 March 2027 does not exist in Europe/London"),
                        ("2001-01-01T09:00", "The send time must be in the future")):
        response = await client.post("/campaigns/1/schedule",
                                     data={"csrf": token, "at": at, "zone": "Europe/London"})
        page = await response.text()
        assert response.status == 400
        assert f'<a href="#at">{message}' in page and f"Error: {message}" in page
        assert f'value="{at}"' in page  # what was typed stays in the field
    assert query(world.db, "SELECT status, scheduled_at FROM campaigns") == [("draft", None)]
    await client.post("/campaigns/1/cancel", data={"csrf": token, "confirm": "yes"})
    refused = await client.post("/campaigns/1/schedule",
                                data={"csrf": token, "at": "2027-07-01T09:30",
                                      "zone": "Europe/London"})
    assert "only a draft, scheduled or paused campaign can be scheduled" in await refused.text()
    assert query(world.db, "SELECT status FROM campaigns") == [("cancelled",)]


async def test_cancel_asks_first_on_a_page_of_its_own_and_only_its_button_cancels(
    client: Client, world: World
) -> None:
    campaign_id = await world.create_campaign(at="2030-01-01T09:00")
    assert await login(client, "marketing") == 303
    page = await (await client.get(f"/campaigns/{campaign_id}")).text()
    assert f'<a class="button warning" href="/campaigns/{campaign_id}/cancel">' in page
    token = token_in(page)
    # A POST that did not come from the confirmation page cancels nothing: it asks.
    response = await client.post(f"/campaigns/{campaign_id}/cancel", data={"csrf": token},
                                 allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"/campaigns/{campaign_id}/cancel"
    assert query(world.db, "SELECT status FROM campaigns") == [("scheduled",)]
    confirm = await (await client.get(f"/campaigns/{campaign_id}/cancel")).text()
    assert f"Are you sure you want to cancel campaign {campaign_id}?" in confirm
    assert "You cannot undo this." in confirm
    assert 'name="confirm" value="yes"' in confirm
    response = await client.post(f"/campaigns/{campaign_id}/cancel",
                                 data={"csrf": token_in(confirm), "confirm": "yes"})
    assert f"Campaign {campaign_id} is now cancelled" in await response.text()
    assert query(world.db, "SELECT status FROM campaigns") == [("cancelled",)]
    # Nothing left to cancel: the confirmation page is not offered again.
    response = await client.get(f"/campaigns/{campaign_id}/cancel")
    assert "there is nothing to cancel" in await response.text()


async def test_the_audit_log_is_for_administrators_and_pages_through_every_entry(
    client: Client, world: World
) -> None:
    async with open_db(world.settings.database.path) as conn, transaction(conn):
        for n in range(60):
            # What `mailer users add` records (actor "cli"), sixty times.
            await users.audit(conn, "cli", "added user (reviewer)", f"user-{n:02}")
    assert await login(client, "marketing") == 303
    refused = await client.get("/audit")
    assert refused.status == 403
    assert 'href="/audit"' not in await (await client.get("/")).text()  # not in the menu

    assert await login(client, "admin") == 303
    first = await (await client.get("/")).text()
    assert '<a href="/audit">Audit log</a>' in first
    page = await (await client.get("/audit")).text()
    shown = re.findall(r"<td class=\"long\" data-label=\"To what\">([^<]*)</td>", page)
    assert len(shown) == 50  # a page
    older = re.search(r'<a href="(/audit\?before=\d+)">Older changes</a>', page)
    assert older is not None
    rest = await (await client.get(older.group(1))).text()
    more = re.findall(r"<td class=\"long\" data-label=\"To what\">([^<]*)</td>", rest)
    assert "Older changes" not in rest and '<a href="/audit">Newest changes</a>' in rest
    # Every CLI entry once, newest first, across the two pages (sign-ins have no target).
    assert [t for t in shown + more if t] == [f"user-{n:02}" for n in reversed(range(60))]


async def test_the_favicon_is_an_svg_anyone_may_fetch_and_every_page_names_it(
    client: Client,
) -> None:
    for path in ("/favicon.svg", "/favicon.ico"):
        icon = await client.get(path, allow_redirects=False)
        assert icon.status == 200 and icon.content_type == "image/svg+xml"
        assert (await icon.text()).startswith("<svg")
        assert "img-src 'self'" in icon.headers["Content-Security-Policy"]
    page = await (await client.get("/login")).text()
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in page


async def test_campaign_subjects_read_as_a_sample_customer_would_and_counts_in_words(
    client: Client, world: World
) -> None:
    await world.create_campaign(subject="Welcome, {{ customer.name }}")
    await world.create_campaign(subject="Network news")
    query(world.db, "UPDATE customers SET offers = 0 WHERE email = 'evil@example.com'")
    assert await login(client, "marketing") == 303
    page = await (await client.get("/campaigns")).text()
    assert "{{" not in page
    assert ('<a href="/campaigns/1">Welcome, Zoë Ó Briain-Müller</a> '
            '<span class="tag sample">sample</span>') in page
    assert '<a href="/campaigns/2">Network news</a></td>' in page  # the same for everyone
    one = await (await client.get("/campaigns/1")).text()
    assert "1 customer is opted in to offers now." in one
    assert "<code>Welcome, {{ customer.name }}</code>" in one  # the source, shown as such
    form = await (await client.get("/campaigns/new")).text()
    assert "(1 customer opted in now)" in form and "(3 customers opted in now)" in form


async def test_the_console_style_is_served_without_developer_comments(client: Client) -> None:
    page = await (await client.get("/login")).text()
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "/*" not in style and "table.stack" in style
