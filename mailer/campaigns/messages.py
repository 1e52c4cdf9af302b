"""One campaign's messages: its template compiled once, then per recipient only render and
build (`mailer.mail.outgoing`), with the signed one-click link, the keyed Message-ID, the
`Feedback-ID` header and, when `[dkim]` is set, a DKIM signature.

`SendConfig` (everything a send needs, taken from the settings once) lives here too: the
messages and the sender both read it. It carries the envelope sender rule: MAIL FROM is the
recipient's VERP address under `[bounces] address` (`mailer.mail.verp`), the bare bounce address
with `verp = false`, `[smtp] sender`'s address without a bounce address; and the DKIM signer,
loaded once per send (`send_config` raises SettingsError, one line, for a bad key).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path

from mailer.backoff import CAMPAIGN_SEND, Backoff
from mailer.campaigns.model import Campaign
from mailer.campaigns.templates import CampaignTemplate, RenderContext
from mailer.errors import CampaignInvalid, TemplateError
from mailer.mail import smtp, tokens, verp
from mailer.mail.dkim import Signer, load_signer
from mailer.mail.dkim_pool import SigningPool
from mailer.mail.outgoing import CampaignHeaders, CampaignMessageBuilder, message_id
from mailer.settings import BouncesSettings, Settings, loopback_http_url
from mailer.store.db import Location


@dataclass(frozen=True)
class SendConfig:
    """Everything a campaign send needs, taken from the settings once."""

    db_location: Location
    smtp: smtp.SmtpConfig
    sender: str
    unsubscribe_address: str
    unsubscribe_url: str
    secret: str
    templates_dir: Path | None
    max_connections: int = 4
    rate_limit: float = 0.0
    max_attempts: int = 5
    batch_size: int = 500
    failure_threshold: float = 0.2
    failure_min_sample: int = 50
    lease_ttl_s: float = 20.0
    test_copies_per_day: int = 20
    retry: Backoff = CAMPAIGN_SEND
    # `[bounces]`: the envelope sender and the campaign's own pause rates.
    bounces: BouncesSettings = field(default_factory=BouncesSettings)
    signer: Signer | None = None  # `[dkim]`, loaded once

    @functools.cached_property
    def envelope_from(self) -> str:
        """MAIL FROM of a message that names no recipient (a test copy)."""
        return self.bounces.address or parseaddr(self.sender)[1] or self.sender

    def mail_from(self, campaign_id: int, customer_id: int) -> str:
        """The envelope sender of one campaign message (RFC 5321 §4.5.5: reports go there):
        its VERP address, so a bounce names the campaign and customer, forgery-proof."""
        if self.bounces.address and self.bounces.verp and self.secret:
            return verp.address(self.bounces.address,
                                verp.Tag.campaign(campaign_id, customer_id), self.secret)
        return self.envelope_from

    @functools.cached_property
    def domain(self) -> str:
        """The sender's domain: Message-IDs and the Feedback-ID's sender id."""
        address = parseaddr(self.sender)[1] or self.sender
        return address.rpartition("@")[2] or "localhost"


def send_config(settings: Settings) -> SendConfig:
    """The send settings; loads the DKIM key (SettingsError: one line naming it)."""
    s, c = settings.smtp, settings.campaigns
    return SendConfig(
        db_location=settings.database.location,
        smtp=smtp.smtp_config(settings),
        sender=s.sender,
        unsubscribe_address=settings.unsubscribe.address,
        unsubscribe_url=c.unsubscribe_url,
        secret=c.secret,
        templates_dir=settings.templates.dir,
        max_connections=s.max_connections,
        rate_limit=s.rate_limit,
        max_attempts=s.max_attempts,
        batch_size=c.batch_size,
        failure_threshold=c.failure_threshold,
        failure_min_sample=c.failure_min_sample,
        test_copies_per_day=c.test_copies_per_day,
        bounces=settings.bounces,
        signer=load_signer(settings.dkim),
    )


def require_unsubscribe(config: SendConfig) -> None:
    """Refuse to build campaign mail without what its one-click opt-out link needs."""
    if not config.secret:
        raise CampaignInvalid(
            "[campaigns] secret: missing (set MAILER_SECRET); every campaign message must "
            "carry a signed one-click unsubscribe link"
        )
    if not config.unsubscribe_url:
        raise CampaignInvalid(
            "[campaigns] unsubscribe_url: missing; every campaign message must carry a "
            "one-click unsubscribe link"
        )
    if not (config.unsubscribe_url.startswith("https://")
            or loopback_http_url(config.unsubscribe_url)):
        # RFC 8058 §3.1: the one-click URI must be HTTPS (plain http only to this machine,
        # for the local playground, where no link leaves it).
        raise CampaignInvalid(
            f'[campaigns] unsubscribe_url: one-click unsubscribe needs an https:// URL, got '
            f'"{config.unsubscribe_url}"'
        )


@dataclass(frozen=True)
class Built:
    """One recipient's message and the Message-ID it carries (recorded in the ledger)."""

    message_id: str
    data: bytes


