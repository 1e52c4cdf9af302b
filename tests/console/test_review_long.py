"""A long request in the review queue is shown whole: the console's pages render through the
bounded template sandbox with page limits, which a message within `[imap] max_message_bytes`
does not reach. The real inbox worker, IMAP server and SMTP sink."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.console.world import add_users, login
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink

Client = TestClient[object, object]
LINE = "Please stop sending me the offers, I have asked before.\n"
LINES = 40_000  # about 2.2 MB of text, past the 1,000,000 characters a campaign may write


def long_request() -> bytes:
    message = EmailMessage()
    message["From"] = "John Smith <js@unknown.example>"
    message["To"] = "unsubscribe@imperial.test"
    message["Subject"] = "Unsubscribe special offers"
    message["Message-ID"] = make_msgid(domain="unknown.example")
    message.set_content(LINE * LINES)
    return message.as_bytes()


@pytest.fixture
async def world(tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink) -> World:
    world = await make_world(tmp_path, imap_server, smtp_sink)
    await add_users(world.settings)
    world.deliver(long_request())
    report = await world.process()
    assert report.review == 1
    return world



async def test_a_request_of_two_megabytes_is_shown_whole_on_its_review_page(
    client: Client,
) -> None:
    assert await login(client, "reviewer") == 303
    response = await client.get("/review/1")
    assert response.status == 200
    assert (await response.text()).count("Please stop sending me the offers") == LINES
