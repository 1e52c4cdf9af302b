"""Reading a customers CSV never assumes consent (`mailer.importer`): pure, on data alone."""

from __future__ import annotations

import io

import pytest

from mailer.errors import ConsentNotNamed
from mailer.importer import CustomerRow, read_rows


def rows(text: str, default: bool | None = None) -> list[CustomerRow]:
    out = list(read_rows(io.StringIO(text), consent_default=default))
    assert all(isinstance(r, CustomerRow) for r in out)
    return [r for r in out if isinstance(r, CustomerRow)]


@pytest.mark.parametrize(("header", "missing"), [
    ("name,email", "'announcements' or 'offers'"),
    ("name,email,offers", "'announcements'"),
    ("email,name,announcements", "'offers'"),
])
def test_a_header_without_a_consent_column_is_refused_unless_a_default_is_named(
    header: str, missing: str
) -> None:
    with pytest.raises(ConsentNotNamed) as refused:
        rows(f"{header}\n")
    assert str(refused.value) == (
        f"line 1: no {missing} column, so the file does not say what these customers agreed to")


def test_the_named_default_fills_missing_columns_and_empty_cells_and_says_so() -> None:
    (ann, bob) = rows("name,email,offers\nAnn,ann@example.com,no\nBob,bob@example.com,\n",
                      default=True)
    assert (ann.announcements, ann.offers, ann.defaulted) == (True, False, ("announcements",))
    assert (bob.announcements, bob.offers, bob.defaulted) == (
        True, True, ("announcements", "offers"))


def test_a_file_with_both_columns_needs_no_default_and_an_empty_cell_stays_unanswered() -> None:
    (ann,) = rows("name,email,announcements,offers\nAnn,ann@example.com,yes,\n")
    assert (ann.announcements, ann.offers, ann.defaulted) == (True, None, ())
