"""The one sandboxed Jinja2 environment: templates shipped in the package, an override folder.

Owns where templates come from, how they are compiled, and the one line a person sees when
one is broken. Confirmations, campaigns (`campaigns/templates.py`) and the web pages all load
through `sandbox()`:

- **Where from.** The defaults (base layouts, the confirmation, sample campaigns, web pages
  under ``web/``) ship inside the package as ``mailer/default_templates/``, which setuptools
  maps from the repository's top-level ``templates/`` folder (pyproject.toml); a source
  checkout or an editable install reads that folder directly. ``[templates] dir`` names an
  override folder searched first (a ``jinja2.ChoiceLoader``), so it may replace any subset of
  the defaults by name and add its own (marketing's campaigns). No override: the defaults only.
- **How.** Jinja2's ``ImmutableSandboxedEnvironment``: templates are written by staff, not
  customers, but an expression must still not reach Python internals or change the values it
  is given. Undefined variables are errors (a typo must not send "Dear ," to everyone).
  ``.html``/``.htm`` templates are autoescaped; text parts and subjects are not HTML.
- **Cost per render.** A campaign renders its parts once per recipient, so the fixed cost of a
  render is kept small without loosening a check: templates see flat globals, the cache is a
  plain dict, and ``plain`` record types (a caller's frozen records of strings) have their
  public fields read without the sandbox's generic attribute checks.
- **Work.** A render's work is bounded (`template_limits`): operations, the size of every
  value it makes, its output and its time; past a limit it stops with a `TemplateError`.
- **Errors.** Any Jinja2 failure while loading or rendering becomes one ``TemplateError`` line
  naming the template, the line when known, and the problem:
  ``template campaigns/x.txt line 4: 'customer' has no attribute 'nmae'``.

The confirmation of an unsubscribe request (``render_confirmation``) is rendered here too: it is
two fixed templates and a subject line, with nothing campaign-specific about it.
"""

from __future__ import annotations

import os
import re
import traceback
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailer.categories import label
from mailer.errors import TemplateError, TemplateTooSlow
from mailer.mail import template_limits
from mailer.mail.template_limits import Limits

__all__ = [
    "Limits",
    "Sandbox",
    "packaged_defaults",
    "render_confirmation",
    "sandbox",
    "served_css",
    "template_error",
]

_PACKAGE = Path(__file__).resolve().parents[1]  # the `mailer` package
_WHITESPACE = re.compile(r"\s+")
_CONFIRMATION_SUBJECT_MAX = 200


