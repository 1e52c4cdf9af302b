"""Spotting a request to opt back in (`mailer.inbox.optback`): sentences people write, and
properties that hold for any text or thread."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.inbox.optback import asks_to_opt_back_in, opt_back_in_reason, threads_to

modest = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ASKS = [
    "Please turn the special offers back on",
    "please switch my emails back on, thanks",
    "I've changed my mind",
    "Can you resubscribe me?",
    "I would like to re-subscribe to the offers",
    "Opt me back in please",
    "i want to opt back in",
    "Please opt in again",
    "Subscribe me again to announcements",
    "Put me back on the mailing list",
    "Please start sending me the offers again",
    "Could you undo my unsubscribe",
    "Cancel my opt-out please",
    "PLEASE TURN THEM ON AGAIN",
]
REFUSALS = [
    "Please unsubscribe me",
    "Stop sending me offers",
    "unsubscribe",
    "Remove me from your list. Thanks, Ann",
    "I do not want these emails",
    "Please take me off the mailing list",
    "Turn off the special offers",
    "Changed your mind? Choose the emails you want",  # our own words, quoted back
]


@pytest.mark.parametrize("text", ASKS)
def test_a_request_for_emails_again_is_spotted(text: str) -> None:
    assert asks_to_opt_back_in(text)


@pytest.mark.parametrize("text", REFUSALS)
def test_an_ordinary_refusal_is_not_taken_for_a_request_to_opt_back_in(text: str) -> None:
    assert not asks_to_opt_back_in(text)


def test_a_reply_threaded_to_our_confirmation_is_marked_whatever_it_says() -> None:
    ours = {"<c1@imperial.test>"}
    assert opt_back_in_reason(("<x@a>", "<c1@imperial.test>"), ours, False) == (
        "asks to opt back in: a reply to our confirmation")
    assert opt_back_in_reason(("<x@a>",), ours, True) == (
        "asks to opt back in: the message asks for emails again")
    assert opt_back_in_reason(("<x@a>",), ours, False) is None


words = st.sampled_from(["please", "the", "offers", "stop", "me", "emails", "thanks", "on",
                         "off", "back", "again", "turn", "in", "opt", "Ann", "\n", "  "])


@modest
@given(st.text(max_size=2000))
def test_any_text_gets_an_answer_without_raising(text: str) -> None:
    assert asks_to_opt_back_in(text) in (True, False)


@modest
@given(st.lists(words, max_size=40), st.sampled_from(ASKS), st.lists(words, max_size=40))
def test_a_request_anywhere_in_a_message_is_spotted_whatever_surrounds_it(
    before: list[str], ask: str, after: list[str]
) -> None:
    text = " ".join([*before, "\n", ask, "\n", *after])
    assert asks_to_opt_back_in(text)
    assert asks_to_opt_back_in(text.upper()) and asks_to_opt_back_in(text.lower())


@modest
@given(st.lists(st.text(min_size=1, max_size=30), max_size=10),
       st.sets(st.text(min_size=1, max_size=30), max_size=10))
def test_threading_is_exactly_sharing_a_message_id(thread: list[str], ours: set[str]) -> None:
    assert threads_to(thread, ours) == bool(set(thread) & ours)
    assert (opt_back_in_reason(thread, ours, False) is not None) == bool(set(thread) & ours)


@modest
@given(st.text(alphabet="turn back on again opt in resubscribe ", max_size=50_000))
def test_a_huge_adversarial_text_is_read_only_up_to_the_cap(text: str) -> None:
    # It returns (the search is linear and the text capped); a match needs whole words.
    assert asks_to_opt_back_in(text * 3) in (True, False)
