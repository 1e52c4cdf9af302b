"""Words people read: plurals (mailer.wording), stylesheets served without developer comments
(mailer.mail.templates.served_css), subjects as a sample customer reads them."""

from __future__ import annotations

import pytest

from mailer.campaigns.templates import SAMPLE_CUSTOMER_NAME, sample_subjects
from mailer.mail.templates import served_css
from mailer.wording import noun, plural


@pytest.mark.parametrize(("count", "word", "expected"), [
    (0, "customer", "0 customers"), (1, "customer", "1 customer"), (2, "customer", "2 customers"),
    (1, "bad row", "1 bad row"), (3, "bad row", "3 bad rows"), (2, "address", "2 addresses"),
    (2, "reply", "2 replies"), (2, "day", "2 days"), (2, "opt-out", "2 opt-outs"),
    (-1, "customer", "-1 customers"),
])
def test_a_count_takes_its_noun_in_the_right_number(count: int, word: str,
                                                     expected: str) -> None:
    assert plural(count, word) == expected


def test_an_irregular_plural_is_named_and_the_noun_can_stand_alone() -> None:
    assert plural(1, "person", "people") == "1 person"
    assert plural(4, "person", "people") == "4 people"
    assert noun(1, "request") == "request" and noun(7, "request") == "requests"


def test_served_css_loses_its_comments_and_keeps_its_rules() -> None:
    source = ("/* For developers:\n   the brand colours. */\n"
              "a { color: #123c69; } /* links */\nb{font-weight:700}\n")
    assert served_css(source) == "a { color: #123c69; } b{font-weight:700}"


def test_subjects_read_as_the_sample_customer_would_and_a_broken_one_as_written() -> None:
    assert sample_subjects(None, ["Hello {{ customer.name }}", "Plain news",
                                  "{{ customer.nmae }}", "{{ campaign.subject|length }}"]) == [
        # campaign.subject inside a subject is the subject's own source (29 characters)
        f"Hello {SAMPLE_CUSTOMER_NAME}", "Plain news", "{{ customer.nmae }}", "29"]
