"""The headers every answer of both listeners carries, errors and redirects included.

- `Content-Security-Policy` (CSP Level 3): nothing loads or runs but the page's own inline
  stylesheet, allowed by its SHA-256 (`style_source`); forms post back to us only; no framing
  (clickjacking), no `<base>` tricks. An app may add sources (the console's preview frame).
- `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`.
- `Referrer-Policy: no-referrer`: the public pages' URL holds the customer's token.
- `X-Content-Type-Options: nosniff`, `Cache-Control: no-store` (pages show personal data),
  `Cross-Origin-Opener-Policy` and `Cross-Origin-Resource-Policy: same-origin`.
- `Server: mailer`: not aiohttp's and Python's versions, which only help fingerprinting.

A handler may set its own `Content-Security-Policy` or `X-Frame-Options` (the console's
sandboxed preview does); every other header is always ours.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from aiohttp import web

SERVER = "mailer"

# Headers a handler may replace for its own answer.
_HANDLER_MAY_SET = ("Content-Security-Policy", "X-Frame-Options")


def style_source(css: str) -> str:
    """The CSP source allowing exactly this inline stylesheet: `'sha256-…'`."""
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(style: str, extra: Iterable[str] = ()) -> str:
    """`default-src 'none'`, the page's stylesheet (`style_source`), and `extra` directives."""
    return "; ".join([
        "default-src 'none'", f"style-src {style}", *extra,
        "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
    ])


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }


def add_security_headers(app: web.Application, csp: str) -> None:
    """Put the headers on every answer `app` prepares (before it starts)."""
    headers = security_headers(csp)

    async def secure(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in headers.items():
            if name in _HANDLER_MAY_SET:
                response.headers.setdefault(name, value)
            else:
                response.headers[name] = value
        response.headers["Server"] = SERVER

    app.on_response_prepare.append(secure)
