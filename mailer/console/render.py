"""Rendering console pages: the templates under `console/`, through the shared plumbing
(`mailer.http.pages`: the one sandboxed Jinja2 environment of `mailer.mail.templates`, with the
`[templates] dir` override), and the stylesheet every page inlines, allowed by its SHA-256 in
the Content-Security-Policy (`style-src 'sha256-…'`): no page loads anything, not even from its
own origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.http.pages import Pages

# Checked when the console starts: a broken sign-in or error page would hide every other.
_CHECKED = ("login.html", "error.html")


@dataclass(frozen=True)
class Renderer:
    pages: Pages

    @classmethod
    def load(cls, override: Path | None = None) -> Renderer:
        return cls(Pages(override, "console", "console.css", check=_CHECKED))

    @property
    def css_hash(self) -> str:
        """The CSP source for the inline stylesheet: 'sha256-…'."""
        return self.pages.style_source

    def page(self, template: str, /, **context: Any) -> str:
        return self.pages.render(template, {"css": self.pages.style, **context})
