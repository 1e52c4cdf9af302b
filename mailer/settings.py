"""Settings: `settings.toml` read into frozen dataclasses, one per section.

Validation is strict and happens once, at start: an unknown section or key, a value of the
wrong type or out of range, or a missing required value raises `SettingsError` whose message
is one line naming the key (`[imap] port: expected an integer, got "abc"`). Relative paths are
resolved against the folder holding the settings file, so a daemon started from any working
directory finds the same database and templates.

Passwords, the campaign secret and the DKIM key may come from the environment instead of the
file: `MAILER_IMAP_PASSWORD`, `MAILER_SMTP_PASSWORD`, `MAILER_SECRET`, `MAILER_DKIM_KEY`,
`MAILER_BOUNCES_IMAP_PASSWORD` (the environment wins).

Why over 400 lines: every section's dataclass (the one place a key, its type and its default
are written) and the one validator that reads them all live together, so that the settings
file, its documentation (`settings.toml`) and its checks can be compared in one sitting.

`[bounces.imap]` is the one nested table: the optional mailbox delivery reports arrive in, with
the keys of `[imap]`, when it is not the `[imap]` mailbox.
"""

from __future__ import annotations

import dataclasses
import email.utils
import ipaddress
import os
import re
import tomllib
import types
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailer.categories import CATEGORIES
from mailer.errors import SettingsError as SettingsError

Security = Literal["tls", "starttls", "none"]
_SECURITY_VALUES = ("tls", "starttls", "none")


@dataclass(frozen=True)
class DatabaseSettings:
    path: Path = Path("mailer.db")


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
    fetch_batch: int = 200
    max_message_bytes: int = 10 * 1024 * 1024


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
    # Proxies whose X-Forwarded-For is believed (addresses or networks, e.g. "127.0.0.1").
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
    # After this many failed logins for one name or one client within login_window_s, both
    # are refused until login_lockout_s has passed.
    login_max_failures: int = 5
    login_window_s: float = 15 * 60.0
    login_lockout_s: float = 15 * 60.0
    # The zone the campaign form offers first for schedule times.
    timezone: str = "Europe/London"
    # The largest CSV a person may upload to import customers.
    max_upload_bytes: int = 64 * 1024 * 1024


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
    source: Path | None = None

    @property
    def own_addresses(self) -> frozenset[str]:
        """Addresses that are ours: mail from them is never a request (RFC 3834 loops)."""
        candidates = (self.smtp.sender, self.unsubscribe.address, self.imap.username)
        return frozenset(address_of(a) for a in candidates if "@" in a)


_SECTIONS: dict[str, type[Any]] = {
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
}

_ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("imap", "password", "MAILER_IMAP_PASSWORD"),
    ("smtp", "password", "MAILER_SMTP_PASSWORD"),
    ("campaigns", "secret", "MAILER_SECRET"),
    ("dkim", "private_key", "MAILER_DKIM_KEY"),
)


def default_path() -> Path:
    return Path(os.environ.get("MAILER_SETTINGS", "settings.toml"))


