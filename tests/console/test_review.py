"""The review queue in the console against the real inbox worker, IMAP server and SMTP sink:
a hostile request is shown inert, and resolving it acts like `mailer review resolve` with the
user's name in the consent history."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.console.world import add_users, csrf, login
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink

Client = TestClient[object, object]
SUBJECT = "Unsubscribe special offers"


def hostile_request() -> bytes:
    """From an unknown address, signed with a name two customers share, with markup and
    script in both its parts and an HTML attachment."""
    message = EmailMessage()
    message["From"] = "John Smith <js@unknown.example>"
    message["To"] = "unsubscribe@imperial.test"
    message["Subject"] = SUBJECT
    message["Message-ID"] = make_msgid(domain="unknown.example")
    message.set_content("Please stop <script>alert('text')</script> the offers.\n\nJohn Smith\n")
    message.add_alternative(
        "<p>Please stop</p><script>alert('html')</script><img src=\"http://evil.example/x\">"
        "<p>John Smith</p>", subtype="html")
    message.add_attachment(b"<script>alert('file')</script>", maintype="text",
                           subtype="html", filename="invoice<1>.html")
    return message.as_bytes()


@pytest.fixture
async def world(tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> World:
    world = await make_world(tmp_path, imap_server, smtp_sink)
    await add_users(world.settings)
    world.deliver(hostile_request())
    report = await world.process()
    assert report.review == 1
    return world



async def test_a_hostile_request_is_shown_as_text_with_its_attachment_named_not_opened(
    client: Client,
) -> None:
    assert await login(client, "reviewer") == 303
    listing = await (await client.get("/review")).text()
    assert "js@unknown.example" in listing and "/review/1" in listing
    page = await (await client.get("/review/1")).text()
    assert "Please stop &lt;script&gt;alert(&#39;text&#39;)&lt;/script&gt; the offers." in page
    assert "<script" not in page
    assert "evil.example" not in page and "alert(&#39;html&#39;)" not in page
    assert "invoice&lt;1&gt;.html (text/html" in page
    assert "alert(&#39;file&#39;)" not in page
    # The matcher's candidates: both customers called John Smith.
    assert "john.smith@example.com" in page and "jsmith@example.org" in page


async def test_resolving_in_the_console_opts_out_the_chosen_customers_in_the_users_name(
    client: Client, world: World
) -> None:
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/review/1")
    response = await client.post("/review/1/resolve", data={
        "csrf": token, "customer": ["john.smith@example.com", "jsmith@example.org"]},
        allow_redirects=False)
    assert response.status == 303
    assert world.opted_out() == {"john.smith@example.com", "jsmith@example.org"}
    events = world.query(
        "SELECT c.email, e.source, e.actor FROM consent_events e JOIN customers c "
        "ON c.id = e.customer_id WHERE e.new_value = 0 ORDER BY c.email, e.category")
    assert {(e[1], e[2]) for e in events} == {("email", "reviewer")}
    assert len(events) == 4  # two customers, two categories each
    # The evidence: the review item and the request it holds.
    assert world.query("SELECT DISTINCT review_item, message_from, message_id != '' "
                       "FROM consent_events WHERE new_value = 0") == [
        (1, "js@unknown.example", 1)]
    assert world.query("SELECT status FROM review_items") == [("resolved",)]
    assert world.folder_subjects("Review") == []
    assert world.folder_subjects("Processed") == [SUBJECT]
    outbox = await world.send_confirmations()
    assert outbox.sent == 2
    again = await client.post("/review/1/resolve", data={
        "csrf": token, "customer": "john.smith@example.com"}, allow_redirects=False)
    assert again.status == 303
    assert "already%20resolved" in again.headers["Location"]


async def test_resolving_without_choosing_anyone_shows_the_error_and_changes_nothing(
    client: Client, world: World
) -> None:
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/review/1")
    response = await client.post("/review/1/resolve", data={"csrf": token})
    assert response.status == 400
    assert "Choose at least one customer" in await response.text()
    assert world.opted_out() == set()
    assert world.query("SELECT status FROM review_items") == [("open",)]


async def test_dismissing_changes_no_one_and_files_the_message(
    client: Client, world: World
) -> None:
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/review/1")
    response = await client.post("/review/1/dismiss", data={"csrf": token},
                                 allow_redirects=False)
    assert response.status == 303
    assert world.opted_out() == set()
    assert world.query("SELECT status FROM review_items") == [("dismissed",)]
    assert world.folder_subjects("Processed") == [SUBJECT]
