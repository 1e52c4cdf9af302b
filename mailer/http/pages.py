"""A listener's pages, rendered through the one sandboxed Jinja2 environment.

The templates are those of `mailer.mail.templates.sandbox` (the shipped ones, or the
`[templates] dir` override of any of them; `.html` autoescaped, an undefined name an error),
under the listener's own folder (`web/`, `console/`). Each page inlines the folder's stylesheet
in a <style> element, allowed by the Content-Security-Policy through its SHA-256
(`style_source`): no page loads anything, not even from its own origin, and runs no script.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from mailer.http.headers import style_source
from mailer.mail.templates import Sandbox, sandbox


class Pages:
    """The templates under `folder/`, and `stylesheet` in it; the pages named in `check` are
    compiled (with what they extend) at once, so a broken one stops the listener at start.
    Raises TemplateError naming the file."""

    def __init__(self, templates_dir: Path | None, folder: str, stylesheet: str,
                 check: Iterable[str] = ()) -> None:
        self._env: Sandbox = sandbox(templates_dir)
        self.folder = folder
        name = f"{folder}/{stylesheet}"
        try:
            css, _, _ = self._env.loader.get_source(self._env, name)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound as exc:
            raise self._env.not_found(name) from exc
        self.style = Markup(css)  # our own file, not input: inlined as it is
        self.style_source = style_source(css)
        for page in check:
            self._env.file_checked(f"{folder}/{page}")

    def render(self, page: str, context: Mapping[str, Any]) -> str:
        """`folder/page` as HTML. Raises TemplateError naming the template and line."""
        return self._env.render_file(f"{self.folder}/{page}", context)
