"""The public pages (`templates/web/`) and the Content-Security-Policy that goes with them.

Rendered through the shared plumbing (`mailer.http.pages`: the one sandboxed environment of
`mailer.mail.templates`); the pages' CSS is `templates/web/style.css`, inlined and allowed by
the CSP through its SHA-256: no external resources, no inline script.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailer.http import pages
from mailer.http.headers import content_security_policy
from mailer.settings import UnsubscribeSettings

_PAGES = ("preferences", "error", "notice")


class Pages:
    """The web templates, checked once at start so a broken one stops the server at once.

    Every page may offer the other way to unsubscribe, the one the privacy policy promises:
    an email to `[unsubscribe] address` with the subject `[unsubscribe] subject` (`write_to`).
    """

    def __init__(self, templates_dir: Path | None,
                 write_to: UnsubscribeSettings | None = None) -> None:
        self._write_to: dict[str, str] = {
            "unsubscribe_address": write_to.address if write_to else "",
            "unsubscribe_subject": write_to.subject if write_to else "",
        }
        self._pages = pages.Pages(templates_dir, "web", "style.css",
                                  check=[f"{page}.html" for page in _PAGES])
        self.content_security_policy = content_security_policy(self._pages.style_source)

    def render(self, page: str, context: Mapping[str, Any]) -> str:
        """The page as HTML. Raises TemplateError naming the template for a bad variable."""
        return self._pages.render(f"{page}.html",
                                  {"style": self._pages.style, **self._write_to, **context})
