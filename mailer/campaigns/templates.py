"""Campaign templates: a campaign's subject and bodies, rendered per recipient.

Owns the campaign side of "what goes in this email": loading ``campaigns/NAME.txt`` (required)
and ``campaigns/NAME.html`` (optional, taken from the same folder as the text part, so that an
override folder's text-only campaign does not pick up a packaged HTML part), rendering them and
the campaign subject for one customer. Loading, the sandbox and the one-line ``TemplateError``
are `mailer.mail.templates`'; this module adds what only campaigns need.

Campaign templates extend ``base.txt`` / ``base.html``, which carry the brand and the opt-out
footer. PECR requires every marketing email to offer a simple way to opt out, so ``render``
refuses output whose parts do not contain the unsubscribe link and address.

A typo must stop a campaign at creation (``check``), not send "Dear ," to a hundred thousand
people: ``check`` renders for a sample customer with a non-ASCII name.

Per recipient: a subject that uses no variable but ``campaign`` is rendered once and reused
(``jinja2.meta`` on its source); the bodies and the opt-out check run for every recipient.

Work: a send renders in the daemon's event loop, thousands a second, so each recipient's
render is bounded (`mailer.mail.template_limits`) with a time limit of ``SEND_TIME_S``; past
it the render fails with `TemplateTooSlow`, and the sender pauses the campaign. ``check``
(run off the event loop when a campaign is created, previewed or tested) allows a render up
to a second, then refuses a template whose sample render took longer than ``SEND_TIME_S``, so
a campaign that was accepted is cheap to send.

Variables in campaign templates: ``customer.name``, ``customer.email``, ``customer.company``,
``campaign.subject`` (in the bodies: the rendered subject), ``unsubscribe_url``,
``unsubscribe_address``.
"""

import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from markupsafe import escape

from mailer.errors import TemplateError, TemplateTooSlow
from mailer.mail.templates import Limits, Sandbox, sandbox, template_error

__all__ = [
    "CampaignTemplate",
    "RenderContext",
    "RenderedCampaign",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# A recipient's render takes tens of microseconds; this is a stall, not a slow machine.
SEND_TIME_S = 0.25
_SEND_LIMITS = Limits(time_s=SEND_TIME_S)
_CHECK_LIMITS = Limits(time_s=1.0)


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
# Records of strings: the sandbox reads their fields without its generic checks.
_PLAIN: Mapping[type, frozenset[str]] = {
    kind: frozenset(f.name for f in fields(kind)) for kind in _VARIABLE_NAMES
}


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
        env: Sandbox,
        name: str,
        subject_source: str,
        subject: jinja2.Template,
        text: jinja2.Template,
        html: jinja2.Template | None,
    ) -> None:
        self.templates_dir = env.override
        self.name = name
        self.subject_source = subject_source
        self._env = env
        self._subject = subject
        self._text = text
        self._html = html
        self._text_name = f"campaigns/{name}.txt"
        self._html_name = f"campaigns/{name}.html"
        self._subject_name = self.subject_label(name)
        self._labels = {self._subject_name: self._subject_name}
        # A subject that uses nothing but ``campaign`` (``campaign.subject`` is the same for
        # every recipient) is rendered once per campaign subject, not once per recipient.
        self._subject_is_shared = _uses_only(env, subject_source, self._subject_name, {"campaign"})
        self._shared: tuple[str, str, _Campaign] | None = None  # (source, rendered, campaign)
        self._escaped_address: tuple[str, str] = ("", "")  # (address, HTML-escaped)

    @staticmethod
    def subject_label(name: str) -> str:
        """What a TemplateError's `template` is when the subject of campaign NAME is at fault."""
        return f"campaigns/{name} subject"

    @property
    def has_html(self) -> bool:
        return self._html is not None

    @classmethod
    def load(cls, templates_dir: Path | None, name: str, subject: str) -> "CampaignTemplate":
        """Compile ``campaigns/NAME.txt``, ``campaigns/NAME.html`` if present, and the subject.

        ``templates_dir`` is the override folder (``[templates] dir``), None for the packaged
        defaults only. Raises TemplateError for a syntax error or a missing file (the text
        part, or a template either part extends).
        """
        if not _NAME.fullmatch(name):
            raise template_error(
                f"campaigns/{name}", None, "a template name is letters, digits, '.', '_', '-'"
            )
        env = sandbox(templates_dir, undefined=_StrictUndefined, plain=_PLAIN,
                      limits=_SEND_LIMITS)
        text_name, html_name = f"campaigns/{name}.txt", f"campaigns/{name}.html"
        text = env.file_checked(text_name)
        # The HTML part only from the text part's own folder: a campaign is its pair of files.
        folder = env.folder_of(text)
        has_html = folder is not None and (folder / html_name).is_file()
        html = env.file_checked(html_name) if has_html else None
        return cls(
            env=env,
            name=name,
            subject_source=subject,
            subject=env.string(subject, cls.subject_label(name)),
            text=text,
            html=html,
        )

    def render(self, ctx: RenderContext, *, limits: Limits | None = None) -> RenderedCampaign:
        """The subject and bodies for one recipient (each bounded by `limits`, the send
        limits unless given).

        Raises TemplateError naming template and line for an unknown variable, a runtime
        error, a sandbox violation or a limit, and when a part lacks the opt-out link or
        address; TemplateTooSlow past the time limit.
        """
        env = self._env
        variables: dict[str, Any] = {
            "customer": _Customer(
                name=ctx.customer_name, email=ctx.customer_email, company=ctx.customer_company
            ),
            "campaign": None,
            "unsubscribe_url": ctx.unsubscribe_url,
            "unsubscribe_address": ctx.unsubscribe_address,
        }
        shared = self._shared
        if shared is not None and shared[0] == ctx.campaign_subject:
            _, subject, campaign = shared
        else:
            variables["campaign"] = _Campaign(subject=ctx.campaign_subject)
            subject = env.render(self._subject, variables, self._subject_name, self._labels,
                                 limits)
            # The bodies see the subject the recipient sees, not the template source.
            campaign = _Campaign(subject=subject)
            if self._subject_is_shared:
                self._shared = (ctx.campaign_subject, subject, campaign)
        variables["campaign"] = campaign
        text = env.render(self._text, variables, self._text_name, self._labels, limits)
        _require_opt_out(self._text_name, text, ctx.unsubscribe_url, ctx.unsubscribe_address)
        html = None
        if self._html is not None:
            html = env.render(self._html, variables, self._html_name, self._labels, limits)
            _require_opt_out(
                self._html_name,
                html,
                str(escape(ctx.unsubscribe_url)),
                self._escaped(ctx.unsubscribe_address),
            )
        return RenderedCampaign(subject=subject, text=text, html=html)

    def _escaped(self, address: str) -> str:
        # The address is the same for every recipient: escape it once.
        if self._escaped_address[0] != address:
            self._escaped_address = (address, str(escape(address)))
        return self._escaped_address[1]

    def check(self) -> None:
        """Render for a sample customer (non-ASCII name included), so that unknown variables,
        runtime errors, a missing opt-out footer and a render too slow to send are caught
        when the campaign is created. Takes up to a second: call it off the event loop."""
        started = time.monotonic()
        rendered = self.render(
            RenderContext(
                customer_name=_SAMPLE.customer_name,
                customer_email=_SAMPLE.customer_email,
                customer_company=_SAMPLE.customer_company,
                campaign_subject=self.subject_source,
                unsubscribe_url=_SAMPLE.unsubscribe_url,
                unsubscribe_address=_SAMPLE.unsubscribe_address,
            ),
            limits=_CHECK_LIMITS,
        )
        took_s = time.monotonic() - started
        if took_s > SEND_TIME_S:
            raise template_error(
                f"campaigns/{self.name}", None,
                f"rendering one message took {took_s:.2f} s, more than the {SEND_TIME_S:g} s "
                "a send allows", TemplateTooSlow)
        if not rendered.subject.strip():
            raise template_error(self._subject_name, None, "the subject renders empty")


