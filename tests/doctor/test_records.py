"""Parsing SPF, DMARC and DKIM key records (pure): what strangers publish, so any text either
parses or raises RecordError, never anything else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.doctor.records import (
    RecordError,
    SpfTerm,
    aligned,
    dmarc_records,
    organizational_domain,
    parse_dkim_key,
    parse_dmarc,
    parse_spf,
    spf_records,
)

T = TypeVar("T")

spf_words = st.sampled_from(["a", "mx", "-all", "~all", "include:x.test", "ip4:192.0.2.0/24",
                             "ip6:2001:db8::/32", "redirect=x.test", "exp=e.test", "ptr",
                             "a:h.test/24", "mx//64", "exists:%{i}.x.test", "?all", "+mx"])


def one_line_error_or(parse: Callable[[str], T], text: str) -> T | None:
    """What `parse` makes of `text`, or None after checking its RecordError is one line."""
    try:
        return parse(text)
    except RecordError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@given(st.text())
def test_any_text_parses_as_spf_or_raises_a_one_line_record_error(text: str) -> None:
    terms = one_line_error_or(parse_spf, "v=spf1 " + text)

    assert terms is None or all(isinstance(t, SpfTerm) and t.name for t in terms)


@given(st.text())
def test_any_text_parses_as_dmarc_or_raises_a_one_line_record_error(text: str) -> None:
    dmarc = one_line_error_or(parse_dmarc, text)

    assert dmarc is None or dmarc.policy in ("none", "quarantine", "reject")


@given(st.text())
def test_any_text_parses_as_a_dkim_key_or_raises_a_one_line_record_error(text: str) -> None:
    key = one_line_error_or(parse_dkim_key, text)

    assert key is None or isinstance(key.public_key, bytes)


@given(st.lists(spf_words, max_size=12))
def test_well_formed_spf_keeps_every_term_and_counts_lookups(words: list[str]) -> None:
    if sum(w.startswith("redirect=") for w in words) > 1:
        return
    terms = parse_spf(" ".join(["v=spf1", *words]))

    assert len(terms) == len(words)
    lookups = sum(t.costs_lookup for t in terms)
    assert lookups == sum(w.lstrip("+?~-").split(":")[0].split("=")[0].split("/")[0]
                          in ("a", "mx", "ptr", "include", "exists", "redirect")
                          for w in words)


@given(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,4}", fullmatch=True))
def test_the_organizational_domain_of_one_is_itself(domain: str) -> None:
    org = organizational_domain(domain)

    assert organizational_domain(org) == org
    assert domain == org or domain.endswith("." + org)
    assert aligned(domain, org, "r") and aligned(org, domain, "r")


def test_spf_records_are_those_starting_with_the_version() -> None:
    assert spf_records(["v=spf1 -all", "v=spf10", "google-site-verification=x", "V=SPF1"]) == [
        "v=spf1 -all", "V=SPF1"]


@pytest.mark.parametrize(("record", "why"), [
    ("v=spf1 ip4:300.0.0.1 -all", '"ip4:300.0.0.1": not an ip4 network'),
    ("v=spf1 ip4:2001:db8::1 -all", '"ip4:2001:db8::1": not an ip4 network'),
    ("v=spf1 include -all", '"include": include needs a value'),
    ("v=spf1 foo -all", '"foo" is not an SPF mechanism'),
    ("v=spf1 redirect=a.test redirect=b.test", "more than one redirect= modifier"),
])
def test_broken_spf_says_which_term(record: str, why: str) -> None:
    with pytest.raises(RecordError) as raised:
        parse_spf(record)

    assert str(raised.value) == why


def test_dmarc_reads_policy_reports_and_alignment() -> None:
    dmarc = parse_dmarc("v=DMARC1; p=quarantine; rua=mailto:a@x.test, mailto:b@y.test; "
                        "adkim=s")

    assert (dmarc.policy, dmarc.rua, dmarc.adkim, dmarc.aspf) == (
        "quarantine", ("mailto:a@x.test", "mailto:b@y.test"), "s", "r")
    assert dmarc_records(["v=DMARC1; p=none", "v=spf1 -all"]) == ["v=DMARC1; p=none"]
    with pytest.raises(RecordError, match="p= must be none, quarantine or reject"):
        parse_dmarc("v=DMARC1; rua=mailto:a@x.test")


def test_uk_second_level_domains_keep_three_labels() -> None:
    assert organizational_domain("mail.imperialtelecom.co.uk") == "imperialtelecom.co.uk"
    assert organizational_domain("news.imperial.test") == "imperial.test"
    assert not aligned("imperialtelecom.co.uk", "other.co.uk", "r")
    assert not aligned("news.imperial.test", "imperial.test", "s")


def test_a_dkim_key_record_gives_algorithm_and_key() -> None:
    key = parse_dkim_key("v=DKIM1; k=ed25519; p=AAEC")

    assert (key.algorithm, key.public_key) == ("ed25519", b"\x00\x01\x02")
    assert parse_dkim_key("v=DKIM1; p=").public_key == b""
    with pytest.raises(RecordError, match="p= is not base64"):
        parse_dkim_key("v=DKIM1; p=@@@")


def test_dual_cidr_lengths_apply_to_their_own_family() -> None:
    from mailer.doctor.spf import _networks

    assert [str(n) for n in _networks(["192.0.2.9", "2001:db8::9"], "//64")] == [
        "192.0.2.9/32", "2001:db8::/64"]
    assert [str(n) for n in _networks(["192.0.2.9", "2001:db8::9"], "/24//48")] == [
        "192.0.2.0/24", "2001:db8::/48"]
