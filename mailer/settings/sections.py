"""The settings' shape: one frozen dataclass per `settings.toml` section, and `Settings`.

Each field is the one place a key, its type and its default are written; `settings.toml` in the
repository documents every one of them (tests/test_settings_documented.py holds the two
together). `SECTIONS` maps each `[section]` name to its class, in the order of the file.
Reading and checking a file is `mailer.settings.loading`'s; this module holds no I/O.
"""

from __future__ import annotations

import email.utils
import ipaddress
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailer.categories import CATEGORIES
from mailer.errors import SettingsError

Security = Literal["tls", "starttls", "none"]


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the store lives: the SQLite file `path` (the default), or `url`, a
    `postgresql://user@host:port/db` (several hosts) or `sqlite:///path` URL."""

    path: Path = Path("mailer.db")
    url: str = ""

    @property
    def location(self) -> Path | str:
        """What `store.db.open_db` takes: the SQLite file, or the PostgreSQL URL."""
        return self.url or self.path

    @property
    def engine(self) -> str:
        return "postgresql" if self.url else "sqlite"


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int = 993
    security: Security = "tls"
    username: str = ""
    password: str = ""
    ca_file: Path | None = None
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    review_folder: str = "Review"
    timeout_s: float = 30.0
    # RFC 2177 §3: servers may drop an IDLE after 30 minutes; re-issue well before that.
    idle_timeout_s: float = 25 * 60.0
    # Used when the server does not advertise IDLE, and as the pause after a failure.
    poll_interval_s: float = 30.0
    # One daemon reads the mailbox, the holder of its lease; another takes over this long
    # after the holder died without releasing it (at once on the same host).
    lease_ttl_s: float = 60.0
    fetch_batch: int = 200
    max_message_bytes: int = 10 * 1024 * 1024
    # The authserv-id (RFC 8601 section 2.5) our receiving server writes in the
    # Authentication-Results headers it adds: only those are trusted as evidence; empty, none.
    authserv_id: str = ""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    sender: str
    port: int = 587
    security: Security = "starttls"
    username: str = ""
    password: str = ""
    ca_file: Path | None = None
    timeout_s: float = 30.0
    max_connections: int = 4
    rate_limit: float = 0.0
    max_attempts: int = 5

    @property
    def sender_address(self) -> str:
        """The envelope sender (MAIL FROM): the bare address of `sender`."""
        return address_of(self.sender)


@dataclass(frozen=True)
class UnsubscribeSettings:
    address: str
    subject: str = "Unsubscribe special offers"
    categories: tuple[str, ...] = CATEGORIES
    # At most one confirmation per customer in this window.
    confirmation_interval_h: float = 24.0


@dataclass(frozen=True)
class TemplatesSettings:
    # A folder whose templates replace the packaged defaults of the same name (any subset) and
    # hold marketing's own campaigns; None (an empty value): the packaged defaults only.
    dir: Path | None = None


@dataclass(frozen=True)
class CampaignsSettings:
    unsubscribe_url: str = ""
    secret: str = ""
    batch_size: int = 500
    # A campaign pauses itself once this share of attempted recipients has failed
    # (after at least `failure_min_sample` attempts).
    failure_threshold: float = 0.2
    failure_min_sample: int = 50
    # `campaign test` copies of one campaign per UTC day: enough to check a draft, not a way
    # round the audience and the consent gate.
    test_copies_per_day: int = 20
    # Secrets used before `secret`: links in mail already sent keep working after a rotation.
    previous_secrets: tuple[str, ...] = ()

    @property
    def link_secrets(self) -> tuple[str, ...]:
        """Every secret an unsubscribe link may be signed with, the current one first."""
        return tuple(s for s in (self.secret, *self.previous_secrets) if s)


@dataclass(frozen=True)
class HttpSettings:
    """The public web listener: one-click, the preference page, /healthz and /metrics."""

    host: str = ""  # empty: `mailer run` serves no web pages
    port: int = 8080
    # Proxies whose X-Forwarded-For is believed (addresses or networks, e.g. "127.0.0.1"), by
    # this listener and the console.
    trusted_proxies: tuple[str, ...] = ()
    max_body_bytes: int = 4096
    # Requests per client address per minute (429 beyond); 0 = no limit.
    rate_limit_per_min: int = 60
    # How long a stop waits for requests in flight before closing them.
    shutdown_timeout_s: float = 10.0


@dataclass(frozen=True)
class BouncesSettings:
    # The envelope sender of everything we send (RFC 5321 §4.5.5: reports go there); empty:
    # no bounce address, MAIL FROM stays `[smtp] sender`.
    address: str = ""
    # bounces+TOKEN@domain per recipient (mailer.mail.verp), signed with `[campaigns] secret`.
    verp: bool = True
    # Where a report tied to one of our messages is moved once recorded.
    folder: str = "Bounces"
    # soft_limit soft bounces from different messages within soft_window_days: undeliverable.
    soft_limit: int = 3
    soft_window_days: float = 30.0
    # A campaign pauses itself past these rates, once it has at least pause_min_sample sent.
    pause_bounce_rate: float = 0.05
    pause_complaint_rate: float = 0.003
    pause_min_sample: int = 100
    # The mailbox reports arrive in when it is not `[imap]`'s: `[bounces.imap]`, same keys.
    imap: ImapSettings | None = None


DkimAlgorithm = Literal["rsa-sha256", "ed25519-sha256"]


@dataclass(frozen=True)
class DkimSettings:
    # Empty domain: messages are not signed.
    domain: str = ""
    selector: str = ""
    private_key_file: Path | None = None
    # The key itself (PEM for RSA, base64 seed for ed25519), normally from MAILER_DKIM_KEY.
    private_key: str = field(default="", repr=False)
    algorithm: DkimAlgorithm = "rsa-sha256"

    @property
    def enabled(self) -> bool:
        return bool(self.domain)


@dataclass(frozen=True)
class LogSettings:
    format: Literal["text", "json"] = "text"
    # Empty: info for `mailer run`, warnings only for one-shot commands.
    level: Literal["", "debug", "info", "warning", "error"] = ""


@dataclass(frozen=True)
class ConsoleSettings:
    """The marketing console: an internal listener behind a login (never the public one)."""

    # `mailer run` starts the console only when this is true; `mailer console` always does.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8026
    # A session ends after this long without a request, and in any case after session_max_s.
    session_idle_s: float = 30 * 60.0
    session_max_s: float = 12 * 3600.0
    # Set behind TLS (the cookie then carries `Secure`).
    secure_cookie: bool = False
    # One name from one client: login_max_failures attempts, then delays from 30 s doubling
    # up to login_lockout_s. One client, any names: four times as many within login_window_s,
    # then refused for login_lockout_s.
    login_max_failures: int = 5
    login_window_s: float = 15 * 60.0
    login_lockout_s: float = 15 * 60.0
    # The zone the campaign form offers first for schedule times.
    timezone: str = "Europe/London"
    # The largest CSV a person may upload to import customers.
    max_upload_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class DoctorSettings:
    """`mailer doctor`: where it asks DNS (its checks must see what receivers see)."""

    # "address" or "address:port" of recursive or authoritative servers; empty: the system's.
    nameservers: tuple[str, ...] = ()

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """(address, port) of each of `nameservers`, port 53 where none is given."""
        return tuple(parse_nameserver(value) for value in self.nameservers)


@dataclass(frozen=True)
class PrivacySettings:
    """The customer's data rights (`mailer customers export`, `erase`)."""

    # The key of the suppression list's HMAC-SHA256 of each erased address. From the
    # environment only (MAILER_SUPPRESSION_KEY): with the database it would let anyone test
    # guessed addresses against the list. Empty: erasure is refused.
    suppression_key: str = ""

    @property
    def key(self) -> bytes | None:
        return self.suppression_key.encode("utf-8") if self.suppression_key else None


