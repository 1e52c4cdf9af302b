"""What the fault tests share: customers in bulk, a campaign made through the CLI, and an SMTP
sink that stamps each accepted message with the time it arrived.

The campaign is driven only through the command line and the daemon, so these tests hold
whatever the campaign code looks like inside.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.helpers import DAEMON_SECRET, run_cli
from tests.inbox.world import World
from tests.servers import SmtpSink


def knob(name: str, default: float) -> float:
    """A size of the suite that bench/soak.py turns up (MAILER_FAULT_<NAME>); CI uses the
    default."""
    return float(os.environ.get(f"MAILER_FAULT_{name}", default))


SECRET = DAEMON_SECRET  # what tests.daemon_world.daemon gives `mailer run`
CAMPAIGNS: dict[str, object] = {"unsubscribe_url": "https://imperial.test/unsubscribe",
                                "batch_size": 100}


def customer(i: int) -> str:
    return f"c{i:04d}@example.com"


def customers_csv(count: int, *, offers_off_every: int = 0) -> str:
    """c0000.. customers, all opted in to announcements; every `offers_off_every`-th one
    opted out of offers (none when 0)."""
    lines = ["name,email,announcements,offers"]
    for i in range(count):
        offers = "no" if offers_off_every and i % offers_off_every == 0 else "yes"
        lines.append(f"Customer {i:04d},{customer(i)},yes,{offers}")
    return "\n".join(lines) + "\n"


def create_offers_campaign(world: World) -> int:
    """An offers campaign due at once: the daemon sends it. `--at` refuses a time already
    past, so it is scheduled ahead and then falls due, as if while nothing ran."""
    created = run_cli(world.settings_path, "campaign", "create", "--kind", "offers",
                      "--template", "welcome-offer", "--subject", "An offer",
                      "--at", "2099-01-01T00:00:00Z", env={"MAILER_SECRET": SECRET})
    assert created.code == 0, created.stderr
    world.query("UPDATE campaigns SET scheduled_at = '2000-01-01T00:00:00.000000+00:00' "
                "WHERE id = ?", int(created.stdout))
    return int(created.stdout)


def campaign_status(world: World, campaign_id: int) -> str:
    return str(world.query("SELECT status FROM campaigns WHERE id = ?", campaign_id)[0][0])


class TimedSink(SmtpSink):
    """The SMTP sink, with `received_at[i]` the wall-clock time `messages[i]` was accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.received_at: list[float] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            # No await since the parent appended the message: the two lists stay in step.
            self.received_at.append(time.time())
        return reply

    def campaign_messages(self, since: float = 0.0) -> list[tuple[str, float]]:
        """(recipient, time accepted) of every campaign message, in the order received."""
        return [(m.rcpt_tos[0].lower(), at)
                for m, at in zip(list(self.messages), list(self.received_at), strict=False)
                if at >= since and b"\r\nX-Campaign: " in m.content]

    def confirmations(self) -> list[tuple[str, float]]:
        return [(m.rcpt_tos[0].lower(), at)
                for m, at in zip(list(self.messages), list(self.received_at), strict=False)
                if b"Auto-Submitted: auto-replied" in m.content]

    def campaign_counts(self) -> Counter[str]:
        return Counter(recipient for recipient, _ in self.campaign_messages())

