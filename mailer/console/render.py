"""Rendering console pages: one sandboxed, autoescaping Jinja2 environment over the packaged
templates (`templates/console/`), and the stylesheet every page inlines.

The stylesheet is inlined once per page and allowed by its SHA-256 in the Content-Security-
Policy (`style-src 'sha256-…'`), so no page loads anything, not even from its own origin.
(When the shared template factory lands in `mailer/templates.py`, `environment` is the one
function to swap.)
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

PACKAGED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def environment(templates_dir: Path = PACKAGED_TEMPLATES) -> jinja2.Environment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir / "console")),
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
    def load(cls, templates_dir: Path = PACKAGED_TEMPLATES) -> Renderer:
        css = (templates_dir / "console" / "console.css").read_text(encoding="utf-8")
        digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode()
        return cls(environment(templates_dir), Markup(css), f"'sha256-{digest}'")

    def page(self, template: str, /, **context: Any) -> str:
        return self.env.get_template(template).render(css=self.css, **context)
