"""`mailer run`'s campaigns part: send scheduled campaigns when they fall due.

`CampaignScheduler` has the lifecycle every part has (`mailer.lifecycle.worker`): `run_once`
is one round (`send_due_campaigns`), `run(stop)` a round every `poll_interval_s` until `stop`.
A round looks for campaigns that are due (scheduled, with `scheduled_at` passed) or left
'sending' by a process that stopped or crashed, and sends each in turn through
`sender.send_campaign`. Every daemon sends every due campaign alongside the others, each
claiming its own batches (`campaigns.senders`); the rows of a sender that died are sent again
(after the fresh ones) at once if it ran on this host, or once its lease expires if it ran on
another.

When `stop` is set the sender finishes the messages in flight, returns the rest to pending and
releases the lease, leaving the campaign 'sending' so that the next `mailer run` (or
`campaign send`) carries on where this one stopped. A campaign that cannot be sent as it
stands (its template broke, the unsubscribe secret is missing) is paused with the reason, so
`campaign show` says why; SMTP trouble pauses it the same way, from inside the sender, and
`mailer.campaigns.resume` resumes it once the server answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mailer.backoff import RECONNECT, Backoff
from mailer.campaigns.sender import (
    Holder,
    SendConfig,
    SendOutcome,
    new_holder,
    send_campaign,
    send_config,
)
from mailer.campaigns.senders import has_work
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import CampaignInvalid, CampaignRefused
from mailer.lifecycle.supervise import Part, sleep_unless_stopped
from mailer.settings import Settings
from mailer.store import campaigns as store
from mailer.store import leases
from mailer.store.db import Connection, open_db, transaction, utcnow

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 5.0


class CampaignScheduler:
    """The campaigns part of the daemon (see the module docstring)."""

    policy: Backoff = RECONNECT

    def __init__(self, config: SendConfig, *, poll_interval_s: float = POLL_INTERVAL_S,
                 part: Part | None = None,
                 on_outcome: Callable[[str, SendOutcome], None] | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.poll_interval_s = poll_interval_s
        self.part = part or Part("campaigns", clock=clock)
        self.on_outcome = on_outcome
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, *, poll_interval_s: float = POLL_INTERVAL_S,
                      part: Part | None = None,
                      on_outcome: Callable[[str, SendOutcome], None] | None = None,
                      clock: Clock = SYSTEM_CLOCK) -> CampaignScheduler:
        """Loads the DKIM key (SettingsError: one line naming it)."""
        return cls(send_config(settings), poll_interval_s=poll_interval_s, part=part,
                   on_outcome=on_outcome, clock=clock)

    async def run_once(self, stop: asyncio.Event | None = None) -> list[SendOutcome]:
        """One round, on a connection of its own."""
        async with open_db(self.config.db_location) as conn:
            return await self._round(conn, stop or asyncio.Event(), new_holder())

    async def run(self, stop: asyncio.Event) -> None:
        """Send due campaigns until `stop` is set. A database or store error ends the session
        with the error, for `supervise` to record, back off and start another."""
        holder = new_holder()
        async with open_db(self.config.db_location) as conn:
            while not stop.is_set():
                await self._round(conn, stop, holder)
                self.part.succeeded(
                    last_round_at=self.clock.now().isoformat(timespec="seconds"))
                await sleep_unless_stopped(self.poll_interval_s, stop)
        log.info("campaign scheduler stopped")

    async def _round(self, conn: Connection, stop: asyncio.Event,
                     holder: Holder) -> list[SendOutcome]:
        outcomes = await send_due_campaigns(conn, self.config, stop, holder=holder,
                                            clock=self.clock)
        for outcome in outcomes:
            log.info("campaign %s: %s; %s sent, %s failed, %s skipped this run",
                     outcome.campaign_id, outcome.status, outcome.sent, outcome.failed,
                     outcome.skipped)
            if self.on_outcome is not None:
                campaign = await store.get_campaign(conn, outcome.campaign_id)
                self.on_outcome(campaign.kind if campaign else "", outcome)
        return outcomes


async def send_due_campaigns(
    conn: Connection, config: SendConfig, stop: asyncio.Event, *,
    holder: Holder | None = None, clock: Clock = SYSTEM_CLOCK,
) -> list[SendOutcome]:
    """One round: send every campaign due now, alongside any other daemon sending it (each
    claims its own batches; `campaigns.senders`)."""
    holder = holder or new_holder()
    outcomes = []
    for campaign in await store.due_campaigns(conn, utcnow()):
        if stop.is_set():
            break
        if campaign.status == "sending" and not await has_work(
                conn, campaign.id, now_s=await leases.now_s(conn, clock), me=holder):
            log.debug("campaign %s: every recipient left is with a live sender", campaign.id)
            continue
        log.info("campaign %s is due: sending", campaign.id)
        try:
            outcomes.append(await send_campaign(conn, config, campaign.id, stop=stop,
                                                on_stop="leave", holder=holder, clock=clock))
        except CampaignRefused as exc:
            log.info("campaign %s: %s", campaign.id, exc)
        except CampaignInvalid as exc:
            log.error("campaign %s cannot be sent: %s", campaign.id, exc)
            async with transaction(conn, f"campaign {campaign.id}"):
                await store.set_status(conn, campaign.id, "paused",
                                       reason=f"paused: cannot send: {exc}",
                                       paused_by="settings",
                                       expected=("scheduled", "sending"))
    return outcomes
