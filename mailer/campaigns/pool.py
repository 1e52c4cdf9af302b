"""The campaign sender's transport: pooled SMTP connections and pacing.

- `Connection`: one long-lived SMTP connection that many messages go through one at a time,
  (re)opened on demand with the retry policy's backoff. After a 4xx, a drop or a timeout its
  state is unknown, so it is dropped (a polite QUIT could wait on a stuck server) and the
  next message opens a fresh one.
- `RateLimiter`: a token bucket shared by every connection (`[smtp] rate_limit` messages a
  second); its arithmetic reads a `Clock`, so it is tested by moving time.
- `first`, `sleep_unless`: waiting that a stopping run cuts short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailer.backoff import Backoff
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import TransientSmtpError
from mailer.mail import smtp

log = logging.getLogger(__name__)


class RateLimiter:
    """A token bucket: `rate_per_s` messages a second, bursts of `burst`; a rate of 0 means
    no limit."""

    def __init__(self, rate_per_s: float, burst: float = 1.0, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._rate = rate_per_s
        self._burst = max(burst, 1.0)
        self._tokens = self._burst
        self._clock = clock
        self._updated = clock.monotonic()

    @property
    def limited(self) -> bool:
        return self._rate > 0

    @property
    def rate_per_s(self) -> float:
        return self._rate

    def set_rate(self, rate_per_s: float) -> None:
        """Change the rate from now on (tokens already earned are kept, up to the burst)."""
        now = self._clock.monotonic()
        if self._rate > 0:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._rate = rate_per_s

    def reserve(self) -> float:
        """Take the next token; how long to wait before using it (0: at once). Tokens taken
        ahead of time are owed, so concurrent callers queue one interval apart."""
        if self._rate <= 0:
            return 0.0
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


def rate_share(campaign_rate_per_s: float, live_senders: int) -> float:
    """One sender's share of a campaign's rate limit when `live_senders` send it (0: no
    limit). Each sender counts the live sender leases at every renewal, so the whole campaign
    keeps to its limit; a sender that has just joined or died shifts the shares at the next
    renewal (a quarter of the lease time): meanwhile a newcomer adds one share too many, and a
    sender that died leaves the others slower until its lease expires."""
    if campaign_rate_per_s <= 0:
        return 0.0
    return campaign_rate_per_s / max(live_senders, 1)


class Connection:
    """One pooled SMTP connection (`index` names it in logs)."""

    def __init__(self, config: smtp.SmtpConfig, index: int) -> None:
        self.config = config
        self.index = index
        self.client: smtp.Session | None = None

    async def open(self, *, retry: Backoff, max_attempts: int, halted: asyncio.Event,
                   what: str) -> smtp.Session | None:
        """The open connection, (re)opened with backoff; None if `halted` is set meanwhile.

        Raises PermanentSmtpError (refused: do not retry) or TransientSmtpError once
        `max_attempts` attempts failed."""
        attempt = 0
        while self.client is None:
            if halted.is_set():
                return None
            attempt += 1
            try:
                async with asyncio.timeout(self.config.timeout_s * 2):
                    self.client = await smtp.connect(self.config)
            except TimeoutError as exc:
                failure = TransientSmtpError(
                    f"SMTP {self.config.host}:{self.config.port}: connect timed out")
                if attempt >= max_attempts:
                    raise failure from exc
                delay = retry.delay_s(attempt)
                log.warning("%s connection %s: %s; retrying in %.1f s", what, self.index,
                            failure, delay)
                await sleep_unless(halted, delay)
            except TransientSmtpError as exc:
                if attempt >= max_attempts:
                    raise
                delay = retry.delay_s(attempt)
                log.warning("%s connection %s: %s; retrying in %.1f s", what, self.index,
                            exc, delay)
                await sleep_unless(halted, delay)
        return self.client

    async def send(self, sender: str, recipient: str, message: bytes,
                   before_data: smtp.BeforeData | None = None) -> str | None:
        """One message to one recipient over the open connection; the server's reply, or
        None if `before_data` withdrew it (nothing was delivered).

        A transient failure drops the connection before it is raised."""
        assert self.client is not None
        try:
            # Each exchange (the commands, then the message) is timed out on its own.
            reply = await self.client.send_held(sender, recipient, message,
                                                self.config.timeout_s, before_data)
            if self.client.dropped:
                self.drop()  # a message withdrawn after the server's 354 ends the connection
            return reply
        except TransientSmtpError:
            self.drop()
            raise
        except TimeoutError as exc:
            self.drop()
            raise TransientSmtpError(f"SMTP to <{recipient}>: timed out") from exc

    def drop(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            client.drop()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()


async def first(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def sleep_unless(event: asyncio.Event, delay_s: float) -> None:
    """Sleep `delay_s`, or less if `event` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay_s):
            await event.wait()
