"""The evidence of an emailed request, on data alone: Message-ID, From, Date, and the DKIM/SPF/
DMARC verdicts of the one Authentication-Results header we trust (RFC 8601)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailer.inbox.authresults import MAX_FIELD_CHARS, Verdicts, email_evidence, verdicts
from tests.inbox.samples import plain_message

OURS = "mx.imperial.test"
RESULTS = st.sampled_from(["pass", "fail", "none", "neutral", "softfail", "temperror",
                           "permerror", "policy"])
HOSTS = st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){1,3}", fullmatch=True)


def header(authserv_id: str, dkim: str, spf: str, dmarc: str) -> str:
    return (f"{authserv_id}; dkim={dkim} header.d=example.org; "
            f"spf={spf} smtp.mailfrom=jo@example.org; dmarc={dmarc} header.from=example.org")


def test_a_request_with_our_header_records_its_verdicts_and_fields() -> None:
    raw = plain_message("Please stop.", Date="Sun, 06 Dec 2026 10:00:00 +0000",
                        Authentication_Results=header(OURS, "pass", "softfail", "fail"))

    found = email_evidence(raw, OURS)

    assert (found.message_id, found.sender, found.date) == (
        "<1@example.org>", "Jo Bloggs <jo@example.org>", "Sun, 06 Dec 2026 10:00:00 +0000")
    assert found.verdicts == Verdicts(dkim="pass", spf="softfail", dmarc="fail")


def test_a_header_of_another_server_records_no_verdict() -> None:
    raw = plain_message("Please stop.",
                        Authentication_Results=header("mx.forger.example", "pass", "pass", "pass"))

    assert email_evidence(raw, OURS).verdicts == Verdicts()


def test_with_no_authserv_id_configured_no_header_is_trusted() -> None:
    raw = plain_message("Please stop.", Authentication_Results=header(OURS, "pass", "pass", "pass"))

    assert email_evidence(raw, "").verdicts == Verdicts()


def test_only_the_topmost_header_of_ours_counts_so_a_forged_one_below_is_ignored() -> None:
    values = [header(OURS, "fail", "fail", "fail"), header(OURS, "pass", "pass", "pass")]

    assert verdicts(values, OURS) == Verdicts(dkim="fail", spf="fail", dmarc="fail")


def test_two_dkim_signatures_record_both_results_in_order() -> None:
    value = f"{OURS}; dkim=fail header.d=a.example; dkim=pass header.d=b.example; spf=pass"

    assert verdicts([value], OURS) == Verdicts(dkim="fail,pass", spf="pass")


def test_a_header_of_ours_that_cannot_be_parsed_gives_no_verdict() -> None:
    assert verdicts([f"{OURS}; dkim=", f"{OURS}; dkim=pass"], OURS) == Verdicts()


@given(ours=HOSTS, dkim=RESULTS, spf=RESULTS, dmarc=RESULTS, upper=st.booleans())
def test_our_header_gives_back_exactly_its_verdicts(
    ours: str, dkim: str, spf: str, dmarc: str, upper: bool
) -> None:
    written = ours.upper() if upper else ours  # a domain name compares without case
    assert verdicts([header(written, dkim, spf, dmarc)], ours) == Verdicts(dkim, spf, dmarc)


@given(ours=HOSTS, other=HOSTS, dkim=RESULTS, spf=RESULTS, dmarc=RESULTS)
def test_a_header_naming_any_other_server_never_gives_a_verdict(
    ours: str, other: str, dkim: str, spf: str, dmarc: str
) -> None:
    if other.lower() == ours.lower():
        other = "x" + other
    assert verdicts([header(other, dkim, spf, dmarc)], ours) == Verdicts()


@given(values=st.lists(st.text(max_size=200), max_size=4), ours=st.text(max_size=30))
def test_any_header_text_at_all_gives_verdicts_without_raising(
    values: list[str], ours: str
) -> None:
    assert isinstance(verdicts(values, ours), Verdicts)


@given(raw=st.binary(max_size=2000))
def test_any_bytes_give_bounded_one_line_evidence(raw: bytes) -> None:
    found = email_evidence(raw, OURS)
    for value in (found.message_id, found.sender, found.date):
        assert len(value) <= MAX_FIELD_CHARS and "\n" not in value and "\r" not in value
