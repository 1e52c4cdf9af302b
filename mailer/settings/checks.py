"""The checks a settings value passes beyond its type: ranges, formats, and relations between
keys (the three IMAP folders differ; `[dkim]` is all set or all empty). Decisions on the
built dataclasses, the only I/O being whether a named `ca_file` or templates folder exists;
each failure is one SettingsError line naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import zoneinfo
from typing import Any

from mailer.categories import CATEGORIES
from mailer.errors import SettingsError
from mailer.settings.sections import HttpSettings, Settings, address_of


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise SettingsError(f"{where}: {message}")


def check_section(name: str, section: Any) -> None:
    """The ranges and formats of one section's values (`name` as in the file)."""
    if name == "http":
        _check_http(section)
        return
    if name == "doctor":
        section.addresses()  # raises SettingsError for a value that is not an address
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
                           "login_max_failures", "max_upload_bytes", "test_copies_per_day"):
            _require(value >= 1, where, f"expected a positive integer, got {value}")
        elif spec.name == "rate_limit":
            _require(value >= 0, where, f"expected 0 (no limit) or more, got {value}")
        elif spec.name in ("failure_threshold", "pause_bounce_rate", "pause_complaint_rate"):
            _require(0 < value <= 1, where, f"expected a share between 0 and 1, got {value}")
        elif name == "retention":
            _require(value >= 1, where, f"expected a positive number of days, got {value}")
        elif spec.name == "suppression_key" and value:
            _require(len(value) >= 16, where, "expected at least 16 characters")
        elif spec.name == "authserv_id" and value:
            # RFC 8601 section 2.2: an authserv-id is a single token (a host name as a rule).
            _require(not any(ch.isspace() or ch in ';()"' for ch in value), where,
                     f'expected one word like "mx.example.co.uk", got "{value}"')
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


def check_relations(settings: Settings) -> None:
    """What must hold between keys, once every section is built."""
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
