"""The one template sandbox: packaged defaults, an override folder replacing any subset of them,
autoescaped HTML pages, one-line errors; and the `[templates] dir` setting that names the folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest

from mailer.campaigns.templates import CampaignTemplate, RenderContext
from mailer.errors import SettingsError, TemplateError
from mailer.mail.templates import packaged_defaults, render_confirmation, sandbox
from mailer.settings import from_mapping, load
from tests.helpers import ROOT, base_sections, write_settings

URL = "https://imperial.example/u/42.offers.AbCdEfGhIjKlMnOpQrStUv"
ADDRESS = "unsubscribe@imperial.example"


def _context() -> RenderContext:
    return RenderContext(customer_name="Alice Smith", customer_email="alice@example.com",
                         customer_company="Acme Ltd", campaign_subject="Offer",
                         unsubscribe_url=URL, unsubscribe_address=ADDRESS)


def _write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# Where templates come from ------------------------------------------------------------------


def test_in_a_source_checkout_the_packaged_defaults_are_the_repository_templates_folder() -> None:
    assert packaged_defaults() == ROOT / "templates"


def test_without_an_override_folder_confirmation_and_sample_campaigns_render() -> None:
    subject, text, html = render_confirmation(
        None, customer_name="Ann", categories=["offers"], request_subject="stop")
    campaign = CampaignTemplate.load(None, "welcome-offer", "Hi {{ customer.name }}")
    campaign.check()

    assert subject == "Re: stop"
    assert "Dear Ann," in text and "special offers" in html
    assert campaign.render(_context()).subject == "Hi Alice Smith"


def test_override_folder_replaces_only_the_templates_it_holds(tmp_path: Path) -> None:
    _write(tmp_path, "confirmation.txt",
           '{% extends "base.txt" %}{% block content %}Ours, {{ customer_name }}.{% endblock %}'
           "{% block footer %}{% endblock %}")

    _, text, html = render_confirmation(
        tmp_path, customer_name="Ann", categories=["offers"], request_subject="stop")

    assert text.startswith("Ours, Ann.")
    assert "Imperial Telecom Ltd" in text  # base.txt: not in the folder, so the packaged one
    assert "Dear Ann," in html  # confirmation.html: the packaged one


def test_marketing_campaign_in_the_override_folder_extends_the_packaged_base(
    tmp_path: Path,
) -> None:
    _write(tmp_path, "campaigns/spring.txt",
           '{% extends "base.txt" %}{% block content %}Spring, {{ customer.name }}!{% endblock %}')

    template = CampaignTemplate.load(tmp_path, "spring", "Spring offer")
    rendered = template.render(_context())

    assert rendered.text.startswith("Spring, Alice Smith!")
    assert URL in rendered.text and ADDRESS in rendered.text


def test_campaign_html_part_comes_only_from_the_folder_of_its_text_part(tmp_path: Path) -> None:
    # The packaged welcome-offer has an HTML part; the override's text-only version has not.
    _write(tmp_path, "campaigns/welcome-offer.txt",
           '{% extends "base.txt" %}{% block content %}Plain only.{% endblock %}')

    template = CampaignTemplate.load(tmp_path, "welcome-offer", "Offer")

    assert not template.has_html
    assert template.render(_context()).text.startswith("Plain only.")


def test_missing_template_without_override_names_the_packaged_folder() -> None:
    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(None, "nope", "Offer")

    assert str(excinfo.value) == (
        f"template campaigns/nope.txt not found in {packaged_defaults()}/"
    )


def test_error_in_a_packaged_template_names_it_by_its_name_and_line(tmp_path: Path) -> None:
    # An override base that calls an unknown variable: the error names base.txt, not a path.
    _write(tmp_path, "base.txt", "{% block content %}{% endblock %}\n{{ no_such_thing }}\n")

    with pytest.raises(TemplateError) as excinfo:
        render_confirmation(tmp_path, customer_name="A", categories=[], request_subject="s")

    assert str(excinfo.value) == "template base.txt line 2: 'no_such_thing' is undefined"


# Web pages ---------------------------------------------------------------------------------


def test_html_page_is_autoescaped_and_text_is_not(tmp_path: Path) -> None:
    _write(tmp_path, "web/page.html", "<p>{{ name }}</p>\n")
    _write(tmp_path, "web/page.txt", "{{ name }}\n")
    env = sandbox(tmp_path)

    assert env.render_file("web/page.html", {"name": "<b>Bob</b>"}) == (
        "<p>&lt;b&gt;Bob&lt;/b&gt;</p>\n"
    )
    assert env.render_file("web/page.txt", {"name": "<b>Bob</b>"}) == "<b>Bob</b>\n"


def test_html_page_errors_are_one_line_naming_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, "web/page.html", "<h1>Hello</h1>\n<p>{{ customer.nmae }}</p>\n")

    with pytest.raises(TemplateError) as excinfo:
        sandbox(tmp_path).render_file("web/page.html", {"customer": {}})

    assert str(excinfo.value) == (
        "template web/page.html line 2: 'dict object' has no attribute 'nmae'"
    )
    assert (excinfo.value.template, excinfo.value.line) == ("web/page.html", 2)


def test_html_page_cannot_reach_python_internals(tmp_path: Path) -> None:
    _write(tmp_path, "web/page.html", "{{ ''.__class__.__mro__ }}\n")

    with pytest.raises(TemplateError, match=r"^template web/page\.html line 1: access to"):
        sandbox(tmp_path).render_file("web/page.html", {})


@dataclass(frozen=True, slots=True)
class _Record:
    name: str


def test_a_plain_record_reads_its_fields_but_still_refuses_its_internals(tmp_path: Path) -> None:
    _write(tmp_path, "web/page.html", "{{ r.name }}|{{ r.__class__ }}\n")
    _write(tmp_path, "web/typo.html", "{{ r.nmae }}\n")
    env = sandbox(tmp_path, plain={_Record: frozenset({"name"})})
    assert env.render(env.string("{{ r.name }}", "s"), {"r": _Record("Zoë")}, "s") == "Zoë"

    with pytest.raises(TemplateError, match=r"^template web/page\.html line 1: access to"):
        env.render_file("web/page.html", {"r": _Record("Zoë")})
    with pytest.raises(TemplateError, match=r"^template web/typo\.html line 1: .*'nmae'"):
        env.render_file("web/typo.html", {"r": _Record("Zoë")})


def test_a_plain_record_may_not_name_a_private_field() -> None:
    with pytest.raises(TypeError):
        sandbox(None, plain={_Record: frozenset({"_secret"})})


def test_templates_still_see_the_jinja_globals() -> None:
    env = sandbox(None)

    assert env.render(env.string("{{ range(3) | join(',') }}", "s"), {}, "s") == "0,1,2"


def test_the_sandbox_never_lets_an_undefined_variable_render_empty() -> None:
    with pytest.raises(TypeError):
        sandbox(None, undefined=jinja2.Undefined)


# The setting --------------------------------------------------------------------------------


def test_empty_templates_dir_means_the_packaged_defaults_only(tmp_path: Path) -> None:
    settings = from_mapping(base_sections(tmp_path, templates={"dir": ""}), base_dir=tmp_path,
                            environ={})
    assert settings.templates.dir is None

    sections = base_sections(tmp_path)
    del sections["templates"]
    assert from_mapping(sections, base_dir=tmp_path, environ={}).templates.dir is None


def test_relative_templates_dir_resolves_against_the_settings_file(tmp_path: Path) -> None:
    (tmp_path / "site" / "ours").mkdir(parents=True)
    path = write_settings(tmp_path / "site" / "settings.toml",
                          base_sections(tmp_path, templates={"dir": "ours"}))

    assert load(path).templates.dir == tmp_path / "site" / "ours"


def test_templates_dir_that_does_not_exist_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as excinfo:
        from_mapping(base_sections(tmp_path, templates={"dir": "nowhere"}), base_dir=tmp_path,
                     environ={})

    assert str(excinfo.value) == f"[templates] dir: no such folder: {tmp_path / 'nowhere'}"
