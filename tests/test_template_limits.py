"""Bounded template work (`mailer.mail.template_limits`): a subject or body that would loop,
allocate or write without end is refused with one line naming the template and line, quickly,
while the templates we ship and ordinary template code render as before. On data alone."""

from __future__ import annotations

import time

import pytest

from mailer.campaigns.templates import CampaignTemplate
from mailer.errors import TemplateError, TemplateTooSlow
from mailer.mail.templates import sandbox

SUBJECT = "campaigns/welcome-offer subject"


def _render(source: str) -> str:
    env = sandbox(None)
    template = env.string(source, "subject")
    return env.render(template, {"name": "Ann"}, "subject", {"subject": "subject"})


@pytest.mark.parametrize(("source", "problem"), [
    ("{% for a in range(8000) %}{% for b in range(8000) %}{% endfor %}{% endfor %}",
     "more than 200,000 operations"),
    ("{% set l = range(1000)|list %}{% for a in l %}{% for b in l %}{% for c in l %}"
     "{% endfor %}{% endfor %}{% endfor %}", "more than 200,000 operations"),
    ("{{ ('x' * 50000000)|length }}", "a repeated value would be longer than the limit"),
    ("{{ ['x'] * 50000000 }}", "a repeated value would be longer than the limit"),
    ("{% set a = 'x' * 100000 %}{{ (a ~ a)|length }}", "a ~ concatenation would be longer"),
    ("{% set a = 'x' * 100000 %}{{ (a + a)|length }}", "a joined value would be longer"),
    ("{{ 'x'|center(1000000000) }}", "the number 1,000,000,000 is more than the limit"),
    ("{{ 'x'|center(100000) * 2 }}", "a repeated value would be longer than the limit"),
    ("{{ 'x'.ljust(1000000000) }}", "ljust(): the number 1,000,000,000"),
    ("{{ '{:>999999999}'.format(1) }}", "format(): a field width of a million or more"),
    ("{{ '%999999999s' % 1 }}", "a % format: a field width of a million or more"),
    ("{{ '%*s' % (1000000000, 'x') }}", "a % format: the number 1,000,000,000"),
    ("{{ 2 ** 1000000 }}", "a power of more than 65,536 bits"),
    ("{{ ('x' * 1000)|replace('x', 'x' * 1000) }}",
     "the replace filter would be longer than the limit"),
    ("{{ (['x' * 100000] * 1000)|join }}", "the join filter would be longer"),
    ("{{ ('\\n' * 100000)|indent(100000) }}", "the indent filter would be longer"),
    ("{% for i in range(20) %}{{ 'x' * 90000 }}{% endfor %}",
     "the output would be longer than 1,000,000 characters"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
     "macros or includes call themselves without end"),
    ("{{ lipsum(1000) }}", "'lipsum' is undefined"),
])
def test_work_without_bound_is_refused_in_one_line_naming_the_template(
    source: str, problem: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        _render(source)
    message = str(caught.value)
    assert message.startswith("template subject line 1: ")
    assert problem in message
    assert "\n" not in message


def test_bounded_but_slow_work_stops_at_the_time_limit_as_too_slow() -> None:
    # Each step is allowed (a hundred thousand characters), but not so many of them.
    started = time.monotonic()
    with pytest.raises(TemplateTooSlow) as caught:
        _render("{% for i in range(100000) %}{{ ('x y ' * 25000)|title|length }}{% endfor %}")
    assert str(caught.value) == "template subject line 1: rendering took longer than 1 s"
    assert time.monotonic() - started < 60  # stopped, not run to the end


def test_exponential_macros_stop_at_the_time_or_operation_limit() -> None:
    with pytest.raises(TemplateError, match=r"rendering took longer|more than 200,000"):
        _render("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
                "{% endmacro %}{{ f(40) }}")


def test_ordinary_template_code_renders_as_before() -> None:
    source = ("Hello {{ name }}! {% for i in range(3) %}{{ loop.index }}/{{ loop.length }} "
              "{% endfor %}{{ 'ab' ~ 'cd' }} {{ 'x' * 3 }} {{ '%s-%s' % (1, 2) }} "
              "{{ '{}'.format(5) }} {{ [1, 2]|join(',') }} {{ name|upper|replace('A', 'b') }} "
              "{{ 'x'|center(5) }}|{{ (1, 2) + (3,) }} {{ 2 ** 10 }}"
              "{% for x in [] %}no{% else %} empty{% endfor %}")
    assert _render(source) == ("Hello Ann! 1/3 2/3 3/3 abcd xxx 1-2 5 1,2 bNN   x  |"
                               "(1, 2, 3) 1024 empty")


def test_a_campaign_whose_render_is_too_slow_to_send_is_refused_when_checked() -> None:
    # Allowed by the check's one second (or not), but far slower than a send allows.
    template = CampaignTemplate.load(
        None, "welcome-offer",
        "{% for i in range(100) %}{{ ('x y ' * 25000)|title|length }}{% endfor %}Hi")
    with pytest.raises(TemplateTooSlow) as caught:
        template.check()
    message = str(caught.value)
    assert (message.startswith("template campaigns/welcome-offer: rendering one message took ")
            and message.endswith(" s, more than the 0.25 s a send allows")) or message == (
        f"template {SUBJECT} line 1: rendering took longer than 1 s"), message


def test_a_campaign_subject_that_loops_without_end_is_refused_when_checked() -> None:
    template = CampaignTemplate.load(
        None, "welcome-offer",
        "{% for a in range(8000) %}{% for b in range(8000) %}{% endfor %}{% endfor %}Hi")
    with pytest.raises(TemplateError) as caught:
        template.check()
    assert str(caught.value).startswith(f"template {SUBJECT} line 1: more than 200,000")
