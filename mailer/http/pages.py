"""A listener's pages, rendered through the one sandboxed Jinja2 environment.

The templates are those of `mailer.mail.templates.sandbox` (the shipped ones, or the
`[templates] dir` override of any of them; `.html` autoescaped, an undefined name an error),
under the listener's own folder (`web/`, `console/`). Each page inlines the folder's stylesheet
in a <style> element, allowed by the Content-Security-Policy through its SHA-256
(`style_source`): no page loads anything, not even from its own origin, and runs no script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from mailer.http.headers import style_source
from mailer.mail.template_limits import PAGE_LIMITS
from mailer.mail.templates import Sandbox, sandbox, served_css


class Pages:
    """The templates under `folder/`, and `stylesheet` in it (served without its comments,
    which are notes for developers); the pages named in `check` are compiled (with what they
    extend) at once, so a broken one stops the listener at start. `filters` are the listener's
    own Jinja2 filters (the console's `plural`). Raises TemplateError naming the file."""

    def __init__(self, templates_dir: Path | None, folder: str, stylesheet: str,
                 check: Iterable[str] = (),
                 filters: Mapping[str, Callable[..., Any]] | None = None) -> None:
        # Our own templates over stored data (a review item's whole text): generous bounds.
        self._env: Sandbox = sandbox(templates_dir, limits=PAGE_LIMITS)
        self._env.filters.update(filters or {})
        self.folder = folder
        css = served_css(self.file_text(stylesheet))
        self.style = Markup(css)  # our own file, not input: inlined as it is
        self.style_source = style_source(css)
        for page in check:
            self._env.file_checked(f"{folder}/{page}")

    def file_text(self, name: str) -> str:
        """The text of `folder/name` as it is (a stylesheet, an icon)."""
        path = f"{self.folder}/{name}"
        try:
            text, _, _ = self._env.loader.get_source(self._env, path)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound as exc:
            raise self._env.not_found(path) from exc
        return text

    def render(self, page: str, context: Mapping[str, Any]) -> str:
        """`folder/page` as HTML. Raises TemplateError naming the template and line."""
        return self._env.render_file(f"{self.folder}/{page}", context)
