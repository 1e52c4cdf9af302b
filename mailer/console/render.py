"""Rendering console pages: the templates under `console/`, through the shared plumbing
(`mailer.http.pages`: the one sandboxed Jinja2 environment of `mailer.mail.templates`, with the
`[templates] dir` override), and the stylesheet every page inlines, allowed by its SHA-256 in
the Content-Security-Policy (`style-src 'sha256-…'`): no page loads anything, not even from its
own origin. Pages count with the `plural` and `noun` filters ("1 customer", "2 customers");
the favicon is `console/favicon.svg`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.http.pages import Pages
from mailer.wording import noun, plural

# Checked when the console starts: a broken sign-in or error page would hide every other.
_CHECKED = ("login.html", "error.html")


@dataclass(frozen=True)
class Renderer:
    pages: Pages
    favicon: bytes

    @classmethod
    def load(cls, override: Path | None = None) -> Renderer:
        pages = Pages(override, "console", "console.css", check=_CHECKED,
                      filters={"plural": plural, "noun": noun})
        return cls(pages, pages.file_text("favicon.svg").encode("utf-8"))

    @property
    def css_hash(self) -> str:
        """The CSP source for the inline stylesheet: 'sha256-…'."""
        return self.pages.style_source

    def page(self, template: str, /, **context: Any) -> str:
        return self.pages.render(template, {"css": self.pages.style, **context})
