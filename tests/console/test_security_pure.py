"""The console's pure security decisions on data alone: where a sign-in may lead, how long a
name waits after failing, and which passwords are too easy to guess."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from mailer.console.security import safe_next
from mailer.store.users import Throttle, delay_after_s, password_problem

THROTTLE = Throttle(free_failures=5, client_failures=20, window_s=900.0, lockout_s=900.0)
PIECES = st.sampled_from(["/", "//", "\\", "%09", "%0a", "%0d", "%5c", "%2f", "\t", "\n", " ",
                          "https:", "evil.example", "a", "?q=1", "#x", "%", "\x00", "\u200b"])


@given(st.one_of(st.text(max_size=40), st.lists(PIECES, max_size=8).map("".join)))
def test_whatever_next_says_the_console_goes_only_to_a_path_of_its_own(target: str) -> None:
    chosen = safe_next(target)
    location = URL(chosen)  # what aiohttp puts in the Location header
    assert chosen == "/" or chosen == target
    assert chosen.startswith("/") and not unquote(chosen).startswith("//")
    assert not location.host and not location.scheme
    assert str(location).startswith("/") and not str(location).startswith("//")


def test_a_name_waits_nothing_until_its_free_attempts_are_used_then_doubling_to_a_cap() -> None:
    waits = [delay_after_s(n, THROTTLE) for n in range(1, 12)]
    assert waits == [0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900]
    assert delay_after_s(10_000, THROTTLE) == 900


def test_passwords_easy_to_guess_are_named_as_such_and_good_ones_pass() -> None:
    for weak in ("aaaaaaaaaaaa", " " * 12, "Password123!", "qwertyuiop12"):
        problem = password_problem(weak)
        assert problem is not None and problem.startswith("too easy to guess ("), weak
    assert password_problem("short") == "use at least 12 characters"
    assert password_problem("marketing-anna-2026", "marketing-anna") is not None
    assert password_problem("plum kettle orbit saffron") is None
    # A long one is judged by its start (zxcvbn reads at most 72 characters).
    assert password_problem("x" * 5000 + "plum kettle orbit saffron") is not None
