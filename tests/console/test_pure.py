"""The console's pure parts on data alone: local times, search expressions, charts."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from mailer.console import chart, forms
from mailer.store.console import match_expression, tsquery_expression

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_a_london_winter_time_is_stored_as_the_same_utc_time() -> None:
    assert forms.local_to_utc("2027-01-15T09:30", "Europe/London", now=NOW) == (
        datetime(2027, 1, 15, 9, 30, tzinfo=UTC), "")


def test_a_london_summer_time_is_an_hour_earlier_in_utc() -> None:
    assert forms.local_to_utc("2027-07-01T09:30", "Europe/London", now=NOW)[0] == datetime(
        2027, 7, 1, 8, 30, tzinfo=UTC)


def test_the_hour_the_clocks_skip_is_refused_in_plain_words() -> None:
    when, problem = forms.local_to_utc("2027-03-28T01:30", "Europe/London", now=NOW)
    assert when is None and "does not exist in Europe/London" in problem


def test_the_hour_that_happens_twice_is_taken_as_the_first() -> None:
    when, _ = forms.local_to_utc("2027-10-31T01:30", "Europe/London", now=NOW)
    assert when == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)  # still BST


def test_a_past_time_an_unknown_zone_and_nonsense_are_refused() -> None:
    assert forms.local_to_utc("2020-01-01T09:00", "Europe/London", now=NOW)[1] == (
        "The send time must be in the future")
    assert forms.local_to_utc("2027-01-01T09:00", "Mars/Olympus", now=NOW)[1] == (
        "Choose a time zone from the list")
    assert forms.local_to_utc("next tuesday", "UTC", now=NOW)[1].startswith("Enter the date")
    assert forms.local_to_utc("", "UTC", now=NOW)[1].startswith("Enter the date")


@given(st.text(max_size=200))
def test_whatever_is_typed_becomes_quoted_prefix_words_or_nothing(text: str) -> None:
    expression = match_expression(text)
    if expression is None:
        return
    for term in expression.split(" AND "):
        assert term.startswith('"') and term.endswith('"*')
        assert '"' not in term[1:-2]


@given(st.text(max_size=200))
def test_whatever_is_typed_becomes_quoted_tsquery_prefixes_or_nothing(text: str) -> None:
    expression = tsquery_expression(text)
    if expression is None:
        return
    for term in expression.split(" & "):
        assert term.startswith("'") and term.endswith("':*")
        assert "'" not in term[1:-3].replace("''", "")


def test_the_chart_escapes_its_labels_and_sums_each_series() -> None:
    svg = chart.stacked_bars("Opt-outs <by> source", ["2026-12-01", "2026-12-02"],
                             {"email": [1, 2], "<script>": [0, 4]})
    assert "<script>" not in svg and "&lt;script&gt;: 4" in svg
    assert "email: 3" in svg
    assert svg.count("<rect") == 3  # three non-zero bars
    key = chart.legend(["email", "<script>"])
    assert "<script>" not in key and "&lt;script&gt;" in key and key.count("<rect") == 2


def test_the_chart_is_labelled_on_both_sides_so_its_scale_shows_at_its_end() -> None:
    svg = chart.stacked_bars("Sent", ["2026-12-01", "2026-12-02"], {"sent": [3, 7]})
    assert svg.count(">10</text>") == 2 and svg.count(">0</text>") == 2
    assert ">12-02</text>" in svg  # the last day, today, is labelled


def test_the_axis_top_is_a_round_number_at_or_above_the_highest_bar() -> None:
    assert [chart.nice_top(v) for v in (0, 1, 3, 7, 10, 11, 260, 4001)] == [
        1, 1, 5, 10, 10, 20, 500, 5000]
