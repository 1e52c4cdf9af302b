"""Rendering console pages: a sandboxed, autoescaping Jinja2 environment over `console/` in
the `[templates] dir` override folder (if any) and the shipped templates (the same folders as
`mailer.mail.templates`), and the stylesheet every page inlines.

The stylesheet is inlined once per page and allowed by its SHA-256 in the Content-Security-
Policy (`style-src 'sha256-…'`), so no page loads anything, not even from its own origin.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from mailer.mail.templates import packaged_defaults


def environment(override: Path | None = None) -> jinja2.Environment:
    folders = [f / "console" for f in (override, packaged_defaults()) if f is not None]
    return ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(f)) for f in folders]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class Renderer:
    env: jinja2.Environment
    css: Markup
    css_hash: str  # the CSP source for the inline stylesheet: 'sha256-…'

    @classmethod
    def load(cls, override: Path | None = None) -> Renderer:
        env = environment(override)
        assert env.loader is not None
        css, _, _ = env.loader.get_source(env, "console.css")
        digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode()
        return cls(env, Markup(css), f"'sha256-{digest}'")

    def page(self, template: str, /, **context: Any) -> str:
        return self.env.get_template(template).render(css=self.css, **context)