def _uses_only(env: Sandbox, source: str, label: str, allowed: set[str]) -> bool:
    """Whether the template ``source`` reads no variable (nor global) outside ``allowed``."""
    try:
        return meta.find_undeclared_variables(env.parse(source)) <= allowed
    except jinja2.TemplateError as exc:
        raise env.translate(exc, label, {label: label}) from exc


def _require_opt_out(name: str, body: str, url: str, address: str) -> None:
    # PECR reg. 22(3)(c) and 23(b): every marketing email offers a simple way to refuse more.
    # An empty value is a caller bug that would make the check vacuous.
    if url and address and url in body and address in body:
        return
    what = "unsubscribe_url" if not url or url not in body else "unsubscribe_address"
    raise template_error(
        name, None, f"the opt-out footer is missing ({what} is not in the output)"
    )


SAMPLE_CUSTOMER_NAME = _SAMPLE.customer_name


def sample_subjects(templates_dir: Path | None, subjects: list[str]) -> list[str]:
    """Each subject line as the sample customer (the one `check` renders for) reads it, for
    people choosing among campaigns; a subject that no longer renders is shown as written.
    Subjects only (no bodies, no files); each source compiled once per process (compiling is
    most of the cost: about a millisecond a subject)."""
    return [_sample_subject(templates_dir, source) for source in subjects]


@functools.lru_cache(maxsize=1024)
def _sample_subject(templates_dir: Path | None, source: str) -> str:
    env = _sample_sandbox(templates_dir)
    variables = {
        "customer": _Customer(name=_SAMPLE.customer_name, email=_SAMPLE.customer_email,
                              company=_SAMPLE.customer_company),
        "campaign": _Campaign(subject=source),
        "unsubscribe_url": _SAMPLE.unsubscribe_url,
        "unsubscribe_address": _SAMPLE.unsubscribe_address,
    }
    try:
        return env.render(env.string(source, "subject"), variables, "subject")
    except TemplateError:
        return source


@functools.lru_cache(maxsize=8)
def _sample_sandbox(templates_dir: Path | None) -> Sandbox:
    # Rendered in the console's event loop, a list of them at a time: a subject that takes
    # more than a moment (it was checked to render quickly when created) is shown as written.
    return sandbox(templates_dir, undefined=_StrictUndefined, plain=_PLAIN,
                   limits=Limits(time_s=0.05))
