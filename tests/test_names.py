"""Name and company keys: the same person or company typed differently gives the same key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.names import fold_words, normalise_company, normalise_name


def test_title_surname_comma_forename_and_accents_give_the_plain_key() -> None:
    assert normalise_name("Dr. SMITH,  José") == normalise_name("jose smith") == "jose smith"


@pytest.mark.parametrize(
    "typed",
    ["Mr John Smith", "mr. john smith", "MR. JOHN SMITH", "Sir John Smith", "Prof John  Smith"],
)
def test_titles_are_dropped_with_or_without_a_dot(typed: str) -> None:
    assert normalise_name(typed) == "john smith"


@pytest.mark.parametrize("title", ["mr", "mrs", "ms", "miss", "dr", "mx", "sir", "prof"])
def test_every_title_is_dropped(title: str) -> None:
    assert normalise_name(f"{title.upper()}. Alex Jones") == "alex jones"


def test_title_inside_a_word_is_kept() -> None:
    assert normalise_name("Missy Drummond") == "missy drummond"


def test_hyphen_separates_words_and_apostrophe_is_dropped() -> None:
    assert normalise_name("Mary-Jane O'Brien") == "mary jane obrien"
    assert normalise_name("Mary Jane O’Brien") == "mary jane obrien"


def test_surname_comma_forename_is_turned_round() -> None:
    assert normalise_name("Smith, John") == "john smith"


def test_two_commas_are_not_turned_round() -> None:
    assert normalise_name("Smith, John, Jr") == "smith john jr"


def test_casefolding_handles_sharp_s() -> None:
    assert normalise_name("Jürgen STRAẞE") == normalise_name("jurgen strasse") == "jurgen strasse"


def test_name_of_only_titles_and_punctuation_is_empty() -> None:
    assert normalise_name("Mr. & Mrs.") == ""
    assert normalise_name("   ") == ""


def test_company_suffix_and_punctuation_are_removed() -> None:
    assert normalise_company("Acme Widgets Ltd.") == "acme widgets"
    assert normalise_company("ACME WIDGETS LIMITED") == "acme widgets"


@pytest.mark.parametrize("suffix", ["ltd", "limited", "plc", "llp", "inc", "llc", "gmbh", "co"])
def test_every_legal_suffix_is_removed(suffix: str) -> None:
    assert normalise_company(f"Bloggs Partners {suffix.upper()}.") == "bloggs partners"


def test_stacked_suffixes_are_all_removed() -> None:
    assert normalise_company("Acme Co. Ltd") == "acme"


def test_company_that_is_only_a_suffix_keeps_its_one_word() -> None:
    assert normalise_company("Limited") == "limited"


def test_company_ampersand_reads_as_and() -> None:
    assert normalise_company("Marks & Spencer plc") == normalise_company("marks and spencer")


def test_company_accents_are_stripped() -> None:
    assert normalise_company("Café Nöir GmbH") == "cafe noir"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_plain_ascii_gives_the_same_words_as_the_full_unicode_path(text: str) -> None:
    # A no-break space is a separator, and sends the text down the full Unicode path.
    assert fold_words(text) == fold_words(text + "\u00a0")
    assert normalise_name(text) == normalise_name(text + "\u00a0")
    assert normalise_company(text) == normalise_company(text + "\u00a0")


def test_fold_words_drops_apostrophes_and_splits_at_everything_else() -> None:
    assert fold_words("O'Neill-SMITH & Brontë_Söhne") == ["oneill", "smith", "bronte", "sohne"]
