"""Rendering the web pages from `templates/web/`, and the Content-Security-Policy that goes
with them.

Pages come from the one sandboxed environment (`mailer.mail.templates.sandbox`: the shipped
templates, or the `[templates] dir` override of any of them; `.html` autoescaped, undefined
names an error). The pages' CSS is `templates/web/style.css`, put inline in a <style> element
and allowed by the CSP through its SHA-256 hash: no external resources, no inline script.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from mailer.mail.templates import sandbox

_PAGES = ("preferences", "error")
_STYLE = "web/style.css"


class Pages:
    """The web templates, loaded once at start so a broken one stops the server at once."""

    def __init__(self, templates_dir: Path | None) -> None:
        self._env = env = sandbox(templates_dir)
        try:
            style, _, _ = env.loader.get_source(env, _STYLE)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound as exc:
            raise env.not_found(_STYLE) from exc
        self._style = Markup(style)  # our own file, not input: inline it as it is
        digest = hashlib.sha256(style.encode("utf-8")).digest()
        style_hash = base64.b64encode(digest).decode("ascii")
        # CSP Level 3: nothing may load or run but the page's own style; forms post back to
        # us only; no framing (clickjacking), no <base> tricks.
        self.content_security_policy = (
            f"default-src 'none'; style-src 'sha256-{style_hash}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        self._templates: dict[str, jinja2.Template] = {}
        for page in _PAGES:
            self._templates[page] = env.file_checked(f"web/{page}.html")

    def render(self, page: str, context: Mapping[str, Any]) -> str:
        """The page as HTML. Raises TemplateError naming the template for a bad variable."""
        return self._env.render(self._templates[page], {"style": self._style, **context},
                                f"web/{page}.html")
