"""Start-up checks: what cannot succeed by waiting is refused before a long-running command
starts, as one line naming the settings key and exit 2 (`SettingsError`, `TemplateError`).

The daemon retries only what waiting can mend (a server down, the database locked, the disk
full); a weak secret, a plain-http unsubscribe link, a template or DKIM key it cannot read
would fail on every retry, so they are found here, once, and systemd is told not to restart
on exit 2 (`RestartPreventExitStatus=2` in deploy/mailer.service). Unknown sections and keys
and values of the wrong type were refused already when the settings were loaded.

    daemon   `mailer run`: the secret, the unsubscribe URL, the templates, the DKIM key
    web      `mailer web`: [http] host, the secret, the unsubscribe URL
    console  `mailer console`: the templates (previews render them)
    outbox   `mailer inbox process`: the templates and the DKIM key (confirmations)

`secret_problem` is a pure decision, tested on values alone.
"""

from __future__ import annotations

import math
import os
from collections import Counter

from mailer.errors import SettingsError
from mailer.settings import Settings, loopback_http_url

# An HMAC-SHA256 key should hold as much entropy as the hash's output (RFC 2104 §3: keys
# shorter than the output length are discouraged): 32 random bytes, e.g. `mailer init`'s
# 43 characters of URL-safe base64 or 64 hex digits.
MIN_SECRET_BYTES = 32
# What the characters of the secret itself show at the least; random URL-safe base64 of 32
# bytes shows about 200 bits and 64 random hex digits about 240.
MIN_SECRET_BITS = 128
_SECRET_KEY = "[campaigns] secret"
_HOW = "`mailer init` writes one to ./secret"


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign unsubscribe links and VERP addresses, or None if it can."""
    if not secret:
        return f"missing value (set MAILER_SECRET; {_HOW})"
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        return f"too short ({size} bytes); use at least {MIN_SECRET_BYTES} random bytes ({_HOW})"
    if _repeats(secret) or _shown_bits(secret) < MIN_SECRET_BITS:
        return f"too predictable (repeated, or few different characters); {_HOW}"
    return None


def _repeats(text: str) -> bool:
    """True if `text` is a shorter piece written again and again ("abcabcabc...")."""
    return text in (text + text)[1:-1]


def _shown_bits(text: str) -> float:
    """The entropy the text's own characters show (Shannon, per character, times length):
    a low estimate for a random string, and near zero for `aaaa...` or `abab...`."""
    counts = Counter(text)
    per_char = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return per_char * len(text)


def check_secret(settings: Settings) -> None:
    problem = secret_problem(settings.campaigns.secret)
    if problem is not None:
        raise SettingsError(f"{_SECRET_KEY}: {problem}")


def check_unsubscribe_url(settings: Settings) -> None:
    """An unsubscribe URL, when set, is https (RFC 8058 §3.1: the one-click URI MUST be
    HTTPS), or plain http to this machine (`make playground`: no link leaves it); without one,
    campaigns wait, paused, for it (and `mailer status` warns)."""
    url = settings.campaigns.unsubscribe_url
    if url and not (url.startswith("https://") or loopback_http_url(url)):
        raise SettingsError(f'[campaigns] unsubscribe_url: one-click unsubscribe needs an '
                            f'https:// URL (RFC 8058), got "{url}"')


def check_templates(settings: Settings) -> None:
    """The templates folder can be read and the confirmation renders (TemplateError naming
    the file and line otherwise)."""
    folder = settings.templates.dir
    if folder is not None and not os.access(folder, os.R_OK | os.X_OK):
        raise SettingsError(f"[templates] dir: cannot read the folder {folder}")
    from mailer.mail.templates import render_confirmation

    try:
        render_confirmation(folder, customer_name="Ann Example",
                            categories=("announcements", "offers"),
                            request_subject="Unsubscribe special offers")
    except OSError as exc:
        raise SettingsError(f"[templates] dir: cannot read {exc.filename}: "
                            f"{exc.strerror}") from exc


def check_dkim(settings: Settings) -> None:
    """The DKIM key, when `[dkim]` is set, can be read and signs (SettingsError naming it)."""
    from mailer.mail.dkim import load_signer

    load_signer(settings.dkim)


def check_http(settings: Settings) -> None:
    if not settings.http.host:
        raise SettingsError("[http] host: missing value (`mailer web` needs [http] host and "
                            "port)")


def daemon(settings: Settings) -> None:
    """Everything `mailer run` needs that waiting cannot bring."""
    check_secret(settings)
    check_unsubscribe_url(settings)
    check_templates(settings)
    check_dkim(settings)


def web(settings: Settings) -> None:
    """Everything `mailer web` needs: where to listen, and the secret its links are signed
    with."""
    check_http(settings)
    check_secret(settings)
    check_unsubscribe_url(settings)


def console(settings: Settings) -> None:
    """Everything `mailer console` needs beyond its settings: templates for the previews."""
    check_templates(settings)


def outbox(settings: Settings) -> None:
    """What sending confirmations needs: the template and the DKIM key."""
    check_templates(settings)
    check_dkim(settings)
