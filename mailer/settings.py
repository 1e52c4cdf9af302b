"""Settings: `settings.toml` read into frozen dataclasses, one per section.

Validation is strict and happens once, at start: an unknown section or key, a value of the
wrong type or out of range, or a missing required value raises `SettingsError` whose message
is one line naming the key (`[imap] port: expected an integer, got "abc"`). Relative paths are
resolved against the folder holding the settings file, so a daemon started from any working
directory finds the same database and templates.

Passwords and the campaign secret may come from the environment instead of the file:
`MAILER_IMAP_PASSWORD`, `MAILER_SMTP_PASSWORD`, `MAILER_SECRET` (the environment wins).
"""

from __future__ import annotations

import dataclasses
import email.utils
import os
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
    dir: Path = Path("templates")


@dataclass(frozen=True)
class CampaignsSettings:
    unsubscribe_url: str = ""
    secret: str = ""
    batch_size: int = 500
    # A campaign pauses itself once this share of attempted recipients has failed
    # (after at least `failure_min_sample` attempts).
    failure_threshold: float = 0.2
    failure_min_sample: int = 50


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
    "console": ConsoleSettings,
}

_ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("imap", "password", "MAILER_IMAP_PASSWORD"),
    ("smtp", "password", "MAILER_SMTP_PASSWORD"),
    ("campaigns", "secret", "MAILER_SECRET"),
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
    built: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise SettingsError(f"[{name}]: expected a table, got {_describe(table)}")
        built[name] = _build_section(name, cls, table, base_dir)
    settings = Settings(**built, source=source)
    _check_relations(settings)
    return settings


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
    for spec in dataclasses.fields(section):
        value = getattr(section, spec.name)
        where = f"[{name}] {spec.name}"
        if spec.name == "port":
            _require(1 <= value <= 65535, where, f"expected a port from 1 to 65535, got {value}")
        elif spec.name.endswith("_s") or spec.name.endswith("_h"):
            _require(value > 0, where, f"expected a positive number, got {value}")
        elif spec.name in ("fetch_batch", "max_message_bytes", "max_connections", "max_attempts",
                           "batch_size", "failure_min_sample", "login_max_failures",
                           "max_upload_bytes"):
            _require(value >= 1, where, f"expected a positive integer, got {value}")
        elif spec.name == "rate_limit":
            _require(value >= 0, where, f"expected 0 (no limit) or more, got {value}")
        elif spec.name == "failure_threshold":
            _require(0 < value <= 1, where, f"expected a share between 0 and 1, got {value}")
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


def _check_relations(settings: Settings) -> None:
    folders = (settings.imap.folder, settings.imap.processed_folder, settings.imap.review_folder)
    _require(len(set(folders)) == 3, "[imap] processed_folder",
             "folder, processed_folder and review_folder must all differ")


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
