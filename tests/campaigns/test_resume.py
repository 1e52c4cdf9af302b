"""`mailer run`'s campaign-resume part: a campaign an SMTP outage paused is resumed once the
server answers, and no other pause is touched. A real SMTP sink, a real SQLite file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.campaigns.failures import SMTP_UNAVAILABLE
from mailer.campaigns.resume import CampaignResumer
from mailer.mail import smtp
from mailer.store import campaigns as store
from mailer.store.campaigns import PauseCause
from mailer.store.db import open_db, transaction
from tests.campaigns.world import World
from tests.servers import SmtpSink, free_port


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, smtp_sink, database)


async def paused(world: World, cause: PauseCause) -> int:
    campaign_id = await world.create_campaign()
    reason = SMTP_UNAVAILABLE if cause == "smtp-unavailable" else "paused by operator"
    async with open_db(world.db) as conn, transaction(conn):
        assert await store.set_status(conn, campaign_id, "paused", reason=reason,
                                      paused_by=cause, expected=("draft",))
    return campaign_id


def resumer(world: World, port: int | None = None) -> CampaignResumer:
    config = smtp.smtp_config(world.settings)
    if port is not None:
        config = dataclasses.replace(config, port=port)
    return CampaignResumer(world.db, config)


def status(world: World, campaign_id: int) -> str:
    [(value,)] = world.rows("SELECT status FROM campaigns WHERE id = ?", (campaign_id,))
    return str(value)


async def test_a_campaign_paused_by_an_smtp_outage_is_resumed_once_the_server_answers(
    world: World,
) -> None:
    outage = await paused(world, "smtp-unavailable")
    by_operator = await paused(world, "operator")

    looked = await resumer(world).run_once()

    assert looked.server_answered is True
    assert looked.waiting == looked.resumed == [outage]
    assert status(world, outage) == "scheduled"
    assert status(world, by_operator) == "paused"


async def test_a_campaign_paused_by_an_smtp_outage_waits_while_the_server_is_still_away(
    world: World,
) -> None:
    outage = await paused(world, "smtp-unavailable")

    looked = await resumer(world, port=free_port()).run_once()

    assert looked.server_answered is False and looked.problem
    assert looked.resumed == []
    assert status(world, outage) == "paused"


async def test_no_probe_is_made_while_no_campaign_waits_for_the_server(world: World) -> None:
    await paused(world, "operator")

    looked = await resumer(world, port=free_port()).run_once()

    assert looked.server_answered is None and looked.waiting == []
