"""Unsubscribe tokens: deterministic, URL-safe, and impossible to alter without the secret."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.tokens import unsubscribe_link, unsubscribe_token, verify_token

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
