"""Unsubscribe tokens (category, campaign, confirmation and test-copy kinds) and the preference
page's form nonce: deterministic, URL-safe, and impossible to alter without the secret."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.mail.tokens import (
    SAMPLE_TOKEN,
    LinkToken,
    campaign_token,
    confirmation_token,
    form_nonce,
    read_link_token,
    unsubscribe_link,
    unsubscribe_token,
    verify_campaign_token,
    verify_confirmation_token,
    verify_form_nonce,
    verify_token,
    verify_token_for_test_copies,
)
from mailer.mail.tokens import token_for_test_copies as copies_token

SECRET = "test-secret"


def test_token_round_trips_and_rejects_tampering() -> None:
    token = unsubscribe_token(SECRET, 42, "special_offers")

    assert verify_token(SECRET, token) == (42, "special_offers")
    customer, category, sig = token.split(".")
    assert verify_token(SECRET, f"43.{category}.{sig}") is None
    assert verify_token(SECRET, f"{customer}.announcements.{sig}") is None
    assert verify_token(SECRET, f"{customer}.{category}.{sig[:-1]}A") is None
    assert verify_token("another-secret", token) is None


def test_token_has_the_documented_shape_and_is_deterministic() -> None:
    token = unsubscribe_token(SECRET, 7, "announcements")

    assert token == unsubscribe_token(SECRET, 7, "announcements")
    # 16 bytes of HMAC as base64url without padding is 22 characters.
    assert re.fullmatch(r"7\.announcements\.[A-Za-z0-9_-]{22}", token)


def test_different_customers_and_categories_get_different_tokens() -> None:
    tokens = {
        unsubscribe_token(SECRET, customer, category)
        for customer in (1, 2)
        for category in ("special_offers", "announcements")
    }

    assert len(tokens) == 4


@pytest.mark.parametrize(
    "token",
    ["", "42", "42.special_offers", ".special_offers.abc", "x.special_offers.abc", "042.a.b"],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    assert verify_token(SECRET, token) is None


def test_non_canonical_customer_id_does_not_verify() -> None:
    _, category, sig = unsubscribe_token(SECRET, 42, "special_offers").split(".")

    assert verify_token(SECRET, f"042.{category}.{sig}") is None
    assert verify_token(SECRET, f"+42.{category}.{sig}") is None


def test_category_that_is_not_url_safe_is_refused() -> None:
    with pytest.raises(ValueError, match="URL-safe"):
        unsubscribe_token(SECRET, 1, "special offers")


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        unsubscribe_token("", 1, "special_offers")


@given(
    customer_id=st.integers(min_value=0, max_value=2**63),
    category=st.from_regex(r"[A-Za-z0-9._~-]+", fullmatch=True),
)
def test_any_token_round_trips(customer_id: int, category: str) -> None:
    assert verify_token(SECRET, unsubscribe_token(SECRET, customer_id, category)) == (
        customer_id,
        category,
    )


@given(st.text(max_size=80))
def test_arbitrary_text_never_verifies_or_raises(token: str) -> None:
    assert verify_token(SECRET, token) is None


@pytest.mark.parametrize("base_url", ["https://imperial.example/u", "https://imperial.example/u/"])
def test_link_joins_base_url_and_token_with_one_slash(base_url: str) -> None:
    assert unsubscribe_link(base_url, "1.a.b") == "https://imperial.example/u/1.a.b"


# --- campaign tokens --------------------------------------------------------------------------

OLD = "previous-secret"


def test_campaign_token_names_customer_and_campaign_and_is_short_and_url_safe() -> None:
    token = campaign_token(SECRET, 42, 7)

    assert re.fullmatch(r"42\.7\.[A-Za-z0-9_-]{22}", token)
    assert len(token) <= 40
    assert verify_campaign_token([SECRET], token) == (42, 7)
    assert token == campaign_token(SECRET, 42, 7)


def test_campaign_token_rejects_tampering_and_other_secrets() -> None:
    token = campaign_token(SECRET, 42, 7)
    customer, campaign, sig = token.split(".")

    assert verify_campaign_token([SECRET], f"43.{campaign}.{sig}") is None
    assert verify_campaign_token([SECRET], f"{customer}.8.{sig}") is None
    assert verify_campaign_token([SECRET], f"{customer}.{campaign}.{sig[:-1]}A") is None
    assert verify_campaign_token([SECRET], token[:-1]) is None
    assert verify_campaign_token(["another-secret"], token) is None
    assert verify_campaign_token([], token) is None


def test_a_rotated_secret_keeps_old_links_working_through_previous_secrets() -> None:
    old_token = campaign_token(OLD, 42, 7)

    assert verify_campaign_token([SECRET], old_token) is None
    assert verify_campaign_token([SECRET, OLD], old_token) == (42, 7)
    assert read_link_token([SECRET, OLD], old_token) == LinkToken(42, campaign_id=7)


def test_a_campaign_token_signature_is_never_a_category_token_signature() -> None:
    # "42.7.sig" reads as customer 42, category "7" to the first kind's parser: the two kinds
    # sign different messages, so neither can stand in for the other.
    _, _, sig = campaign_token(SECRET, 42, 7).split(".")
    assert verify_token(SECRET, f"42.7.{sig}") is None
    _, _, category_sig = unsubscribe_token(SECRET, 42, "7").split(".")
    assert verify_campaign_token([SECRET], f"42.7.{category_sig}") is None


def test_read_link_token_accepts_both_kinds_and_gives_the_consent_reference() -> None:
    campaign = read_link_token([SECRET], campaign_token(SECRET, 5, 9))
    category = read_link_token([SECRET], unsubscribe_token(SECRET, 5, "offers"))

    assert campaign == LinkToken(5, campaign_id=9) and campaign.reference == "campaign 9"
    assert category == LinkToken(5, category="offers")
    assert category.reference == "unsubscribe link (offers)"


@given(
    customer_id=st.integers(min_value=0, max_value=2**63),
    campaign_id=st.integers(min_value=0, max_value=2**63),
)
def test_any_campaign_token_round_trips(customer_id: int, campaign_id: int) -> None:
    token = campaign_token(SECRET, customer_id, campaign_id)
    assert verify_campaign_token([OLD, SECRET], token) == (customer_id, campaign_id)


@given(st.text(max_size=120))
def test_arbitrary_text_never_reads_as_a_link_token_or_raises(token: str) -> None:
    assert read_link_token([SECRET, OLD], token) is None


def test_a_form_nonce_is_for_one_customer_and_expires() -> None:
    nonce = form_nonce(SECRET, 42, 1000.0)

    assert verify_form_nonce([SECRET], 42, nonce, now_s=1000.0, max_age_s=60)
    assert verify_form_nonce([OLD, SECRET], 42, nonce, now_s=1060.0, max_age_s=60)
    assert not verify_form_nonce([SECRET], 42, nonce, now_s=1061.0, max_age_s=60)
    assert not verify_form_nonce([SECRET], 43, nonce, now_s=1000.0, max_age_s=60)
    assert not verify_form_nonce([OLD], 42, nonce, now_s=1000.0, max_age_s=60)
    assert not verify_form_nonce([SECRET], 42, nonce, now_s=900.0, max_age_s=60)  # future
    assert not verify_form_nonce([SECRET], 42, "", now_s=1000.0, max_age_s=60)


def test_empty_secret_or_negative_ids_are_refused_for_campaign_tokens() -> None:
    with pytest.raises(ValueError, match="secret"):
        campaign_token("", 1, 1)
    with pytest.raises(ValueError, match="negative"):
        campaign_token(SECRET, 1, -1)


def test_a_confirmation_token_names_the_customer_and_the_confirmation_it_came_in() -> None:
    token = confirmation_token(SECRET, 42, 7)

    assert re.fullmatch(r"42\.o7\.[A-Za-z0-9_-]{22}", token)
    assert verify_confirmation_token([SECRET], token) == (42, 7)
    link = read_link_token(["new-secret", SECRET], token)
    assert link == LinkToken(customer_id=42, confirmation_id=7)
    assert link.reference == "confirmation 7"
    # Never taken for a campaign token (nor the reverse): each kind signs its own prefix.
    assert verify_campaign_token([SECRET], token.replace(".o7.", ".7.")) is None
    assert verify_confirmation_token([SECRET], campaign_token(SECRET, 42, 7)) is None


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.text(max_size=30))
def test_an_altered_confirmation_token_is_refused(customer: int, outbox: int,
                                                  junk: str) -> None:
    token = confirmation_token(SECRET, customer, outbox)
    assert verify_confirmation_token(["other-secret"], token) is None
    altered = token.replace(f".o{outbox}.", f".o{outbox + 1}.")
    assert verify_confirmation_token([SECRET], altered) is None
    assert read_link_token([SECRET], token + junk) in (None, read_link_token([SECRET], token))


def test_a_test_copys_token_names_only_the_campaign_and_opens_no_customers_page() -> None:
    token = copies_token(SECRET, 7)

    assert re.fullmatch(r"test\.7\.[A-Za-z0-9_-]{22}", token)
    assert verify_token_for_test_copies([OLD, SECRET], token) == 7
    assert verify_token_for_test_copies(["another-secret"], token) is None
    assert verify_token_for_test_copies([SECRET], token.replace("test.7.", "test.8.")) is None
    assert read_link_token([SECRET], token) is None
    assert read_link_token([SECRET], SAMPLE_TOKEN) is None
    # Nor can a campaign token's signature pass for a test copy's, or the reverse.
    _, _, sig = campaign_token(SECRET, 0, 7).split(".")
    assert verify_token_for_test_copies([SECRET], f"test.7.{sig}") is None
    assert verify_campaign_token([SECRET], f"0.7.{token.rpartition('.')[2]}") is None


@given(st.integers(0, 2**63), st.text(max_size=80))
def test_test_copy_tokens_round_trip_and_arbitrary_text_is_never_one(
    campaign_id: int, text: str
) -> None:
    assert verify_token_for_test_copies([SECRET], copies_token(SECRET, campaign_id)) == (
        campaign_id)
    assert verify_token_for_test_copies([SECRET, OLD], text) is None