@dataclass(frozen=True)
class RetentionSettings:
    """How long what is not evidence of consent is kept (`mailer retention run`, daily in
    `mailer run`); consent events themselves are kept, they are the evidence."""

    # Request emails filed in [imap] processed_folder.
    processed_mail_days: int = 400
    # Delivery reports and complaints filed in [bounces] folder.
    reports_days: int = 90
    # The client address and user agent recorded with a consent change made on the web.
    web_evidence_days: int = 400


def parse_nameserver(value: str) -> tuple[str, int]:
    """("9.9.9.9", 53) of "9.9.9.9", ("::1", 5353) of "[::1]:5353"; SettingsError naming
    `[doctor] nameservers` for anything else."""
    host, port = value, "53"
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise SettingsError(f'[doctor] nameservers: expected "address" or "address:port", '
                            f'got "{value}"')
    return host, number


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    imap: ImapSettings
    smtp: SmtpSettings
    unsubscribe: UnsubscribeSettings
    templates: TemplatesSettings = field(default_factory=TemplatesSettings)
    campaigns: CampaignsSettings = field(default_factory=CampaignsSettings)
    bounces: BouncesSettings = field(default_factory=BouncesSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    log: LogSettings = field(default_factory=LogSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    doctor: DoctorSettings = field(default_factory=DoctorSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    source: Path | None = None

    @property
    def own_addresses(self) -> frozenset[str]:
        """Addresses that are ours: mail from them is never a request (RFC 3834 loops)."""
        candidates = (self.smtp.sender, self.unsubscribe.address, self.imap.username)
        return frozenset(address_of(a) for a in candidates if "@" in a)


SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseSettings,
    "imap": ImapSettings,
    "smtp": SmtpSettings,
    "unsubscribe": UnsubscribeSettings,
    "templates": TemplatesSettings,
    "campaigns": CampaignsSettings,
    "bounces": BouncesSettings,
    "dkim": DkimSettings,
    "log": LogSettings,
    "http": HttpSettings,
    "console": ConsoleSettings,
    "doctor": DoctorSettings,
    "privacy": PrivacySettings,
    "retention": RetentionSettings,
}


def address_of(value: str) -> str:
    """The bare addr-spec of `Name <addr>` or `addr`, lower-cased."""
    return email.utils.parseaddr(value)[1].lower()



def loopback_http_url(url: str) -> bool:
    """Whether `url` is plain http:// to this machine (127.0.0.0/8, ::1, localhost): the one
    kind of http unsubscribe URL allowed, for `make playground`, whose links must open in a
    local browser. Nobody outside this machine can follow such a link, so RFC 8058's HTTPS
    requirement (which protects a link crossing the internet) has nothing to protect."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False
