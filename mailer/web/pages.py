"""Rendering the web pages from `templates/web/`, and the Content-Security-Policy that goes
with them.

`environment` is the one place a Jinja2 environment is made for the web pages (autoescaped,
strict about undefined names), so it can be swapped for the shared one in a single edit. The
pages' CSS is `templates/web/style.css`, put inline in a <style> element and allowed by the
CSP through its SHA-256 hash: no external resources, no inline script, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from mailer.errors import TemplateError

_PAGES = ("preferences", "error")
_STYLE = "web/style.css"


def environment(templates_dir: Path) -> jinja2.Environment:
    """The Jinja2 environment of the web pages: templates from `[templates] dir`, every value
    autoescaped, a misspelt variable an error rather than an empty string."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )


class Pages:
    """The web templates, loaded once at start so a broken one stops the server at once."""

    def __init__(self, templates_dir: Path) -> None:
        env = environment(templates_dir)
        try:
            style, _, _ = env.loader.get_source(env, _STYLE)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {_STYLE}: not found in {templates_dir}",
                                template=_STYLE) from exc
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
            name = f"web/{page}.html"
            try:
                self._templates[page] = env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"template {name} line {exc.lineno}: {exc.message}",
                                    template=name, line=exc.lineno) from exc
            except jinja2.TemplateNotFound as exc:
                raise TemplateError(f"template {name}: not found in {templates_dir}",
                                    template=name) from exc

    def render(self, page: str, context: Mapping[str, Any]) -> str:
        """The page as HTML. Raises TemplateError naming the template for a bad variable."""
        name = f"web/{page}.html"
        try:
            return self._templates[page].render(style=self._style, **context)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {name}: {exc}", template=name) from exc
