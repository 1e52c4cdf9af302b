"""VERP addresses: one per sent message, read back through case-folding, forgery-proof."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.mail import verp
from mailer.mail.verp import Tag

BOUNCES = "bounces@imperialtelecom.co.uk"
SECRET = "campaign-secret"


def parse(address: str, **kwargs: object) -> Tag | None:
    return verp.parse(address, bounce_address=BOUNCES, secret=SECRET, **kwargs)  # type: ignore[arg-type]


def test_campaign_address_names_campaign_and_customer_and_reads_back() -> None:
    address = verp.address(BOUNCES, Tag.campaign(12, 345), SECRET)
    assert re.fullmatch(r"bounces\+c12-345-[a-z2-7]{16}@imperialtelecom\.co\.uk", address)
    assert parse(address) == Tag.campaign(12, 345)


def test_confirmation_address_names_the_outbox_row_and_reads_back() -> None:
    address = verp.address(BOUNCES, Tag.confirmation(77), SECRET)
    assert address.startswith("bounces+n77-")
    assert parse(address) == Tag.confirmation(77)


def test_address_read_back_after_an_mta_upper_cases_it_or_wraps_it_as_a_return_path() -> None:
    address = verp.address(BOUNCES, Tag.campaign(1, 2), SECRET)
    assert parse(address.upper()) == Tag.campaign(1, 2)
    assert parse(f" <{address}> ") == Tag.campaign(1, 2)


def test_token_holds_no_address_and_only_local_part_characters() -> None:
    address = verp.address(BOUNCES, Tag.campaign(9, 9), SECRET)
    local = address.rpartition("@")[0]
    assert local.count("@") == 0
    assert re.fullmatch(r"[a-z0-9+-]+", local)


def test_altered_ids_with_the_same_signature_are_not_ours() -> None:
    address = verp.address(BOUNCES, Tag.campaign(12, 345), SECRET)
    assert parse(address.replace("c12-345-", "c12-346-")) is None
    assert parse(address.replace("c12-345-", "c12-0345-")) is None


def test_address_signed_under_another_secret_is_not_ours() -> None:
    forged = verp.address(BOUNCES, Tag.campaign(12, 345), "guessed")
    assert parse(forged) is None


def test_address_signed_under_a_previous_secret_is_still_ours_when_listed() -> None:
    old = verp.address(BOUNCES, Tag.campaign(3, 4), "old-secret")
    assert parse(old) is None
    assert parse(old, previous_secrets=["old-secret"]) == Tag.campaign(3, 4)


@pytest.mark.parametrize("foreign", [
    "bounces@imperialtelecom.co.uk",
    "other+c1-2-aaaaaaaaaaaaaaaa@imperialtelecom.co.uk",
    "customer@example.com",
    "MAILER-DAEMON",
    "<>",
    "",
])
def test_addresses_that_are_not_a_verp_of_ours_give_none(foreign: str) -> None:
    assert parse(foreign) is None


def test_a_token_moved_to_another_domain_is_not_ours() -> None:
    address = verp.address(BOUNCES, Tag.campaign(1, 2), SECRET)
    assert parse(address.replace("imperialtelecom.co.uk", "evil.example")) is None


def test_verifier_without_a_secret_recognises_nothing() -> None:
    address = verp.address(BOUNCES, Tag.campaign(1, 2), SECRET)
    assert verp.Verifier(BOUNCES, "").parse(address) is None
    assert verp.Verifier(BOUNCES, SECRET).parse(address) == Tag.campaign(1, 2)


def test_empty_secret_or_negative_ids_refuse_to_build_an_address() -> None:
    with pytest.raises(ValueError, match="secret"):
        verp.address(BOUNCES, Tag.campaign(1, 2), "")
    with pytest.raises(ValueError, match="negative"):
        verp.address(BOUNCES, Tag.campaign(-1, 2), SECRET)


@given(st.integers(0, 10**12), st.integers(0, 10**12))
def test_every_campaign_tag_round_trips(campaign_id: int, customer_id: int) -> None:
    tag = Tag.campaign(campaign_id, customer_id)
    assert parse(verp.address(BOUNCES, tag, SECRET)) == tag


@given(st.text(max_size=120))
def test_parse_never_raises_on_any_text(text: str) -> None:
    assert parse(text) is None or isinstance(parse(text), Tag)
