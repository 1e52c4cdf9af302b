"""Resuming the campaigns an SMTP outage paused, once the server answers again: a part of the
daemon with the one lifecycle every part has (`mailer.lifecycle.worker`).

The sender pauses a campaign with the cause "smtp-unavailable" (`paused_by`) when the server
stays unreachable through its connection retries. While such a campaign waits, the server is probed
(connect, EHLO, QUIT) on `backoff.SERVER_RECONNECT`: a long outage costs one connection every
few seconds, and its end is noticed within seconds. Then each waiting campaign is resumed
(scheduled for now), and the scheduler picks it up on its next round and carries on from its
ledger. A pause by an operator, or for failed recipients, is left for a person.

    run_once()   one look: probe if a campaign waits, resume them if the server answers
    run(stop)    a look every `poll_interval_s`, or on the backoff while the server is away
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mailer.backoff import RECONNECT, SERVER_RECONNECT, Backoff
from mailer.campaigns import service
from mailer.campaigns.scheduler import POLL_INTERVAL_S
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import CampaignRefused, SmtpError
from mailer.lifecycle.supervise import Part, describe, sleep_unless_stopped
from mailer.mail import smtp
from mailer.store import campaigns as campaign_store
from mailer.store.db import Connection, Location, open_db

log = logging.getLogger(__name__)


@dataclass
class ResumeRound:
    """One look: the campaigns that waited for the server, and those resumed."""

    waiting: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    server_answered: bool | None = None  # None: nothing waited, so no probe
    problem: str = ""  # why the probe failed


def waiting_for_server(status: str, paused_by: str) -> bool:
    """Whether a campaign is paused only because the SMTP server could not be reached."""
    return status == "paused" and paused_by == "smtp-unavailable"


class CampaignResumer:
    """The campaign-resume part of the daemon (see the module docstring)."""

    policy: Backoff = RECONNECT

    def __init__(self, db_location: Location, config: smtp.SmtpConfig, *,
                 poll_interval_s: float = POLL_INTERVAL_S, part: Part | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.db_location = db_location
        self.config = config
        self.poll_interval_s = poll_interval_s
        self.part = part or Part("campaign-resume", clock=clock)

    async def run_once(self) -> ResumeRound:
        async with open_db(self.db_location) as conn:
            return await self._round(conn)

    async def run(self, stop: asyncio.Event) -> None:
        failed_probes = 0
        async with open_db(self.db_location) as conn:
            while not stop.is_set():
                looked = await self._round(conn)
                delay_s = self.poll_interval_s
                if looked.server_answered is False:
                    failed_probes += 1
                    delay_s = SERVER_RECONNECT.delay_s(failed_probes)
                    log.info("campaigns %s wait for the SMTP server: %s; probing again in "
                             "%.1f s", ", ".join(map(str, looked.waiting)), looked.problem,
                             delay_s)
                else:
                    failed_probes = 0
                await sleep_unless_stopped(delay_s, stop)

    async def _round(self, conn: Connection) -> ResumeRound:
        looked = ResumeRound(waiting=[
            c.id for c in await campaign_store.list_campaigns(conn)
            if waiting_for_server(c.status, c.paused_by)])
        if not looked.waiting:
            return looked
        try:
            async with asyncio.timeout(self.config.timeout_s * 2):
                await (await smtp.connect(self.config)).close()
        except (SmtpError, TimeoutError) as exc:
            looked.server_answered = False
            looked.problem = describe(exc) if str(exc) else "timed out"
            return looked
        looked.server_answered = True
        for campaign_id in looked.waiting:
            try:
                await service.resume(conn, campaign_id)
            except CampaignRefused as exc:  # resumed or cancelled meanwhile
                log.info("campaign %s: not resumed: %s", campaign_id, exc)
            else:
                looked.resumed.append(campaign_id)
                log.info("campaign %s: the SMTP server answers again; resumed", campaign_id)
        return looked