class CampaignMessages:
    """A campaign's template compiled once; per recipient only render and build."""

    def __init__(self, campaign: Campaign, config: SendConfig, *, date: datetime) -> None:
        require_unsubscribe(config)
        try:
            self._template = CampaignTemplate.load(config.templates_dir, campaign.template,
                                                   campaign.subject)
            # The files may have changed since the campaign was created: check them again
            # now, rather than fail every recipient one by one.
            self._template.check()
        except TemplateError as exc:
            raise CampaignInvalid(f"campaign {campaign.id}: {exc}") from exc
        self._builder = CampaignMessageBuilder(
            CampaignHeaders(campaign_id=campaign.id, sender=config.sender, domain=config.domain,
                            unsubscribe_address=config.unsubscribe_address, kind=campaign.kind),
            date=date,
        )
        self._campaign_id = campaign.id
        self._domain = config.domain
        self._subject = campaign.subject
        self._kind = campaign.kind
        self._secret = config.secret
        self._base_url = config.unsubscribe_url
        self._unsubscribe_address = config.unsubscribe_address
        self._signer = config.signer

    def message_id(self, customer_id: int) -> str:
        """The Message-ID of this campaign's message to this customer, the same on retry."""
        return message_id(self._domain, secret=self._secret,
                          what=f"campaign:{self._campaign_id}:customer:{customer_id}")

    def build(self, *, customer_id: int, email: str, name: str, company: str,
              test: bool = False, sample: bool = False, sign: bool = True) -> Built:
        """One recipient's message, DKIM-signed when `[dkim]` is set (and `sign`). Raises
        TemplateError or HeaderInjection.

        A test copy gets a random Message-ID of its own: receivers drop a second message
        with the id of one they already have. Only a message that will really be sent
        carries the customer's own link: a test copy carries the campaign's test-copy link
        and a preview (`sample`) the sample link, pages that change nothing, so a preview
        cannot hand anyone the means to change a customer's consent."""
        link = tokens.unsubscribe_link(self._base_url, self._token(customer_id, test=test,
                                                                   sample=sample))
        rendered = self._template.render(RenderContext(
            customer_name=name, customer_email=email, customer_company=company,
            campaign_subject=self._subject, unsubscribe_url=link,
            unsubscribe_address=self._unsubscribe_address))
        own_id = message_id(self._domain) if test else self.message_id(customer_id)
        data = self._builder.build(message_id=own_id, to_address=email, to_name=name,
                                   rendered=rendered, unsubscribe_url=link, test=test)
        if sign and self._signer is not None:
            data = self._signer.sign(data)
        return Built(own_id, data)

    def _token(self, customer_id: int, *, test: bool, sample: bool) -> str:
        if sample:
            return tokens.SAMPLE_TOKEN
        if test:
            return tokens.token_for_test_copies(self._secret, self._campaign_id)
        return tokens.campaign_token(self._secret, customer_id, self._campaign_id)

    async def build_signed(self, *, customer_id: int, email: str, name: str, company: str,
                           signing: SigningPool | None) -> Built:
        """`build` for the sender, the signature made by `signing`'s processes (on the
        machine's other cores) when there is a pool, else here."""
        built = self.build(customer_id=customer_id, email=email, name=name, company=company,
                           sign=signing is None)
        if signing is None:
            return built
        return Built(built.message_id, await signing.sign(built.data))
