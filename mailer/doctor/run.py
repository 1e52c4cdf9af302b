"""Running the doctor: every check for `mailer doctor`, and the DNS and message checks the
daemon runs at start.

DNS is never a reason to stop the daemon (records change outside our control): at start the
failures are logged, one line each, and the daemon goes on.
"""

from __future__ import annotations

import logging
from datetime import datetime

from mailer.doctor.dns_checks import DkimFacts, dns_checks, domains_of
from mailer.doctor.messages import message_checks
from mailer.doctor.report import Check, Report, failed
from mailer.doctor.reputation import reputation_checks
from mailer.doctor.resolver import Resolver
from mailer.doctor.servers import server_checks
from mailer.errors import SettingsError, StoreError
from mailer.mail.dkim import Signer, load_signer
from mailer.settings import Settings

log = logging.getLogger(__name__)


async def _dns(settings: Settings, resolver: Resolver
               ) -> tuple[list[Check], DkimFacts | None]:
    signer: Signer | None = None
    key_problem: list[Check] = []
    try:
        signer = load_signer(settings.dkim)
    except SettingsError as exc:
        key_problem = [failed("dns", "DKIM private key", str(exc),
                              "point [dkim] private_key_file at the key (or set "
                              "MAILER_DKIM_KEY); `mailer dkim dns` then prints its record")]
    checks, facts = await dns_checks(resolver, settings, signer)
    return [*key_problem, *checks], facts


async def diagnose(settings: Settings, *, now: datetime | None = None) -> Report:
    """Every check: DNS, servers, messages, reputation."""
    resolver = Resolver(settings.doctor)
    dns, facts = await _dns(settings, resolver)
    servers = await server_checks(settings, resolver)
    messages = message_checks(settings, facts)
    try:
        reputation = await reputation_checks(settings.database.location,
                                             domains_of(settings).from_domain, now=now)
    except StoreError as exc:
        reputation = [failed("reputation", "Database", str(exc),
                             "check [database] path (`mailer db check`)")]
    return Report.of(dns, servers, messages, reputation)


async def startup_report(settings: Settings) -> Report:
    """The DNS and message checks, for the daemon's start: one WARNING line per failure;
    never raises for what DNS says (the daemon keeps running)."""
    dns, facts = await _dns(settings, Resolver(settings.doctor))
    report = Report.of(dns, message_checks(settings, facts))
    for check in report.failures():
        log.warning("doctor: %s failed: %s (fix: %s)", check.name, check.found, check.fix)
    log.info("doctor: %d checks at start, %d failed", len(report.checks),
             len(report.failures()))
    return report
