"""Reading `settings.toml` into the dataclasses of `mailer.settings.sections`.

Validation is strict and happens once, at start: an unknown section or key, a value of the
wrong type or out of range, or a missing required value raises `SettingsError` whose message
is one line naming the key (`[imap] port: expected an integer, got "abc"`). Types are checked
here, against each field's annotation; ranges and relations between keys in
`mailer.settings.checks`. Relative paths are resolved against the folder holding the settings
file, so a daemon started from any working directory finds the same database and templates.

Passwords, the campaign secret and the DKIM key may come from the environment instead of the
file: `MAILER_IMAP_PASSWORD`, `MAILER_SMTP_PASSWORD`, `MAILER_SECRET`, `MAILER_DKIM_KEY`,
`MAILER_BOUNCES_IMAP_PASSWORD` (the environment wins); the suppression key only from the
environment (`MAILER_SUPPRESSION_KEY`). `MAILER_DATABASE_URL` overrides `[database] url`; the
PostgreSQL password comes from `MAILER_DATABASE_PASSWORD` (read by the store), a `.pgpass`
or a libpq service, never from the file.

`[bounces.imap]` is the one nested table: the optional mailbox delivery reports arrive in, with
the keys of `[imap]`, when it is not the `[imap]` mailbox.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from mailer.errors import SettingsError
from mailer.settings.checks import check_relations, check_section
from mailer.settings.sections import SECTIONS, DatabaseSettings, ImapSettings, Settings

_ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("imap", "password", "MAILER_IMAP_PASSWORD"),
    ("smtp", "password", "MAILER_SMTP_PASSWORD"),
    ("campaigns", "secret", "MAILER_SECRET"),
    ("dkim", "private_key", "MAILER_DKIM_KEY"),
    ("privacy", "suppression_key", "MAILER_SUPPRESSION_KEY"),
    ("database", "url", "MAILER_DATABASE_URL"),
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
        if section not in SECTIONS:
            raise SettingsError(
                f"[{section}]: unknown section (expected one of: {', '.join(SECTIONS)})"
            )
    data = {name: dict(value) if isinstance(value, dict) else value for name, value in data.items()}
    privacy = data.get("privacy")
    if isinstance(privacy, dict) and "suppression_key" in privacy:
        raise SettingsError("[privacy] suppression_key: set it in the environment "
                            "(MAILER_SUPPRESSION_KEY), never in the settings file")
    for section, key, variable in _ENVIRONMENT:
        if environ.get(variable):
            table = data.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = environ[variable]
    bounces_imap = _pop_bounces_imap(data, environ)
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise SettingsError(f"[{name}]: expected a table, got {_describe(table)}")
        built[name] = _build_section(name, cls, table, base_dir)
    built["database"] = _database(built["database"], base_dir)
    if bounces_imap is not None:
        built["bounces"] = dataclasses.replace(
            built["bounces"], imap=_build_section("bounces.imap", ImapSettings, bounces_imap,
                                                  base_dir))
    settings = Settings(**built, source=source)
    check_relations(settings)
    return settings


def _database(database: DatabaseSettings, base_dir: Path) -> DatabaseSettings:
    """A `sqlite:///` URL becomes `path` (relative to the settings file, as `path` is); a
    PostgreSQL URL stays `url`. Anything else, or a password written into the URL, is
    refused with the key named."""
    url = database.url.strip()
    if not url:
        return database
    if url.startswith("sqlite:///"):
        path = Path(unquote(url.removeprefix("sqlite:///")) or "mailer.db")
        return dataclasses.replace(database, url="", path=base_dir / path)
    if not url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"[database] url: expected sqlite:///path or "
                            f"postgresql://user@host:port/db, got \"{url.split('://')[0]}://...\"")
    parts = urlsplit(url)
    if parts.password:
        raise SettingsError("[database] url: holds a password; set MAILER_DATABASE_PASSWORD, "
                            "a .pgpass or a libpq service instead")
    if not parts.hostname and "host=" not in parts.query and "service=" not in parts.query:
        raise SettingsError("[database] url: names no host (postgresql://user@host:port/db, "
                            "or a libpq service: postgresql://?service=NAME)")
    return dataclasses.replace(database, url=url)


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
    check_section(name, result)
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
