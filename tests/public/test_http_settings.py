"""The [http] section and [campaigns] previous_secrets: defaults, and one line naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailer.errors import SettingsError
from mailer.settings import from_mapping
from tests.campaigns.world import SECRET, settings_mapping


def load(tmp_path: Path, **overrides: dict[str, Any]) -> Any:
    (tmp_path / "templates").mkdir(exist_ok=True)
    return from_mapping(settings_mapping(tmp_path, 25, **overrides), base_dir=tmp_path,
                        environ={})


def test_without_an_http_section_no_web_server_is_configured(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings.http.host == ""
    assert settings.http.port == 8080
    assert settings.campaigns.previous_secrets == ()


def test_http_section_and_previous_secrets_are_read(tmp_path: Path) -> None:
    settings = load(tmp_path, http={"host": "127.0.0.1", "port": 8081,
                                    "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]},
                    campaigns={"previous_secrets": ["old-1", ""]})

    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8081)
    assert settings.http.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    assert settings.campaigns.link_secrets == (SECRET, "old-1")


@pytest.mark.parametrize(("http", "message"), [
    ({"port": 0}, r"\[http\] port: expected a port from 1 to 65535, got 0"),
    ({"port": "80"}, r"\[http\] port: expected an integer"),
    ({"trusted_proxies": ["proxy.local"]}, r'\[http\] trusted_proxies: "proxy.local" is not'),
    ({"max_body_bytes": 10}, r"\[http\] max_body_bytes: expected at least 256"),
    ({"rate_limit_per_min": -1}, r"\[http\] rate_limit_per_min"),
    ({"shutdown_timeout_s": 0}, r"\[http\] shutdown_timeout_s"),
    ({"hots": "x"}, r"\[http\] hots: unknown key"),
])
def test_a_bad_http_value_is_one_line_naming_the_key(
    tmp_path: Path, http: dict[str, Any], message: str,
) -> None:
    with pytest.raises(SettingsError, match=message):
        load(tmp_path, http=http)
