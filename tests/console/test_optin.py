"""An honest way back in, against the real IMAP server (Dovecot), SMTP sink (aiosmtpd), SQLite
and the console and public pages served over loopback: the confirmation carries a working
link to the preference page; a reply to it, or a request to opt back in, waits in review and
is never another opt-out; a reviewer records the opt-in with that message as the evidence;
staff record consent given another way only with evidence; marketing can do neither."""

from __future__ import annotations

import asyncio
import io
import json
import re
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from mailer.public.app import make_app as make_public_app
from tests.console.world import add_users, csrf, login
from tests.helpers import run_cli
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink, sample_message

Client = TestClient[object, object]
SUBJECT = "Unsubscribe special offers"
PREFERENCES_URL = "http://127.0.0.1:8080/u"
SECRET = "a-test-secret-that-signs-links"


@pytest.fixture
async def world(tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> World:
    world = await make_world(tmp_path, imap_server, smtp_sink, campaigns={
        "unsubscribe_url": PREFERENCES_URL, "secret": SECRET})
    await add_users(world.settings)
    return world



def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/plain part")


async def ann_unsubscribes_and_gets_her_confirmation(world: World, sink: SmtpSink) -> Message:
    world.deliver(sample_message(subject=SUBJECT, sender="Ann Lee <ann@example.com>",
                                 body="Please stop the offers.\n"))
    assert (await world.process()).unsubscribed == 1
    assert (await world.send_confirmations()).sent == 1
    (received,) = sink.messages
    return message_from_bytes(received.content)


def reply_to(confirmation: Message, body: str, *, subject: str = "") -> bytes:
    return sample_message(
        subject=subject or f"Re: {confirmation['Subject']}", sender="Ann Lee <ann@example.com>",
        body=body, headers={"In-Reply-To": confirmation["Message-ID"],
                            "References": confirmation["Message-ID"]})


async def test_the_confirmation_links_to_the_customers_preference_page_and_promises_no_reply(
    world: World, smtp_sink: SmtpSink
) -> None:
    confirmation = await ann_unsubscribes_and_gets_her_confirmation(world, smtp_sink)
    text = text_of(confirmation)
    assert "Reply to this email" not in text
    found = re.search(r"Changed your mind\? Choose the emails you want: (\S+)", text)
    assert found is not None
    link = found.group(1)
    assert link.startswith(PREFERENCES_URL + "/")
    outbox = world.query("SELECT id, message_id FROM outbox")
    assert outbox == [(outbox[0][0], confirmation["Message-ID"])]

    public = TestClient(TestServer(make_public_app(world.settings)))
    await public.start_server()
    try:
        page = await public.get("/u/" + link.rpartition("/")[2])
        assert page.status == 200
        assert "Ann Lee" in await page.text() or "ann@example.com" in await page.text()
    finally:
        await public.close()


async def test_a_reply_to_the_confirmation_goes_to_review_and_is_not_another_opt_out(
    world: World, smtp_sink: SmtpSink
) -> None:
    confirmation = await ann_unsubscribes_and_gets_her_confirmation(world, smtp_sink)
    events_before = world.query("SELECT count(*) FROM consent_events")
    # The reply's subject still reads as a request ("Re: Re: Unsubscribe special offers").
    world.deliver(reply_to(confirmation, "Please turn the special offers back on.\n\n"
                                         "> Thank you for your email.\n"))

    report = await world.process()

    assert (report.unsubscribed, report.review) == (0, 1)
    assert world.query("SELECT count(*) FROM consent_events") == events_before
    assert world.query("SELECT count(*) FROM outbox") == [(1,)]  # no second confirmation
    assert world.query("SELECT marked, reason FROM review_items") == [
        ("opt back in", "asks to opt back in: a reply to our confirmation")]
    assert world.preferences("ann@example.com") == (False, False)  # as her request left it
    assert world.folder_subjects("Review") == [f"Re: {confirmation['Subject']}"]


async def test_a_reply_with_another_subject_threaded_to_the_confirmation_still_reaches_review(
    world: World, smtp_sink: SmtpSink
) -> None:
    confirmation = await ann_unsubscribes_and_gets_her_confirmation(world, smtp_sink)
    world.deliver(reply_to(confirmation, "Actually, can I have them again?\n",
                           subject="About my emails"))

    report = await world.process()

    assert (report.unsubscribed, report.review) == (0, 1)
    assert world.query("SELECT marked FROM review_items") == [("opt back in",)]


async def test_an_unthreaded_request_to_resubscribe_goes_to_review_and_opts_no_one_in_or_out(
    world: World,
) -> None:
    world.deliver(sample_message(subject=SUBJECT, sender="bob@example.com",
                                 body="I changed my mind: please resubscribe me.\n"))

    report = await world.process()

    assert (report.unsubscribed, report.review) == (0, 1)
    assert world.query("SELECT marked, reason FROM review_items") == [
        ("opt back in", "asks to opt back in: the message asks for emails again")]
    assert world.query("SELECT count(*) FROM consent_events WHERE source != 'import'") == [(0,)]
    assert world.preferences("bob@example.com") == (True, True)


async def test_a_reviewer_records_the_opt_in_with_the_request_as_evidence(
    world: World, smtp_sink: SmtpSink, client: Client
) -> None:
    confirmation = await ann_unsubscribes_and_gets_her_confirmation(world, smtp_sink)
    reply = reply_to(confirmation, "Please turn the special offers back on.\n")
    reply_id = message_from_bytes(reply)["Message-ID"]
    world.deliver(reply)
    assert (await world.process()).review == 1
    assert await login(client, "reviewer") == 303
    page = await (await client.get("/review/1")).text()
    assert "Record the opt-in this message asks for" in page
    token = await csrf(client, "/review/1")

    response = await client.post("/review/1/opt-in", data={
        "csrf": token, "email": "ann@example.com", "category": "offers"},
        allow_redirects=False)

    assert response.status == 303
    assert world.preferences("ann@example.com") == (False, True)
    assert world.query(
        "SELECT category, old_value, new_value, source, reference, actor FROM consent_events "
        "WHERE new_value = 1 AND source != 'import'") == [
        ("offers", 0, 1, "email (reviewed)", reply_id, "reviewer")]
    assert world.query("SELECT status FROM review_items") == [("resolved",)]
    assert world.folder_subjects("Review") == []


async def test_the_opt_in_form_needs_a_customer_and_shows_the_error_next_to_the_field(
    world: World, client: Client
) -> None:
    world.deliver(sample_message(subject=SUBJECT, sender="bob@example.com",
                                 body="Please resubscribe me.\n"))
    assert (await world.process()).review == 1
    assert await login(client, "admin") == 303
    token = await csrf(client, "/review/1")

    no_kind = await client.post("/review/1/opt-in", data={
        "csrf": token, "email": "bob@example.com"})
    unknown = await client.post("/review/1/opt-in", data={
        "csrf": token, "email": "nobody@example.com", "category": "offers"})

    assert no_kind.status == 400
    assert "Error: choose at least one kind of email to turn back on" in await no_kind.text()
    assert unknown.status == 400
    assert "Error: no customer with email nobody@example.com" in await unknown.text()
    assert world.query("SELECT status FROM review_items") == [("open",)]


async def test_an_ordinary_opt_out_request_cannot_be_turned_into_an_opt_in(
    world: World, client: Client
) -> None:
    world.deliver(sample_message(subject=SUBJECT, sender="stranger@unknown.example",
                                 body="Stop it.\n"))
    assert (await world.process()).review == 1
    assert await login(client, "reviewer") == 303
    assert "Record the opt-in" not in await (await client.get("/review/1")).text()
    token = await csrf(client, "/review/1")

    response = await client.post("/review/1/opt-in", data={
        "csrf": token, "email": "bob@example.com", "category": "offers"},
        allow_redirects=False)

    assert response.status == 303
    assert "does%20not%20ask%20to%20opt%20back%20in" in response.headers["Location"]
    assert world.query("SELECT count(*) FROM consent_events WHERE new_value = 1 "
                       "AND source != 'import'") == [(0,)]


async def test_marketing_cannot_record_consent_anywhere(
    world: World, client: Client
) -> None:
    world.deliver(sample_message(subject=SUBJECT, sender="bob@example.com",
                                 body="Please resubscribe me.\n"))
    assert (await world.process()).review == 1
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/")

    review = await client.post("/review/1/opt-in", data={
        "csrf": token, "email": "bob@example.com", "category": "offers"})
    customer = await client.post("/customers/1/consent", data={
        "csrf": token, "offers": "on", "evidence": "said so"})

    assert (review.status, customer.status) == (403, 403)
    assert world.query("SELECT count(*) FROM consent_events WHERE source != 'import'") == [
        (0,)]


async def test_the_customer_page_records_consent_only_with_evidence(
    world: World, client: Client
) -> None:
    (ann_id,) = world.query("SELECT id FROM customers WHERE email = 'ann@example.com'")[0]
    assert await login(client, "reviewer") == 303
    token = await csrf(client, f"/customers/{ann_id}")
    off = await client.post(f"/customers/{ann_id}/consent", data={
        "csrf": token, "offers": "off", "announcements": "on"}, allow_redirects=False)
    assert off.status == 303  # turning off needs no evidence

    missing = await client.post(f"/customers/{ann_id}/consent", data={
        "csrf": token, "offers": "on", "announcements": "on", "evidence": "  "})
    assert missing.status == 400
    page = await missing.text()
    assert 'class="field error"' in page and "Say how the customer gave their consent" in page
    assert world.preferences("ann@example.com") == (True, False)

    given = await client.post(f"/customers/{ann_id}/consent", data={
        "csrf": token, "offers": "on", "evidence": "In the Leeds shop, 6 May, signed form 88"},
        allow_redirects=False)
    assert given.status == 303
    assert world.preferences("ann@example.com") == (True, True)
    assert world.query(
        "SELECT category, new_value, source, reference, actor FROM consent_events "
        "WHERE source = 'console' ORDER BY id") == [
        ("offers", 0, "console", "", "reviewer"),
        ("offers", 1, "console", "In the Leeds shop, 6 May, signed form 88", "reviewer")]


async def test_a_console_upload_without_consent_columns_asks_for_the_default_and_writes_nothing(
    world: World, client: Client
) -> None:
    before = world.query("SELECT count(*) FROM customers")
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/customers/import")
    form = await (await client.get("/customers/import")).text()
    assert 'name="consent" value="opted-in">' in form  # nothing preselected
    assert 'name="consent" value="opted-out">' in form
    data = FormData()
    data.add_field("csrf", token)
    data.add_field("file", io.BytesIO(b"name,email\nNew Person,new@example.com\n"),
                   filename="people.csv", content_type="text/csv")

    response = await client.post("/customers/import", data=data)

    assert response.status == 400
    page = await response.text()
    assert ("Error: people.csv: line 1: no &#39;announcements&#39; or &#39;offers&#39; column"
            in page)
    assert world.query("SELECT count(*) FROM customers") == before

    data = FormData()
    data.add_field("csrf", token)
    data.add_field("file", io.BytesIO(b"name,email\nNew Person,new@example.com\n"),
                   filename="people.csv", content_type="text/csv")
    data.add_field("consent", "opted-out")
    done = await client.post("/customers/import", data=data, allow_redirects=False)
    assert done.status == 303
    assert world.preferences("new@example.com") == (False, False)
    assert world.query(
        "SELECT DISTINCT source, reference, actor FROM consent_events e JOIN customers c "
        "ON c.id = e.customer_id WHERE c.email = 'new@example.com'") == [
        ("import", "people.csv line 2", "reviewer")]


async def test_the_cli_records_a_reviewed_opt_in_too_and_refuses_one_without_a_category(
    world: World, smtp_sink: SmtpSink
) -> None:
    confirmation = await ann_unsubscribes_and_gets_her_confirmation(world, smtp_sink)
    reply = reply_to(confirmation, "Changed my mind, announcements please.\n")
    world.deliver(reply)
    assert (await world.process()).review == 1
    listed = await asyncio.to_thread(run_cli, world.settings_path, "review", "list", "--json")
    assert json.loads(listed.stdout)[0]["marked"] == "opt back in"

    nothing = await asyncio.to_thread(run_cli, world.settings_path, "review", "opt-in", "1",
                                      "ann@example.com")
    done = await asyncio.to_thread(run_cli, world.settings_path, "review", "opt-in", "1",
                                   "ann@example.com", "--announcements", "--by", "sam")

    assert nothing.code == 2
    assert nothing.stderr.strip() == "mailer: choose at least one kind of email to turn back on"
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == (
        "review item 1 resolved: ann@example.com opted in to announcements (recorded by sam)")
    assert world.query("SELECT category, source, reference, actor FROM consent_events "
                       "WHERE new_value = 1 AND source != 'import'") == [
        ("announcements", "email (reviewed)", message_from_bytes(reply)["Message-ID"], "sam")]
    assert world.folder_subjects("Processed") == [SUBJECT, f"Re: {confirmation['Subject']}"]
