"""Settings: the example file loads, and every kind of mistake is one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailer import settings
from mailer.errors import SettingsError

ROOT = Path(__file__).resolve().parent.parent

MINIMAL: dict[str, Any] = {
    "imap": {"host": "127.0.0.1"},
    "smtp": {"host": "127.0.0.1", "sender": "news@example.co.uk"},
    "unsubscribe": {"address": "unsubscribe@example.co.uk"},
}


def build(overrides: dict[str, Any], environ: dict[str, str] | None = None) -> settings.Settings:
    data = {k: dict(v) for k, v in MINIMAL.items()}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return settings.from_mapping(data, base_dir=Path("/srv/mailer"), environ=environ or {})


def test_documented_example_file_loads() -> None:
    loaded = settings.load(ROOT / "settings.toml")
    assert loaded.unsubscribe.subject == "Unsubscribe special offers"
    assert loaded.unsubscribe.categories == ("announcements", "offers")
    assert loaded.imap.folder == "INBOX"
    assert loaded.database.path == ROOT / "mailer.db"


def test_defaults_fill_everything_but_the_required_keys() -> None:
    loaded = build({})
    assert loaded.imap.processed_folder == "Processed"
    assert loaded.imap.review_folder == "Review"
    assert loaded.smtp.max_connections == 4
    assert loaded.database.path == Path("/srv/mailer/mailer.db")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"imap": {"prot": 993}}, "[imap] prot: unknown key"),
        ({"imap": {"port": "abc"}}, '[imap] port: expected an integer, got "abc"'),
        ({"imap": {"port": 70000}}, "[imap] port: expected a port from 1 to 65535"),
        ({"imap": {"security": "ssl"}}, '[imap] security: expected "tls" | "starttls" | "none"'),
        ({"imap": {"authserv_id": "mx.example.co.uk; dkim=pass"}},
         '[imap] authserv_id: expected one word like "mx.example.co.uk"'),
        ({"smtp": {"rate_limit": -1}}, "[smtp] rate_limit: expected 0 (no limit) or more"),
        ({"unsubscribe": {"categories": ["offers", "spam"]}},
         '[unsubscribe] categories: unknown category "spam"'),
        ({"unsubscribe": {"address": "not an address"}},
         "[unsubscribe] address: expected an email address"),
        ({"mail": {"x": 1}}, "[mail]: unknown section"),
        ({"imap": {"review_folder": "INBOX"}}, "[imap] processed_folder: folder, processed_folder"),
    ],
)
def test_bad_value_names_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        build(overrides)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_missing_required_value_names_the_key() -> None:
    data = {k: dict(v) for k, v in MINIMAL.items()}
    del data["smtp"]["sender"]
    with pytest.raises(SettingsError, match=r"^\[smtp\] sender: missing value$"):
        settings.from_mapping(data, base_dir=Path("."), environ={})


def test_passwords_and_secret_come_from_the_environment() -> None:
    loaded = build(
        {"imap": {"password": "in-file"}},
        environ={"MAILER_IMAP_PASSWORD": "from-env", "MAILER_SMTP_PASSWORD": "s",
                 "MAILER_SECRET": "k"},
    )
    assert loaded.imap.password == "from-env"
    assert loaded.smtp.password == "s"
    assert loaded.campaigns.secret == "k"


def test_sender_may_carry_a_display_name_and_counts_as_our_own_address() -> None:
    loaded = build({"smtp": {"sender": "Imperial Telecom <News@Example.co.uk>"}})
    assert loaded.smtp.sender_address == "news@example.co.uk"
    assert "news@example.co.uk" in loaded.own_addresses


def test_cli_with_a_bad_settings_file_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[imap]\nhost = "x"\nport = "imap"\n[smtp]\nhost = "x"\n'
                    'sender = "a@b.co"\n[unsubscribe]\naddress = "u@b.co"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "--settings", str(path), "review", "list"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'mailer: settings: [imap] port: expected an integer, got "imap"'
    ]


def test_the_database_is_a_sqlite_file_by_default_or_at_a_url() -> None:
    assert build({}).database.location == Path("/srv/mailer/mailer.db")
    # sqlite:/// URLs are files, relative to the settings file as `path` is.
    assert build({"database": {"url": "sqlite:///data/m.db"}}).database.location == Path(
        "/srv/mailer/data/m.db")
    assert build({"database": {"url": "sqlite:////var/lib/m.db"}}).database.location == Path(
        "/var/lib/m.db")
    url = "postgresql://mailer@db.internal:5432/mailer?sslmode=verify-full"
    loaded = build({"database": {"url": url}})
    assert (loaded.database.location, loaded.database.engine) == (url, "postgresql")
    service = "postgresql://?service=mailer"
    assert build({"database": {"url": service}}).database.location == service
    # The environment wins over the file, as for the other secrets and places.
    other = "postgresql://mailer@db2.internal/mailer"
    assert build({"database": {"url": url}},
                 environ={"MAILER_DATABASE_URL": other}).database.location == other


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://db/mailer", '[database] url: expected sqlite:///path or '
                          'postgresql://user@host:port/db, got "mysql://..."'),
    ("postgresql://mailer:hunter2@db/mailer", "[database] url: holds a password; set "
     "MAILER_DATABASE_PASSWORD, a .pgpass or a libpq service instead"),
    ("postgresql:///mailer", "[database] url: names no host (postgresql://user@host:port/db, "
     "or a libpq service: postgresql://?service=NAME)"),
])
def test_a_database_url_that_cannot_be_used_is_one_line_naming_the_key(
        url: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        build({"database": {"url": url}})
    assert str(caught.value) == message
    assert "hunter2" not in str(caught.value)
