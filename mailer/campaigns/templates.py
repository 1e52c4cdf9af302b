"""Campaign and confirmation templates, rendered in a Jinja2 sandbox.

Owns the template side of "what goes in this email": loading ``campaigns/NAME.txt`` (required)
and ``campaigns/NAME.html`` (optional) under a templates directory, rendering them and the
campaign subject for one customer, and turning every Jinja2 failure into a one-line
``TemplateError`` that names the template, the line and the problem.

Campaign templates extend ``base.txt`` / ``base.html``, which carry the brand and the opt-out
footer. PECR requires every marketing email to offer a simple way to opt out, so ``render``
refuses output whose parts do not contain the unsubscribe link and address.

Templates are written by staff, not customers, but they still run in an immutable sandbox with
undefined variables as errors: a typo must stop a campaign at creation (``check``), not send
"Dear ," to a hundred thousand people.

Variables in campaign templates: ``customer.name``, ``customer.email``, ``customer.company``,
``campaign.subject`` (in the bodies: the rendered subject), ``unsubscribe_url``,
``unsubscribe_address``.
"""

import os
import re
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape

from mailer import errors

__all__ = [
    "CampaignTemplate",
    "RenderContext",
    "RenderedCampaign",
    "TemplateError",
    "render_confirmation",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WHITESPACE = re.compile(r"\s+")
_CONFIRMATION_SUBJECT_MAX = 200
# How a category is named to customers; others are shown with "_" and "-" as spaces.
_CATEGORY_LABELS = {"offers": "special offers"}


class TemplateError(errors.TemplateError):
    """`errors.TemplateError` with the constructors this module uses."""

    @classmethod
    def at(cls, template: str, line: int | None, problem: str) -> "TemplateError":
        where = f"template {template}" if line is None else f"template {template} line {line}"
        return cls(f"{where}: {_one_line(problem)}", template=template, line=line)

    @classmethod
    def not_found(cls, template: str, templates_dir: Path) -> "TemplateError":
        return cls(f"template {template} not found in {templates_dir}/", template=template)


@dataclass(frozen=True)
class RenderContext:
    """What one recipient's copy of a campaign is rendered from.

    ``campaign_subject`` is what ``campaign.subject`` means inside the subject template; the
    bodies see the subject as rendered for this recipient.
    """

    customer_name: str
    customer_email: str
    customer_company: str
    campaign_subject: str
    unsubscribe_url: str
    unsubscribe_address: str


@dataclass(frozen=True)
class RenderedCampaign:
    """One recipient's subject and bodies; ``html`` is None for a text-only campaign."""

    subject: str
    text: str
    html: str | None


# The objects templates see as ``customer`` and ``campaign``. Attribute access only: the
# sandbox refuses anything starting with an underscore, and there are no methods to call.
@dataclass(frozen=True, slots=True)
class _Customer:
    name: str
    email: str
    company: str


@dataclass(frozen=True, slots=True)
class _Campaign:
    subject: str


_VARIABLE_NAMES: Mapping[type, str] = {_Customer: "customer", _Campaign: "campaign"}


class _StrictUndefined(jinja2.StrictUndefined):
    """StrictUndefined that says ``'customer' has no attribute 'nmae'`` rather than naming
    this module's private classes."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner = _VARIABLE_NAMES.get(type(self._undefined_obj))
        if owner is None:
            return super()._undefined_message
        if self._undefined_hint:
            # The sandbox's "... of '_Customer' object is unsafe."
            private = f"{type(self._undefined_obj).__name__!r} object"
            return self._undefined_hint.replace(private, repr(owner))
        return f"{owner!r} has no attribute {self._undefined_name!r}"


def _environment(templates_dir: Path, *, auto_reload: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=_StrictUndefined,
        # HTML-escape in .html templates only; text parts and the subject are not HTML.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm"), default_for_string=False, default=False
        ),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=auto_reload,
    )


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _template_name(filename: str, templates_dir: Path) -> str | None:
    """``campaigns/x.txt`` for a file under the templates directory, else None."""
    root = os.path.normpath(templates_dir)
    if not filename.startswith(root + os.sep):
        return None
    return Path(os.path.relpath(filename, root)).as_posix()


def _translate(
    exc: Exception, templates_dir: Path, default: str, labels: Mapping[str, str]
) -> TemplateError:
    """One ``TemplateError`` for any failure while loading or rendering ``default``.

    ``labels`` maps the pseudo-filenames of templates compiled from strings (the subject) to
    the name to report.
    """
    if isinstance(exc, jinja2.TemplateSyntaxError):
        name = labels.get(exc.filename or "") or exc.name or default
        return TemplateError.at(name, exc.lineno, f"syntax error: {exc.message}")
    if isinstance(exc, jinja2.TemplateNotFound):
        return TemplateError.not_found(str(exc.name or default), templates_dir)
    # Jinja2 rewrites the traceback of a render failure so that frames in template code carry
    # the template's filename and line; the innermost one is where the template went wrong.
    name, line = default, None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        found = labels.get(filename) or _template_name(filename, templates_dir)
        if found is not None:
            name, line = found, lineno
    if isinstance(exc, jinja2.UndefinedError | SecurityError):
        problem = str(exc)
    else:
        problem = f"{type(exc).__name__}: {exc}"
    return TemplateError.at(name, line, problem)


def _render(
    template: jinja2.Template,
    variables: Mapping[str, Any],
    templates_dir: Path,
    name: str,
    labels: Mapping[str, str],
) -> str:
    try:
        return template.render(variables)
    except Exception as exc:
        raise _translate(exc, templates_dir, name, labels) from exc


def _get(env: jinja2.Environment, templates_dir: Path, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except Exception as exc:
        raise _translate(exc, templates_dir, name, {}) from exc


def _load(
    env: jinja2.Environment, templates_dir: Path, name: str, seen: set[str] | None = None
) -> jinja2.Template:
    """Compile ``name`` and, so that a broken or missing base fails now, what it extends."""
    seen = {name} if seen is None else seen
    template = _get(env, templates_dir, name)
    try:
        source, _, _ = env.loader.get_source(env, name) if env.loader else ("", None, None)
        parents = meta.find_referenced_templates(env.parse(source, name))
    except Exception as exc:
        raise _translate(exc, templates_dir, name, {}) from exc
    for parent in parents:
        if parent is not None and parent not in seen:
            seen.add(parent)
            _load(env, templates_dir, parent, seen)
    return template


_SAMPLE = RenderContext(
    customer_name="Zoë Ó Briain-Müller",
    customer_email="zoe.obriain@example.co.uk",
    customer_company="Brontë & Söhne Ltd",
    campaign_subject="",
    unsubscribe_url="https://imperialtelecom.example/unsubscribe/42.special_offers.c2FtcGxlLXNpZw",
    unsubscribe_address="unsubscribe@imperialtelecom.example",
)


class CampaignTemplate:
    """A campaign's subject and bodies, compiled once and rendered per recipient."""

    def __init__(
        self,
        *,
        templates_dir: Path,
        name: str,
        subject_source: str,
        subject: jinja2.Template,
        text: jinja2.Template,
        html: jinja2.Template | None,
    ) -> None:
        self.templates_dir = templates_dir
        self.name = name
        self.subject_source = subject_source
        self._subject = subject
        self._text = text
        self._html = html
        self._text_name = f"campaigns/{name}.txt"
        self._html_name = f"campaigns/{name}.html"
        self._subject_name = f"campaigns/{name} subject"
        self._labels = {self._subject_name: self._subject_name}

    @property
    def has_html(self) -> bool:
        return self._html is not None

    @classmethod
    def load(cls, templates_dir: Path, name: str, subject: str) -> "CampaignTemplate":
        """Compile ``campaigns/NAME.txt``, ``campaigns/NAME.html`` if present, and the subject.

        Raises TemplateError for a syntax error or a missing file (the text part, or a
        template either part extends).
        """
        if not _NAME.fullmatch(name):
            raise TemplateError.at(
                f"campaigns/{name}", None, "a template name is letters, digits, '.', '_', '-'"
            )
        env = _environment(templates_dir, auto_reload=False)
        text = _load(env, templates_dir, f"campaigns/{name}.txt")
        html_name = f"campaigns/{name}.html"
        html = (
            _load(env, templates_dir, html_name) if (templates_dir / html_name).is_file() else None
        )
        # Compiled under a pseudo-filename so runtime errors in the subject name it too.
        label = f"campaigns/{name} subject"
        try:
            code = env.compile(subject, name=label, filename=label)
            subject_template = env.template_class.from_code(env, code, env.make_globals(None))
        except Exception as exc:
            raise _translate(exc, templates_dir, label, {label: label}) from exc
        return cls(
            templates_dir=templates_dir,
            name=name,
            subject_source=subject,
            subject=subject_template,
            text=text,
            html=html,
        )

    def render(self, ctx: RenderContext) -> RenderedCampaign:
        """The subject and bodies for one recipient.

        Raises TemplateError naming template and line for an unknown variable, a runtime
        error or a sandbox violation, and when a part lacks the opt-out link or address.
        """
        customer = _Customer(
            name=ctx.customer_name, email=ctx.customer_email, company=ctx.customer_company
        )
        variables: dict[str, Any] = {
            "customer": customer,
            "campaign": _Campaign(subject=ctx.campaign_subject),
            "unsubscribe_url": ctx.unsubscribe_url,
            "unsubscribe_address": ctx.unsubscribe_address,
        }
        subject = _render(
            self._subject, variables, self.templates_dir, self._subject_name, self._labels
        )
        # The bodies see the subject the recipient sees, not the template source.
        variables["campaign"] = _Campaign(subject=subject)
        text = _render(self._text, variables, self.templates_dir, self._text_name, self._labels)
        self._require_opt_out(self._text_name, text, ctx.unsubscribe_url, ctx.unsubscribe_address)
        html = None
        if self._html is not None:
            html = _render(self._html, variables, self.templates_dir, self._html_name, self._labels)
            self._require_opt_out(
                self._html_name,
                html,
                str(escape(ctx.unsubscribe_url)),
                str(escape(ctx.unsubscribe_address)),
            )
        return RenderedCampaign(subject=subject, text=text, html=html)

    def check(self) -> None:
        """Render for a sample customer (non-ASCII name included), so that unknown variables,
        runtime errors and a missing opt-out footer are caught when the campaign is created."""
        rendered = self.render(
            RenderContext(
                customer_name=_SAMPLE.customer_name,
                customer_email=_SAMPLE.customer_email,
                customer_company=_SAMPLE.customer_company,
                campaign_subject=self.subject_source,
                unsubscribe_url=_SAMPLE.unsubscribe_url,
                unsubscribe_address=_SAMPLE.unsubscribe_address,
            )
        )
        if not rendered.subject.strip():
            raise TemplateError.at(self._subject_name, None, "the subject renders empty")

    @staticmethod
    def _require_opt_out(name: str, body: str, url: str, address: str) -> None:
        # PECR reg. 22(3)(c) and 23(b): every marketing email offers a simple way to refuse more.
        # An empty value is a caller bug that would make the check vacuous.
        for what, value in (("unsubscribe_url", url), ("unsubscribe_address", address)):
            if not value or value not in body:
                raise TemplateError.at(
                    name, None, f"the opt-out footer is missing ({what} is not in the output)"
                )


@lru_cache(maxsize=8)
def _confirmation_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    # Low volume: check the files for edits on each render so a running daemon picks them up.
    return _environment(templates_dir, auto_reload=True)


def _confirmation_subject(request_subject: str) -> str:
    """``Re: <their subject>`` so the confirmation threads under the request in their client."""
    subject = _one_line(request_subject)[:_CONFIRMATION_SUBJECT_MAX]
    if not subject:
        return "Your email preferences have been updated"
    if subject[:3].lower() == "re:":
        return subject
    return f"Re: {subject}"


def render_confirmation(
    templates_dir: Path, *, customer_name: str, categories: Sequence[str], request_subject: str
) -> tuple[str, str, str]:
    """(subject, text, html) of the email confirming an unsubscribe request.

    ``categories`` are the categories just turned off (``offers`` is shown as "special
    offers"). Transactional, so no opt-out footer; it says how to opt back in instead.
    """
    env = _confirmation_environment(templates_dir)
    variables = {
        "customer_name": customer_name.strip(),
        "categories": [
            _CATEGORY_LABELS.get(c, c.replace("_", " ").replace("-", " ")) for c in categories
        ],
    }
    parts = []
    for name in ("confirmation.txt", "confirmation.html"):
        template = _get(env, templates_dir, name)
        parts.append(_render(template, variables, templates_dir, name, {}))
    text, html = parts
    return _confirmation_subject(request_subject), text, html
