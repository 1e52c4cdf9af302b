"""The doctor's probe of the public listener: the path it GETs under the unsubscribe URL and
the body that proves mailer answered (not a proxy's page).

The doctor never posts a one-click (RFC 8058 §3.2: a POST would unsubscribe someone), so it
proves the URL's host, TLS certificate and route with this GET of a path no token can take.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# Under the unsubscribe URL's path, so whatever forwards that path forwards this one too.
PROBE_NAME = "doctor-probe"
PROBE_BODY = "mailer unsubscribe listener: ok\n"


def probe_path(prefix: str) -> str:
    """The probe's path under the public app's route prefix (`/unsubscribe`)."""
    return f"{prefix.rstrip('/')}/{PROBE_NAME}"


def probe_url(unsubscribe_url: str) -> str:
    """The probe's URL on the unsubscribe URL's scheme, host and port."""
    parts = urlsplit(unsubscribe_url)
    path = parts.path.rstrip("/") or "/unsubscribe"
    return urlunsplit((parts.scheme, parts.netloc, probe_path(path), "", ""))
