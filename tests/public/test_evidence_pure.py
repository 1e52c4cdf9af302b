"""The evidence of a web consent change, on data alone: the wording version of the page's forms
and a bounded user agent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailer.public.evidence import (
    MAX_USER_AGENT_CHARS,
    bounded_user_agent,
    choices_text,
    web_evidence,
    wording_version,
)

PAGE = """<h1>Your choices</h1><p>Hello {name}.</p>
<form method="post"><input type="hidden" name="nonce" value="{nonce}">
<label>Special offers</label><input type="checkbox"{checked}>
<button>Save</button></form>"""


def test_the_wording_version_is_the_forms_text_not_the_nonce_the_ticks_or_the_name() -> None:
    one = PAGE.format(name="Ann", nonce="n1", checked=" checked")
    other = PAGE.format(name="Bob", nonce="n2", checked="")

    assert choices_text(one) == "Special offers Save"
    assert wording_version(one) == wording_version(other) != ""


def test_changed_words_in_a_form_give_a_new_wording_version() -> None:
    one = PAGE.format(name="Ann", nonce="n", checked="")

    assert wording_version(one) != wording_version(one.replace("Special offers", "Offers"))


def test_a_page_without_a_form_has_no_wording_version() -> None:
    assert wording_version("<p>Nothing to choose</p>") == ""


@given(text=st.text(max_size=2000))
def test_any_user_agent_is_kept_on_one_printable_line_of_bounded_length(text: str) -> None:
    kept = bounded_user_agent(text)
    assert len(kept) <= MAX_USER_AGENT_CHARS and kept.isprintable()
    assert web_evidence("192.0.2.1", text).user_agent == kept


@given(words=st.lists(st.text(alphabet="abcdefgh ", min_size=1, max_size=12), min_size=1,
                      max_size=6), nonce=st.text(alphabet="0123456789abcdef", max_size=40))
def test_the_wording_version_depends_on_the_words_alone(words: list[str], nonce: str) -> None:
    body = "".join(f"<label>{w}</label>" for w in words)
    page = f'<form><input name="nonce" value="{nonce}">{body}</form>'
    respaced = f"<form>\n  {'  '.join(f'<label> {w} </label>' for w in words)}</form>"
    assert wording_version(page) == wording_version(respaced)
