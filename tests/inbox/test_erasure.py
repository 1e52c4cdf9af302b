"""The erasure detector: which requests also ask to delete the sender's data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailer.inbox.erasure import asks_for_erasure

ASKING = ["Please delete my data", "DELETE MY PERSONAL DATA now", "erase everything you hold",
          "I exercise my right to be forgotten", "This is a GDPR request",
          "Under UK-GDPR art. 17", "remove all of my details", "Ｅｒａｓｅ me",
          "right to\n erasure"]
NOT_ASKING = ["Unsubscribe special offers", "Please stop the offers", "I erased your email",
              "delete this email", "my data plan is too small", "gdprx", ""]


def test_each_phrasing_of_an_erasure_request_is_recognised() -> None:
    assert [t for t in ASKING if not asks_for_erasure("", t)] == []
    assert [t for t in ASKING if not asks_for_erasure(t, "")] == []


def test_ordinary_unsubscribe_requests_are_not_taken_for_erasure() -> None:
    assert [t for t in NOT_ASKING if asks_for_erasure("Unsubscribe special offers", t)] == []


@given(st.text(), st.text())
def test_any_text_gets_an_answer_and_never_raises(subject: str, text: str) -> None:
    assert asks_for_erasure(subject, text) in (True, False)


@given(st.text(), st.sampled_from(ASKING), st.text())
def test_a_phrase_asking_for_erasure_is_found_anywhere_in_a_text(
    before: str, phrase: str, after: str
) -> None:
    assert asks_for_erasure("", f"{before}\n{phrase}\n{after}")


@given(st.text(alphabet=st.characters(blacklist_categories=("L", "N")), max_size=50))
def test_text_without_letters_never_asks(text: str) -> None:
    assert not asks_for_erasure(text, text)
