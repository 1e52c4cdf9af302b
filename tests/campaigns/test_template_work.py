"""Template work at the command line and at send time: `campaign create` refuses a subject
that does too much work in one line (exit 2); a send whose per-recipient render runs past the
time limit pauses the campaign, saying why, rather than stalling on every recipient. Real
SQLite, the real SMTP sink on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.campaigns.sender import send_campaign
from mailer.cli import main
from mailer.errors import CampaignInvalid
from mailer.store.db import open_db
from tests.campaigns.world import World, settings_mapping
from tests.helpers import write_settings
from tests.servers import SmtpSink

NESTED_LOOPS = "{% for a in range(8000) %}{% for b in range(8000) %}{% endfor %}{% endfor %}Hi"
# Every step allowed, but far more of them than a second holds: for one customer only, so the
# check at creation (a sample customer) passes and the send meets it.
SLOW_FOR_SAM = ("{% if customer.name == 'Slow Sam' %}{% for i in range(100000) %}"
                "{{ ('x y ' * 25000)|title|length }}{% endfor %}{% endif %}Hi")


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, smtp_sink, database)


@pytest.mark.parametrize(("subject", "problem"), [
    (NESTED_LOOPS, "more than 200,000 operations"),
    ("{{ ('x' * 50000000)|length }}", "a repeated value would be longer than the limit"),
])
def test_campaign_create_refuses_a_subject_that_does_too_much_work_in_one_line(
    world: World, subject: str, problem: str
) -> None:
    world.create_schema()
    settings_path = write_settings(world.tmp / "settings.toml",
                                   settings_mapping(world.tmp, world.sink.port, world.db))
    result = CliRunner().invoke(main, [
        "--settings", str(settings_path), "campaign", "create", "--kind", "offers",
        "--template", "welcome-offer", "--subject", subject])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("mailer: template campaigns/welcome-offer subject line 1: ")
    assert problem in line
    assert world.rows("SELECT count(*) FROM campaigns") == [(0,)]


async def test_a_render_past_the_time_limit_at_send_pauses_the_campaign_saying_why(
    world: World,
) -> None:
    await world.add_customers(3)
    world.rows("UPDATE customers SET name = 'Slow Sam' WHERE email = 'c1@example.com'")
    campaign_id = await world.create_campaign(subject=SLOW_FOR_SAM)
    async with open_db(world.db) as conn:
        outcome = await send_campaign(conn, world.config(), campaign_id, stop=asyncio.Event())
    assert outcome.status == "paused"
    assert outcome.reason == ("paused: template campaigns/welcome-offer subject line 1: "
                              "rendering took longer than 0.25 s")
    assert "c1@example.com" not in world.received()
    assert world.rows("SELECT status FROM campaign_recipients r JOIN customers c "
                      "ON c.id = r.customer_id WHERE c.email = 'c1@example.com'") \
        == [("pending",)]


async def test_a_template_changed_to_do_too_much_is_refused_at_send_without_holding_the_loop(
    world: World,
) -> None:
    await world.add_customers(2)
    campaign_id = await world.create_campaign()
    world.write_template("welcome-offer.txt", '{% extends "base.txt" %}{% block content %}'
                         "{% for i in range(100000) %}{{ ('x y ' * 25000)|title|length }}"
                         "{% endfor %}{% endblock %}")
    ticks = 0

    async def count_ticks() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(count_ticks())
    try:
        async with open_db(world.db) as conn:
            with pytest.raises(CampaignInvalid) as caught:
                await send_campaign(conn, world.config(), campaign_id, stop=asyncio.Event())
    finally:
        ticker.cancel()
    assert str(caught.value) == (f"campaign {campaign_id}: template campaigns/welcome-offer.txt "
                                 "line 1: rendering took longer than 1 s")
    # The check ran for its whole second in a thread: the event loop went on meanwhile.
    assert ticks >= 10
    assert world.sink.messages == []
    assert world.rows("SELECT status FROM campaigns") == [("draft",)]
