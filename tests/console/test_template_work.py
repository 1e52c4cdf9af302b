"""A template that does too much work is refused in one line when a campaign is created or
previewed in the console, and while such a render runs the console keeps answering other
pages: untrusted renders run off the event loop, bounded by the sandbox's limits. Through the
real app on loopback with aiohttp's test client, a real SQLite file and the SMTP sink."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.campaigns.world import World
from tests.console.world import add_users, csrf, login, query
from tests.servers import SmtpSink

Client = TestClient[object, object]

NESTED_LOOPS = "{% for a in range(8000) %}{% for b in range(8000) %}{% endfor %}{% endfor %}Hi"
HUGE_STRING = "{{ ('x' * 50000000)|length }}"
# Every step allowed (a 100,000-character value), but far more of them than a second holds.
SLOW = "{% for i in range(100000) %}{{ ('x y ' * 25000)|title|length }}{% endfor %}"


@pytest.fixture
async def world(tmp_path: Path, smtp_sink: SmtpSink) -> World:
    world = World.build(tmp_path, smtp_sink)
    await world.import_csv("name,email,company,announcements,offers\n"
                           "Ann Lee,ann@example.com,Lee Plumbing Ltd,yes,yes\n")
    await add_users(world.settings)
    return world



def _form(token: str, subject: str) -> dict[str, str]:
    return {"csrf": token, "kind": "offers", "template": "welcome-offer", "subject": subject,
            "when": "draft", "zone": "Europe/London", "action": "save"}


@pytest.mark.parametrize(("subject", "problem"), [
    (NESTED_LOOPS, "more than 200,000 operations"),
    (HUGE_STRING, "a repeated value would be longer than the limit of 100,000"),
])
async def test_a_subject_that_does_too_much_work_is_refused_on_the_form_in_one_line(
    client: Client, world: World, subject: str, problem: str
) -> None:
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    response = await client.post("/campaigns/new", data=_form(token, subject))
    page = html.unescape(await response.text())
    assert response.status == 400
    assert f"Error: template campaigns/welcome-offer subject line 1: {problem}" in page
    assert query(world.db, "SELECT count(*) FROM campaigns") == [(0,)]


async def test_other_pages_are_answered_while_a_slow_subject_is_being_checked(
    client: Client, world: World
) -> None:
    assert await login(client, "marketing") == 303
    token = await csrf(client, "/campaigns/new")
    create = asyncio.ensure_future(client.post("/campaigns/new", data=_form(token, SLOW)))
    answered_meanwhile = 0
    while not create.done():
        page = await client.get("/campaigns")
        assert page.status == 200
        answered_meanwhile += 0 if create.done() else 1
    response = await create
    # The check ran for its whole second (it stopped at the time limit), and pages were
    # answered before it ended: the render did not hold the event loop.
    assert response.status == 400
    assert ("template campaigns/welcome-offer subject line 1: rendering took longer than 1 s"
            in html.unescape(await response.text()))
    assert answered_meanwhile >= 3
    assert query(world.db, "SELECT count(*) FROM campaigns") == [(0,)]


async def test_a_preview_of_a_template_changed_to_do_too_much_is_refused_in_one_line(
    client: Client, world: World
) -> None:
    campaign_id = await world.create_campaign()
    world.write_template("welcome-offer.txt", '{% extends "base.txt" %}{% block content %}'
                         + NESTED_LOOPS + "{% endblock %}")
    assert await login(client, "marketing") == 303
    page = html.unescape(await (await client.get(
        f"/campaigns/{campaign_id}?email=ann%40example.com")).text())
    assert (f"campaign {campaign_id}: template campaigns/welcome-offer.txt line 1: more than "
            "200,000 operations") in page
    frame = await client.get(f"/campaigns/{campaign_id}/preview.html?email=ann%40example.com")
    assert frame.status == 404
    test = await client.post(f"/campaigns/{campaign_id}/test",
                             data={"csrf": await csrf(client), "address": "me@imperial.test"})
    assert test.status == 400
    assert "more than 200,000 operations" in html.unescape(await test.text())


async def test_the_campaign_list_shows_slow_stored_subjects_as_written_without_a_long_stall(
    client: Client, world: World
) -> None:
    # Subjects written into the database by hand (create would refuse them), each a second
    # of work if rendered to the end: the list shows them as written, after a moment each.
    await world.create_campaign()
    for n in range(20):
        world.rows("INSERT INTO campaigns (kind, template, subject, status, created_at) "
                   "VALUES ('offers', 'welcome-offer', ?, 'draft', '2026-12-01T09:00:00')",
                   (f"{SLOW} {n}",))
    assert await login(client, "marketing") == 303
    started = asyncio.get_running_loop().time()
    response = await client.get("/campaigns")
    took_s = asyncio.get_running_loop().time() - started
    assert response.status == 200
    assert f"{SLOW} 19" in html.unescape(await response.text())
    assert took_s < 10  # generous: twenty renders to their end would take twenty seconds
