"""Campaign and confirmation templates: sandboxed rendering, one-line errors, the opt-out."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from markupsafe import escape

from mailer.campaigns.templates import CampaignTemplate, RenderContext
from mailer.errors import TemplateError
from mailer.mail.templates import render_confirmation

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
URL = "https://imperial.example/u/42.special_offers.AbCdEfGhIjKlMnOpQrStUv"
ADDRESS = "unsubscribe@imperial.example"
FOOTER = (
    f'To stop receiving these emails, email {ADDRESS} with the subject "Unsubscribe special '
    f'offers", or use this link: {URL}'
)

Write = Callable[[str, str], None]


def _context(name: str = "Alice Smith", company: str = "Acme Ltd") -> RenderContext:
    return RenderContext(
        customer_name=name,
        customer_email="alice@example.com",
        customer_company=company,
        campaign_subject="Offer",
        unsubscribe_url=URL,
        unsubscribe_address=ADDRESS,
    )


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    """A templates directory with the real base layouts and no campaigns yet."""
    for name in ("base.txt", "base.html"):
        shutil.copy(REPO_TEMPLATES / name, tmp_path / name)
    (tmp_path / "campaigns").mkdir()
    return tmp_path


@pytest.fixture
def write(templates_dir: Path) -> Write:
    def write(name: str, source: str) -> None:
        (templates_dir / name).write_text(source, encoding="utf-8")

    return write


def _campaign(body: str, base: str = "base.txt") -> str:
    return f'{{% extends "{base}" %}}\n{{% block content %}}\n{body}\n{{% endblock %}}\n'


def _error(excinfo: pytest.ExceptionInfo[TemplateError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# The sample campaigns -----------------------------------------------------------------------


def test_sample_special_offer_renders_both_parts_for_the_customer() -> None:
    template = CampaignTemplate.load(
        REPO_TEMPLATES, "welcome-offer", "Half-price line rental for 3 months, {{ customer.name }}"
    )
    template.check()

    rendered = template.render(_context(name="Zoë Ó Briain"))

    assert rendered.subject == "Half-price line rental for 3 months, Zoë Ó Briain"
    assert "Dear Zoë Ó Briain," in rendered.text
    assert "half-price line rental" in rendered.text.lower()
    assert rendered.html is not None
    assert "Dear Zoë Ó Briain," in rendered.html
    assert "Imperial Telecom Ltd" in rendered.text
    assert "Imperial Telecom Ltd" in rendered.html


def test_sample_announcement_is_text_only() -> None:
    template = CampaignTemplate.load(REPO_TEMPLATES, "service-update", "Changes to your service")
    template.check()

    rendered = template.render(_context())

    assert not template.has_html
    assert rendered.html is None
    assert "Dear Alice Smith," in rendered.text


def test_footer_in_both_parts_names_the_unsubscribe_address_and_link() -> None:
    template = CampaignTemplate.load(REPO_TEMPLATES, "welcome-offer", "Offer")

    rendered = template.render(_context())

    assert FOOTER in rendered.text
    assert rendered.html is not None
    assert f'href="{URL}"' in rendered.html
    assert f'href="mailto:{ADDRESS}?subject=Unsubscribe%20special%20offers"' in rendered.html
    assert "To stop receiving these emails, email" in rendered.html


def test_text_keeps_its_trailing_newline() -> None:
    rendered = CampaignTemplate.load(REPO_TEMPLATES, "welcome-offer", "Offer").render(_context())

    assert rendered.text.endswith(f"{URL}\n")


# Escaping -----------------------------------------------------------------------------------


def test_html_autoescapes_customer_name() -> None:
    name = "<script>alert(1)</script> & Sons"
    template = CampaignTemplate.load(REPO_TEMPLATES, "welcome-offer", "Hi {{ customer.name }}")

    rendered = template.render(_context(name=name))

    assert rendered.html is not None
    assert "<script>" not in rendered.html
    assert str(escape(name)) in rendered.html
    # Text and subject are not HTML: they keep the name as it is.
    assert f"Dear {name}," in rendered.text
    assert rendered.subject == f"Hi {name}"


def test_bodies_see_the_rendered_subject(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("Subject was: {{ campaign.subject }}"))

    rendered = CampaignTemplate.load(templates_dir, "x", "For {{ customer.name }}").render(
        _context()
    )

    assert "Subject was: For Alice Smith\n" in rendered.text


# Rendered once per campaign or once per recipient ------------------------------------------


def test_subject_naming_the_customer_is_rendered_for_each_recipient(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Subject was: {{ campaign.subject }}"))
    template = CampaignTemplate.load(templates_dir, "x", "For {{ customer.name }}")

    first = template.render(_context(name="Alice Smith"))
    second = template.render(_context(name="Bob Jones"))

    assert (first.subject, second.subject) == ("For Alice Smith", "For Bob Jones")
    assert "Subject was: For Bob Jones\n" in second.text


def test_subject_using_the_unsubscribe_link_is_rendered_for_each_recipient(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Hi"))
    template = CampaignTemplate.load(templates_dir, "x", "Ref {{ unsubscribe_url[-4:] }}")

    first = template.render(_context())
    other = RenderContext(**{**_context().__dict__, "unsubscribe_url": URL[:-4] + "WXYZ"})
    second = template.render(other)

    assert (first.subject, second.subject) == (f"Ref {URL[-4:]}", "Ref WXYZ")


def test_subject_without_customer_variables_follows_the_campaign_subject_it_is_given(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Subject was: {{ campaign.subject }}"))
    template = CampaignTemplate.load(templates_dir, "x", "{{ campaign.subject | upper }}")

    first = template.render(RenderContext(**{**_context().__dict__, "campaign_subject": "a"}))
    second = template.render(RenderContext(**{**_context().__dict__, "campaign_subject": "b"}))

    assert (first.subject, second.subject) == ("A", "B")
    assert "Subject was: B\n" in second.text


# Errors name the template and the line -----------------------------------------------------


@pytest.mark.parametrize("extension", ["txt", "html"])
def test_unknown_variable_is_refused_naming_template_and_line(
    write: Write, templates_dir: Path, extension: str
) -> None:
    write("campaigns/x.txt", _campaign("Hello"))
    write(f"campaigns/x.{extension}", _campaign("Hello\n{{ customer.nmae }}", f"base.{extension}"))
    template = CampaignTemplate.load(templates_dir, "x", "Offer")

    with pytest.raises(TemplateError) as excinfo:
        template.check()

    assert _error(excinfo) == (
        f"template campaigns/x.{extension} line 4: 'customer' has no attribute 'nmae'"
    )
    assert excinfo.value.template == f"campaigns/x.{extension}"
    assert excinfo.value.line == 4


def test_unknown_top_level_variable_is_refused(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("{{ custmer.name }}"))

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer").render(_context())

    assert _error(excinfo) == "template campaigns/x.txt line 3: 'custmer' is undefined"


def test_unknown_variable_in_subject_is_refused(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("Hello"))
    template = CampaignTemplate.load(templates_dir, "x", "Hi {{ customer.first_name }}")

    with pytest.raises(TemplateError) as excinfo:
        template.check()

    assert _error(excinfo) == (
        "template campaigns/x subject line 1: 'customer' has no attribute 'first_name'"
    )


def test_syntax_error_is_refused_at_load_naming_template_and_line(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Hello\n\n{{ customer.name }"))

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer")

    assert _error(excinfo) == "template campaigns/x.txt line 5: syntax error: unexpected '}'"


def test_syntax_error_in_subject_is_refused_at_load(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("Hello"))

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Hi {{ customer.name")

    assert _error(excinfo).startswith("template campaigns/x subject line 1: syntax error:")


def test_missing_text_template_is_refused_at_load(templates_dir: Path) -> None:
    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "nope", "Offer")

    assert _error(excinfo) == f"template campaigns/nope.txt not found in {templates_dir}/"


def test_missing_html_template_makes_a_text_only_campaign(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Hello"))

    template = CampaignTemplate.load(templates_dir, "x", "Offer")

    assert not template.has_html
    assert template.render(_context()).html is None


def test_base_missing_from_the_templates_folder_comes_from_the_packaged_defaults(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Hello"))
    write("campaigns/x.html", _campaign("<p>Hello</p>", "base.html"))
    (templates_dir / "base.html").unlink()

    rendered = CampaignTemplate.load(templates_dir, "x", "Offer").render(_context())

    assert rendered.html is not None
    assert f'href="{URL}"' in rendered.html


def test_base_that_exists_nowhere_is_refused_at_load(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("Hello"))
    write("campaigns/x.html", _campaign("<p>Hello</p>", "brand.html"))

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer")

    assert _error(excinfo) == f"template brand.html not found in {templates_dir}/"


def test_broken_base_is_refused_at_load(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("Hello"))
    write("campaigns/x.html", _campaign("<p>Hello</p>", "base.html"))
    write("base.html", "<p>\n{% block content %}\n</p>\n")

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer")

    assert _error(excinfo).startswith("template base.html line 3: syntax error:")


def test_runtime_error_names_template_and_line(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("Hello\n{{ 1 // 0 }}"))

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer").render(_context())

    assert _error(excinfo) == (
        "template campaigns/x.txt line 4: ZeroDivisionError: integer division or modulo by zero"
    )


def test_check_renders_a_non_ascii_name(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("{{ customer.name.encode('ascii') }}"))
    template = CampaignTemplate.load(templates_dir, "x", "Offer")
    template.render(_context(name="Alice"))

    with pytest.raises(TemplateError, match=r"campaigns/x\.txt line 3: UnicodeEncodeError"):
        template.check()


def test_empty_subject_is_refused_at_check(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("Hello"))

    with pytest.raises(TemplateError, match="subject renders empty"):
        CampaignTemplate.load(templates_dir, "x", "{{ '' }}").check()


@pytest.mark.parametrize("name", ["../base", "a/b", "", ".hidden"])
def test_template_name_outside_campaigns_is_refused(templates_dir: Path, name: str) -> None:
    with pytest.raises(TemplateError, match="template name"):
        CampaignTemplate.load(templates_dir, name, "Offer")


# The sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "customer.__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "cycler.__init__.__globals__",
        "customer.name.__class__",
    ],
)
def test_sandbox_blocks_attribute_access_to_internals(
    write: Write, templates_dir: Path, expression: str
) -> None:
    write("campaigns/x.txt", _campaign(f"{{{{ {expression} }}}}"))

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer").check()

    message = _error(excinfo)
    assert message.startswith("template campaigns/x.txt line 3: access to attribute")
    assert "unsafe" in message


def test_sandbox_names_the_variable_not_the_private_class(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("{{ customer.__class__ }}"))

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer").check()

    assert _error(excinfo) == (
        "template campaigns/x.txt line 3: access to attribute '__class__' of 'customer' is unsafe."
    )


def test_sandbox_refuses_to_modify_values(write: Write, templates_dir: Path) -> None:
    write("campaigns/x.txt", _campaign("{% set seen = [] %}{{ seen.append(1) }}"))

    with pytest.raises(TemplateError, match="unsafe"):
        CampaignTemplate.load(templates_dir, "x", "Offer").check()


# The opt-out (PECR) ------------------------------------------------------------------------


def test_template_that_drops_the_footer_is_refused(write: Write, templates_dir: Path) -> None:
    write(
        "campaigns/x.txt",
        '{% extends "base.txt" %}\n{% block content %}Hi{% endblock %}\n'
        "{% block footer %}{% endblock %}\n",
    )

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer").check()

    assert _error(excinfo) == (
        "template campaigns/x.txt: the opt-out footer is missing "
        "(unsubscribe_url is not in the output)"
    )


def test_html_that_drops_the_footer_for_some_customers_is_refused_at_render(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Hi"))
    write(
        "campaigns/x.html",
        '{% extends "base.html" %}\n{% block content %}Hi{% endblock %}\n'
        "{% block footer %}{% if customer.company %}{{ super() }}{% endif %}{% endblock %}\n",
    )
    template = CampaignTemplate.load(templates_dir, "x", "Offer")
    template.check()

    with pytest.raises(TemplateError, match=r"template campaigns/x\.html: the opt-out footer"):
        template.render(_context(company=""))


def test_html_footer_with_the_link_but_not_the_address_is_refused_naming_the_address(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Hi"))
    write(
        "campaigns/x.html",
        '{% extends "base.html" %}\n{% block content %}Hi{% endblock %}\n'
        '{% block footer %}<a href="{{ unsubscribe_url }}">Unsubscribe</a>{% endblock %}\n',
    )

    with pytest.raises(TemplateError) as excinfo:
        CampaignTemplate.load(templates_dir, "x", "Offer").check()

    assert _error(excinfo) == (
        "template campaigns/x.html: the opt-out footer is missing "
        "(unsubscribe_address is not in the output)"
    )


def test_html_footer_is_checked_against_each_address_as_escaped(
    write: Write, templates_dir: Path
) -> None:
    write("campaigns/x.txt", _campaign("Hi"))
    write("campaigns/x.html", _campaign("Hi", "base.html"))
    template = CampaignTemplate.load(templates_dir, "x", "Offer")

    for address in ("opt&out@imperial.example", "o'brien&co@imperial.example"):
        ctx = RenderContext(**{**_context().__dict__, "unsubscribe_address": address})
        rendered = template.render(ctx)
        assert rendered.html is not None
        assert str(escape(address)) in rendered.html
        assert address in rendered.text


# Confirmation ------------------------------------------------------------------------------


def test_confirmation_names_the_categories_turned_off_and_how_to_opt_back_in() -> None:
    subject, text, html = render_confirmation(
        REPO_TEMPLATES,
        customer_name="Zoë Ó Briain",
        categories=["offers", "announcements"],
        request_subject="Unsubscribe special offers",
        preferences_url="https://example.com/u/7.o3.sig",
    )

    assert subject == "Re: Unsubscribe special offers"
    for body in (text, html):
        assert "Dear Zoë Ó Briain," in body
        assert "special offers" in body
        assert "announcements" in body
        assert "Changed your mind?" in body
        assert "https://example.com/u/7.o3.sig" in body
        assert "Reply to this email" not in body  # no promise the system does not keep
        assert "Imperial Telecom Ltd" in body


def test_confirmation_without_public_pages_points_to_customer_services() -> None:
    _, text, html = render_confirmation(
        REPO_TEMPLATES, customer_name="Ann", categories=["offers"],
        request_subject="Unsubscribe special offers")

    for body in (text, html):
        assert "Contact our customer services team" in body
        assert "Reply to this email" not in body


def test_confirmation_carries_no_opt_out_footer() -> None:
    _, text, html = render_confirmation(
        REPO_TEMPLATES,
        customer_name="Alice",
        categories=["special_offers"],
        request_subject="stop",
    )

    assert "To stop receiving these emails" not in text
    assert "To stop receiving these emails" not in html


def test_confirmation_escapes_the_customer_name_in_html() -> None:
    _, text, html = render_confirmation(
        REPO_TEMPLATES,
        customer_name="<b>Bob</b>",
        categories=["special_offers"],
        request_subject="stop",
    )

    assert "Dear <b>Bob</b>," in text
    assert "Dear &lt;b&gt;Bob&lt;/b&gt;," in html


@pytest.mark.parametrize(
    ("request_subject", "subject"),
    [
        ("Unsubscribe special offers", "Re: Unsubscribe special offers"),
        ("RE: Unsubscribe special offers", "RE: Unsubscribe special offers"),
        ("  stop\r\n  please ", "Re: stop please"),
        ("", "Your email preferences have been updated"),
    ],
)
def test_confirmation_subject_replies_to_the_request(request_subject: str, subject: str) -> None:
    got, _, _ = render_confirmation(
        REPO_TEMPLATES,
        customer_name="",
        categories=["special_offers"],
        request_subject=request_subject,
    )

    assert got == subject


def test_confirmation_when_nothing_was_left_to_turn_off() -> None:
    _, text, html = render_confirmation(
        REPO_TEMPLATES, customer_name="", categories=[], request_subject="stop"
    )

    assert text.startswith("Hello,\n")
    assert "already opted out" in text
    assert "already opted out" in html


def test_confirmation_template_errors_name_the_template(write: Write, templates_dir: Path) -> None:
    write("confirmation.txt", "Hi {{ customer.name }}\n")
    write("confirmation.html", "<p>Hi</p>\n")

    with pytest.raises(TemplateError) as excinfo:
        render_confirmation(
            templates_dir, customer_name="A", categories=["special_offers"], request_subject="s"
        )

    assert _error(excinfo) == "template confirmation.txt line 1: 'customer' is undefined"