def load(path: Path, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Read and validate a settings file; raise SettingsError with one line on any problem."""
    env = os.environ if environ is None else environ
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read settings file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    return from_mapping(data, base_dir=path.parent, environ=env, source=path)


def from_mapping(
    data: typing.Mapping[str, Any],
    *,
    base_dir: Path,
    environ: typing.Mapping[str, str],
    source: Path | None = None,
) -> Settings:
    for section in data:
        if section not in _SECTIONS:
            raise SettingsError(
                f"[{section}]: unknown section (expected one of: {', '.join(_SECTIONS)})"
            )
    data = {name: dict(value) if isinstance(value, dict) else value for name, value in data.items()}
    for section, key, variable in _ENVIRONMENT:
        if environ.get(variable):
            table = data.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = environ[variable]
    bounces_imap = _pop_bounces_imap(data, environ)
    built: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise SettingsError(f"[{name}]: expected a table, got {_describe(table)}")
        built[name] = _build_section(name, cls, table, base_dir)
    if bounces_imap is not None:
        built["bounces"] = dataclasses.replace(
            built["bounces"], imap=_build_section("bounces.imap", ImapSettings, bounces_imap,
                                                  base_dir))
    settings = Settings(**built, source=source)
    _check_relations(settings)
    return settings


def _pop_bounces_imap(
    data: dict[str, Any], environ: typing.Mapping[str, str]
) -> dict[str, Any] | None:
    """Take the nested `[bounces.imap]` table out of `[bounces]`, to build it as `[imap]`."""
    bounces = data.get("bounces")
    if not isinstance(bounces, dict) or "imap" not in bounces:
        return None
    table = bounces.pop("imap")
    if not isinstance(table, dict):
        raise SettingsError(f"[bounces] imap: expected a table, got {_describe(table)}")
    table = dict(table)
    if environ.get("MAILER_BOUNCES_IMAP_PASSWORD"):
        table["password"] = environ["MAILER_BOUNCES_IMAP_PASSWORD"]
    return table


def _build_section(name: str, cls: type[Any], table: dict[str, Any], base_dir: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise SettingsError(
                f"[{name}] {key}: unknown key (expected one of: {', '.join(fields)})"
            )
    values: dict[str, Any] = {}
    for key, spec in fields.items():
        where = f"[{name}] {key}"
        if key not in table:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise SettingsError(f"{where}: missing value")
            if isinstance(spec.default, Path):  # default paths are relative to the file too
                values[key] = base_dir / spec.default
            continue
        values[key] = _convert(where, hints[key], table[key], base_dir)
    try:
        result = cls(**values)
    except TypeError as exc:  # pragma: no cover - guarded by the loop above
        raise SettingsError(f"[{name}]: {exc}") from exc
    _check_section(name, result)
    return result


def _convert(where: str, hint: Any, value: Any, base_dir: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        if value == "":
            return None
        return _convert(where, inner, value, base_dir)
    if origin is Literal:
        if value not in args:
            choices = " | ".join(f'"{a}"' for a in args)
            raise SettingsError(f"{where}: expected {choices}, got {_describe(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a string, got {_describe(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{where}: expected a path string, got {_describe(value)}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base_dir / path
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where}: expected a list of strings, got {_describe(value)}")
        return tuple(value)
    raise SettingsError(f"{where}: unsupported setting type")  # pragma: no cover


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise SettingsError(f"{where}: {message}")


def _check_section(name: str, section: Any) -> None:
    if name == "http":
        _check_http(section)
        return
    for spec in dataclasses.fields(section):
        value = getattr(section, spec.name)
        where = f"[{name}] {spec.name}"
        if spec.name == "port" and value is not None:
            _require(1 <= value <= 65535, where, f"expected a port from 1 to 65535, got {value}")
        elif spec.name.endswith("_s") or spec.name.endswith("_h"):
            _require(value > 0, where, f"expected a positive number, got {value}")
        elif spec.name in ("fetch_batch", "max_message_bytes", "max_connections", "max_attempts",
                           "batch_size", "failure_min_sample", "soft_limit", "pause_min_sample",
                           "login_max_failures", "max_upload_bytes"):
            _require(value >= 1, where, f"expected a positive integer, got {value}")
        elif spec.name == "rate_limit":
            _require(value >= 0, where, f"expected 0 (no limit) or more, got {value}")
        elif spec.name in ("failure_threshold", "pause_bounce_rate", "pause_complaint_rate"):
            _require(0 < value <= 1, where, f"expected a share between 0 and 1, got {value}")
        elif spec.name == "soft_window_days":
            _require(value > 0, where, f"expected a positive number, got {value}")
        elif spec.name in ("domain", "selector") and value:
            _require(_DNS_LABELS.fullmatch(value) is not None, where,
                     f'expected a DNS name, got "{value}"')
        elif spec.name == "address" and name == "bounces" and not value:
            continue  # no bounce address: MAIL FROM stays [smtp] sender
        elif spec.name == "address" and name == "bounces" and "+" in address_of(value):
            _require(False, where, f'expected an address without "+" (VERP adds one), '
                                   f'got "{value}"')
        elif spec.name in ("sender", "address"):
            _require(_looks_like_address(value), where,
                     f'expected an email address, got "{value}"')
        elif spec.name == "categories":
            _require(bool(value), where, "expected at least one category")
            for category in value:
                _require(category in CATEGORIES, where,
                         f'unknown category "{category}" (expected {" or ".join(CATEGORIES)})')
        elif spec.name in ("host", "subject", "folder", "processed_folder", "review_folder"):
            _require(bool(value.strip()), where, "missing value")
        elif spec.name == "unsubscribe_url" and value:
            _require(value.startswith("https://") or value.startswith("http://"), where,
                     f'expected an http(s) URL, got "{value}"')
        elif spec.name == "timezone":
            _require(_is_zone(value), where, f'unknown time zone "{value}"')
        elif spec.name == "ca_file" and value is not None:
            _require(value.is_file(), where, f"no such file: {value}")
        elif name == "templates" and spec.name == "dir" and value is not None:
            # A mistyped folder would otherwise fall back to the defaults without a word.
            _require(value.is_dir(), where, f"no such folder: {value}")


# RFC 1035 §2.3.1 labels (with `_` for selectors, which DNS itself allows).
_DNS_LABELS = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
                         r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*")


def _check_http(http: HttpSettings) -> None:
    _require(http.host == http.host.strip() and "\n" not in http.host, "[http] host",
             f'expected a host name or address, got "{http.host}"')
    _require(1 <= http.port <= 65535, "[http] port",
             f"expected a port from 1 to 65535, got {http.port}")
    for proxy in http.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError(f'[http] trusted_proxies: "{proxy}" is not an IP address or '
                                "network") from None
    _require(http.max_body_bytes >= 256, "[http] max_body_bytes",
             f"expected at least 256, got {http.max_body_bytes}")
    _require(http.rate_limit_per_min >= 0, "[http] rate_limit_per_min",
             f"expected 0 (no limit) or more, got {http.rate_limit_per_min}")
    _require(http.shutdown_timeout_s > 0, "[http] shutdown_timeout_s",
             f"expected a positive number, got {http.shutdown_timeout_s}")


def _check_relations(settings: Settings) -> None:
    folders = (settings.imap.folder, settings.imap.processed_folder, settings.imap.review_folder)
    _require(len(set(folders)) == 3, "[imap] processed_folder",
             "folder, processed_folder and review_folder must all differ")
    bounces = settings.bounces
    if bounces.address:
        if bounces.imap is None:
            _require(bounces.folder not in folders, "[bounces] folder",
                     "must differ from [imap] folder, processed_folder and review_folder")
        else:
            _require(bounces.folder != bounces.imap.folder, "[bounces] folder",
                     "must differ from [bounces.imap] folder")
        if bounces.verp:
            _require(bool(settings.campaigns.secret), "[campaigns] secret",
                     "missing value (it signs VERP addresses: [bounces] verp = true)")
    dkim = settings.dkim
    if dkim.domain:
        _require(bool(dkim.selector), "[dkim] selector", "missing value ([dkim] domain is set)")
        _require(dkim.private_key_file is not None or bool(dkim.private_key),
                 "[dkim] private_key_file", "missing value (or set MAILER_DKIM_KEY)")
    else:
        _require(not dkim.selector and dkim.private_key_file is None, "[dkim] domain",
                 "missing value ([dkim] selector or private_key_file is set)")


def address_of(value: str) -> str:
    """The bare addr-spec of `Name <addr>` or `addr`, lower-cased."""
    return email.utils.parseaddr(value)[1].lower()


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _looks_like_address(value: str) -> bool:
    if "\n" in value or "\r" in value:
        return False
    address = address_of(value)
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in address))
