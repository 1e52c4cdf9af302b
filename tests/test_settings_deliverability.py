"""Settings for deliverability: `[bounces]` (with an optional `[bounces.imap]`) and `[dkim]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailer import settings
from mailer.errors import SettingsError

MINIMAL: dict[str, Any] = {
    "imap": {"host": "127.0.0.1"},
    "smtp": {"host": "127.0.0.1", "sender": "news@example.co.uk"},
    "unsubscribe": {"address": "unsubscribe@example.co.uk"},
    "campaigns": {"secret": "s3cret"},
}


def build(overrides: dict[str, Any], environ: dict[str, str] | None = None) -> settings.Settings:
    data: dict[str, Any] = {k: dict(v) for k, v in MINIMAL.items()}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return settings.from_mapping(data, base_dir=Path("/srv/mailer"), environ=environ or {})


def test_without_the_sections_bounces_and_dkim_are_off_with_documented_defaults() -> None:
    loaded = build({})
    assert loaded.bounces.address == ""
    assert loaded.bounces.verp is True
    assert loaded.bounces.folder == "Bounces"
    assert (loaded.bounces.soft_limit, loaded.bounces.soft_window_days) == (3, 30.0)
    assert (loaded.bounces.pause_bounce_rate, loaded.bounces.pause_complaint_rate) == (0.05, 0.003)
    assert loaded.bounces.imap is None
    assert loaded.dkim.enabled is False


def test_bounces_imap_table_is_read_with_the_keys_of_imap_and_its_own_password_variable() -> None:
    loaded = build({"bounces": {"address": "bounces@example.co.uk",
                                "imap": {"host": "imap.example.co.uk", "username": "b",
                                         "ca_file": ""}}},
                   environ={"MAILER_BOUNCES_IMAP_PASSWORD": "pw"})
    assert loaded.bounces.imap is not None
    assert loaded.bounces.imap.host == "imap.example.co.uk"
    assert loaded.bounces.imap.port == 993
    assert loaded.bounces.imap.password == "pw"
    assert loaded.imap.password == ""


def test_dkim_key_from_the_environment_and_key_file_relative_to_the_settings_file() -> None:
    loaded = build({"dkim": {"domain": "example.co.uk", "selector": "mail2026",
                             "private_key_file": "dkim.pem"}},
                   environ={"MAILER_DKIM_KEY": "KEY"})
    assert loaded.dkim.enabled
    assert loaded.dkim.private_key_file == Path("/srv/mailer/dkim.pem")
    assert loaded.dkim.private_key == "KEY"
    assert loaded.dkim.algorithm == "rsa-sha256"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bounces": {"adress": "x"}}, "[bounces] adress: unknown key"),
        ({"bounces": {"address": "not an address"}}, "[bounces] address: expected an email"),
        ({"bounces": {"address": "b+x@example.co.uk"}}, '[bounces] address: expected an address'
                                                        ' without "+"'),
        ({"bounces": {"verp": "yes"}}, '[bounces] verp: expected true or false, got "yes"'),
        ({"bounces": {"soft_limit": 0}}, "[bounces] soft_limit: expected a positive integer"),
        ({"bounces": {"soft_window_days": 0}}, "[bounces] soft_window_days: expected a positive"),
        ({"bounces": {"pause_bounce_rate": 5}}, "[bounces] pause_bounce_rate: expected a share"),
        ({"bounces": {"pause_complaint_rate": 0}}, "[bounces] pause_complaint_rate: expected a"),
        ({"bounces": {"address": "b@example.co.uk", "folder": "INBOX"}},
         "[bounces] folder: must differ from [imap] folder"),
        ({"bounces": {"address": "b@example.co.uk"}, "campaigns": {"secret": ""}},
         "[campaigns] secret: missing value (it signs VERP addresses"),
        ({"bounces": {"imap": {"port": 993}}}, "[bounces.imap] host: missing value"),
        ({"bounces": {"imap": "imap.example.co.uk"}}, "[bounces] imap: expected a table"),
        ({"dkim": {"domain": "example.co.uk"}}, "[dkim] selector: missing value"),
        ({"dkim": {"domain": "example.co.uk", "selector": "s1"}},
         "[dkim] private_key_file: missing value (or set MAILER_DKIM_KEY)"),
        ({"dkim": {"domain": "exa mple.co.uk"}}, '[dkim] domain: expected a DNS name'),
        ({"dkim": {"selector": "s1"}}, "[dkim] domain: missing value"),
        ({"dkim": {"algorithm": "rsa-sha1"}}, '[dkim] algorithm: expected "rsa-sha256" |'),
    ],
)
def test_each_mistake_is_one_line_naming_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        build(overrides)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