def packaged_defaults() -> Path:
    """The folder of the templates shipped with mailer.

    In a wheel it is ``mailer/default_templates`` (mapped from the repository's ``templates/``
    by pyproject.toml); in a source checkout or an editable install, that ``templates/`` folder
    beside the package.
    """
    installed = _PACKAGE / "default_templates"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / "templates"


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def template_error(template: str, line: int | None, problem: str,
                   kind: type[TemplateError] = TemplateError) -> TemplateError:
    """``template NAME[ line N]: problem``, on one line."""
    where = f"template {template}" if line is None else f"template {template} line {line}"
    return kind(f"{where}: {_one_line(problem)}", template=template, line=line)


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandboxed environment over the override folder (if any) and the packaged defaults.

    It knows its folders, so that errors name a template by its path under them and a
    missing one by the folder a person would put it in. Everything that can fail raises
    `TemplateError` (one line). Every render is bounded by `limits` (`template_limits`).
    """

    # Measured before they run: repetition, powers, joins and %-formatting can make values
    # far larger than their operands.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(
        self,
        override: Path | None,
        *,
        auto_reload: bool,
        undefined: type[jinja2.Undefined],
        plain: Mapping[type, frozenset[str]] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.override = override
        self.limits = limits or Limits()
        self.plain: Mapping[type, frozenset[str]] = dict(plain or {})
        for kind, fields in self.plain.items():
            if any(field.startswith("_") for field in fields):
                raise TypeError(f"{kind.__name__}: only public fields may be read directly")
        self.defaults = packaged_defaults()
        self.folders: tuple[Path, ...] = (
            (override, self.defaults) if override is not None else (self.defaults,)
        )
        super().__init__(
            loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(f) for f in self.folders]),
            undefined=undefined,
            # HTML-escape in .html templates only; text parts and subjects are not HTML.
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "htm"), default_for_string=False, default=False
            ),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=auto_reload,
            # A plain dict, not Jinja2's locked LRU: every ``{% extends %}`` looks its base up
            # in the cache on every render, and the templates are a handful of files.
            cache_size=-1,
        )
        self._budget = template_limits.budget_of(self.limits)
        self.filters = template_limits.bound_filters(self.filters, self._budget)
        # lipsum(n) writes n paragraphs of filler: nothing an email needs.
        self.globals.pop("lipsum", None)
        # Every value written out is counted (Jinja2 passes each through `finalize`).
        self.finalize = template_limits.finalize()

    # --- the hooks that bound a render's work (template_limits) ---------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return template_limits.bound_tree(super()._parse(source, name, filename))

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """A `{% for %}`'s items, each one operation (see `template_limits.bound_tree`)."""
        return template_limits.bounded_iter(self._budget(), iterable)

    def bounded(self, value: Any) -> Any:
        """A `~` concatenation's result, refused past the size limit."""
        budget = self._budget()
        budget.step()
        return template_limits.check_made(budget, value, "a ~ concatenation")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = self._budget()
        template_limits.before_binop(budget, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return template_limits.check_made(budget, result, f"the {operator} operator")

    def call(__self, __context: Context, __obj: Any,  # noqa: N805 - Jinja2's signature
             *args: Any, **kwargs: Any) -> Any:
        budget = __self._budget()
        template_limits.before_call(budget, __obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return template_limits.check_made(budget, result,
                                          f"{getattr(__obj, '__name__', 'a call')}()")

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # Jinja2 hands templates a ChainMap over the environment's globals so that globals
        # added later reach templates compiled earlier. Nothing here adds globals after the
        # sandbox is built, and every render copies the template's globals twice (into the
        # context and its key set): a flat dict makes that a C-level copy, not a Python walk.
        return dict(ChainMap(d or {}, self.globals))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute`` in a template: the sandbox's checks, except for the fields of a
        ``plain`` type (a frozen record of strings that a caller hands to templates).

        Those fields are public names holding plain values, so the sandbox would allow them
        anyway; reading them directly saves its generic checks on every variable of every
        recipient. Anything else on those objects (``__class__``, a typo) still goes through
        the sandbox and its undefined.
        """
        fields = self.plain.get(type(obj))
        if fields is not None and attribute in fields:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def folder_of(self, template: jinja2.Template) -> Path | None:
        """The folder ``template`` was loaded from (override or defaults)."""
        for folder in self.folders:
            if self._name_under(template.filename or "", folder) is not None:
                return folder
        return None

    def file(self, name: str) -> jinja2.Template:
        """The compiled template ``name`` (a path under the folders, ``/``-separated)."""
        try:
            return self.get_template(name)
        except Exception as exc:
            raise self.translate(exc, name) from exc

    def file_checked(self, name: str) -> jinja2.Template:
        """``file(name)``, having compiled what it extends, includes or imports too, so that
        a missing or broken base fails now rather than at the first render."""
        return self._file_checked(name, {name})

    def _file_checked(self, name: str, seen: set[str]) -> jinja2.Template:
        template = self.file(name)
        try:
            assert self.loader is not None
            source, _, _ = self.loader.get_source(self, name)
            parents = meta.find_referenced_templates(self.parse(source, name))
        except Exception as exc:
            raise self.translate(exc, name) from exc
        for parent in parents:
            if parent is not None and parent not in seen:
                seen.add(parent)
                self._file_checked(parent, seen)
        return template

    def string(self, source: str, label: str) -> jinja2.Template:
        """A template compiled from ``source`` (a subject line), reported as ``label``."""
        try:
            # Compiled under a pseudo-filename so runtime errors name it too.
            code = self.compile(source, name=label, filename=label)
            return self.template_class.from_code(self, code, self.make_globals(None))
        except Exception as exc:
            raise self.translate(exc, label, {label: label}) from exc

    def render(
        self,
        template: jinja2.Template,
        variables: Mapping[str, Any],
        name: str,
        labels: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> str:
        """``template`` rendered; any failure is a `TemplateError` naming template and line.

        ``labels`` maps the pseudo-filenames of templates compiled by `string` to their names;
        ``limits`` replaces the sandbox's own for this render.
        """
        token = template_limits.start(limits or self.limits)
        try:
            return template.render(variables)
        except Exception as exc:
            raise self.translate(exc, name, labels or {}) from exc
        finally:
            template_limits.end(token)

    def render_file(self, name: str, variables: Mapping[str, Any]) -> str:
        """Load and render ``name`` in one step (a web page, a confirmation part)."""
        return self.render(self.file(name), variables, name)

    def not_found(self, name: str) -> TemplateError:
        # Name the folder a person would put it in: the override folder when there is one.
        return TemplateError(f"template {name} not found in {self.folders[0]}/", template=name)

    def translate(
        self, exc: Exception, default: str, labels: Mapping[str, str] | None = None
    ) -> TemplateError:
        """One `TemplateError` for any failure while loading or rendering ``default``."""
        labels = labels or {}
        if isinstance(exc, TemplateError):
            return exc
        if isinstance(exc, jinja2.TemplateSyntaxError):
            name = labels.get(exc.filename or "") or exc.name or default
            return template_error(name, exc.lineno, f"syntax error: {exc.message}")
        if isinstance(exc, jinja2.TemplateNotFound):
            return self.not_found(str(exc.name or default))
        # Jinja2 rewrites the traceback of a render failure so that frames in template code
        # carry the template's filename and line; the innermost one is where it went wrong.
        name, line = default, None
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            found = labels.get(frame.f_code.co_filename) or self._template_name(
                frame.f_code.co_filename
            )
            if found is not None:
                name, line = found, lineno
        if isinstance(exc, jinja2.UndefinedError | SecurityError):
            problem = str(exc)
        elif isinstance(exc, RecursionError):
            problem = "macros or includes call themselves without end"
        else:
            problem = f"{type(exc).__name__}: {exc}"
        kind = TemplateTooSlow if isinstance(exc, template_limits.TooSlow) else TemplateError
        return template_error(name, line, problem, kind)

    def _template_name(self, filename: str) -> str | None:
        for folder in self.folders:
            name = self._name_under(filename, folder)
            if name is not None:
                return name
        return None

    @staticmethod
    def _name_under(filename: str, folder: Path) -> str | None:
        """``campaigns/x.txt`` for a file under ``folder``, else None."""
        root = os.path.normpath(folder)
        if not filename.startswith(root + os.sep):
            return None
        return Path(os.path.relpath(filename, root)).as_posix()


def sandbox(
    override: Path | None,
    *,
    auto_reload: bool = False,
    undefined: type[jinja2.Undefined] = jinja2.StrictUndefined,
    plain: Mapping[type, frozenset[str]] | None = None,
    limits: Limits | None = None,
) -> Sandbox:
    """A new sandbox over ``override`` (``[templates] dir``; None: the defaults only).

    ``auto_reload`` re-reads a file that changed on disk (for the long-running daemon's
    low-volume templates); ``undefined`` must be strict (a subclass may word its messages);
    ``plain`` names, per type, the public fields templates may read without the sandbox's
    generic checks (`Sandbox.getattr`); ``limits`` bound each render's work (the defaults
    suit emails; a page showing long stored text may need a larger ``size``).
    """
    if not issubclass(undefined, jinja2.StrictUndefined):
        raise TypeError("templates treat undefined variables as errors")
    return Sandbox(override, auto_reload=auto_reload, undefined=undefined, plain=plain,
                   limits=limits)


# --- the confirmation of an unsubscribe request ------------------------------------------


@lru_cache(maxsize=8)
def _confirmation_sandbox(override: Path | None) -> Sandbox:
    # Low volume: check the files for edits on each render so a running daemon picks them up.
    return sandbox(override, auto_reload=True)


def _confirmation_subject(request_subject: str) -> str:
    """``Re: <their subject>`` so the confirmation threads under the request in their client."""
    subject = _one_line(request_subject)[:_CONFIRMATION_SUBJECT_MAX]
    if not subject:
        return "Your email preferences have been updated"
    if subject[:3].lower() == "re:":
        return subject
    return f"Re: {subject}"


def render_confirmation(
    templates_dir: Path | None,
    *,
    customer_name: str,
    categories: Sequence[str],
    request_subject: str,
    preferences_url: str = "",
) -> tuple[str, str, str]:
    """(subject, text, html) of the email confirming an unsubscribe request.
    `preferences_url` is the signed link to the customer's preference page ('' when the
    public pages are not set up: the email then points to customer services).

    ``templates_dir`` is the override folder (``[templates] dir``), None for the defaults only.
    ``categories`` are the categories just turned off, named as customers know them
    (`categories.label`). Transactional, so no opt-out footer; it links to the preference
    page, the way back in.
    """
    env = _confirmation_sandbox(templates_dir)
    variables = {
        "customer_name": customer_name.strip(),
        "categories": [label(c) for c in categories],
        "preferences_url": preferences_url,
    }
    text = env.render_file("confirmation.txt", variables)
    html = env.render_file("confirmation.html", variables)
    return _confirmation_subject(request_subject), text, html


_CSS_COMMENT = re.compile(r"/\*.*?\*/\s*", re.DOTALL)


def served_css(source: str) -> str:
    """A stylesheet as the pages inline it: developer comments stripped (they are for us, not
    for customers), the rules unchanged. Our stylesheets hold no string containing ``/*``."""
    return _CSS_COMMENT.sub("", source).strip()
