"""The pure campaign decisions: the status machine, schedules, the failure policy, retries
and the rate limiter's arithmetic (time moved by hand, never slept)."""

from __future__ import annotations

import pytest

from mailer.backoff import CAMPAIGN_SEND, Backoff
from mailer.campaigns.failures import FailureTally, failure_threshold_passed, retry_delay_s
from mailer.campaigns.model import Campaign, Counts, next_status, parse_schedule
from mailer.campaigns.pool import RateLimiter
from mailer.errors import CampaignInvalid, CampaignRefused
from tests.campaigns.clock import FakeClock


def campaign_with(status: str) -> Campaign:
    return Campaign(id=7, kind="offers", template="t", subject="s", status=status,
                    scheduled_at=None, created_at="", started_at=None, finished_at=None,
                    status_reason="", audience_at=None)


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "action", "expected"), [
    ("draft", "send", "sending"), ("scheduled", "send", "sending"),
    ("paused", "send", "sending"), ("sending", "send", "sending"),
    ("scheduled", "pause", "paused"), ("sending", "pause", "paused"),
    ("paused", "resume", "scheduled"),
    ("draft", "schedule", "scheduled"), ("scheduled", "schedule", "scheduled"),
    ("paused", "schedule", "scheduled"),
    ("draft", "cancel", "cancelled"), ("sending", "cancel", "cancelled"),
    ("paused", "cancel", "cancelled"),
])
def test_operator_actions_lead_to_their_status(status: str, action: str, expected: str) -> None:
    assert next_status(campaign_with(status), action) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "action"), [
    ("sent", "send"), ("cancelled", "send"), ("draft", "pause"), ("sent", "pause"),
    ("scheduled", "resume"), ("sending", "resume"), ("sent", "cancel"),
    ("cancelled", "cancel"), ("sending", "schedule"), ("sent", "schedule"),
    ("cancelled", "schedule"),
])
def test_actions_that_do_not_apply_are_refused_in_one_line(status: str, action: str) -> None:
    with pytest.raises(CampaignRefused) as excinfo:
        next_status(campaign_with(status), action)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "\n" not in message and f"campaign 7 is {status}" in message


def test_schedule_times_without_a_zone_are_utc_and_others_are_converted() -> None:
    now = FakeClock().now()  # 2030-01-02 09:00 UTC
    assert parse_schedule("2030-01-02T09:30", now=now) == "2030-01-02T09:30:00.000000+00:00"
    assert (parse_schedule("2030-01-02T11:30+02:00", now=now)
            == "2030-01-02T09:30:00.000000+00:00")
    with pytest.raises(CampaignInvalid, match="ISO 8601"):
        parse_schedule("next tuesday", now=now)


@pytest.mark.parametrize("text", ["2030-01-02T08:59", "2030-01-02T09:00", "2030-01-02T10:30+02:00",
                                  "2000-01-01T00:00:00Z"])
def test_a_schedule_time_already_past_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(CampaignInvalid) as refused:
        parse_schedule(text, now=FakeClock().now())
    assert str(refused.value).startswith(f"--at '{text}': ")
    assert "is in the past (it is now 2030-01-02 09:00 UTC)" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("text", ["9999-12-31T23:59-05:00", "0001-01-01T00:30+01:00"])
def test_a_schedule_time_outside_the_years_1_to_9999_in_utc_is_refused_in_one_line(
    text: str,
) -> None:
    with pytest.raises(CampaignInvalid) as caught:
        parse_schedule(text, now=FakeClock().now())
    assert str(caught.value) == f"--at {text!r}: in UTC that is outside the years 1 to 9999"


def test_failure_threshold_waits_for_the_minimum_sample() -> None:
    assert not failure_threshold_passed(Counts(sent=0, failed=9), threshold=0.2, min_sample=10)
    assert failure_threshold_passed(Counts(sent=7, failed=3), threshold=0.2, min_sample=10)
    assert not failure_threshold_passed(Counts(sent=8, failed=2), threshold=0.2, min_sample=10)


def test_retries_back_off_as_the_campaign_send_policy_says_up_to_max_attempts() -> None:
    policy = Backoff(base_s=1.0, max_s=5.0)
    assert [retry_delay_s(policy, n, 5) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert retry_delay_s(policy, 5, 5) is None
    assert retry_delay_s(CAMPAIGN_SEND, 1, 5) == CAMPAIGN_SEND.delay_s(1)


def test_resume_of_a_campaign_in_the_wrong_state_names_the_one_state_it_applies_to() -> None:
    with pytest.raises(CampaignRefused) as excinfo:
        next_status(campaign_with("sending"), "resume")
    assert str(excinfo.value) == ("campaign 7 is sending; only a paused campaign can be "
                                  "resumed")


def test_the_failure_tally_pauses_a_run_once_its_own_failures_pass_the_threshold() -> None:
    tally = FailureTally(threshold=0.5, min_sample=4)
    assert [tally.add(s, "550 no") for s in ("sent", "failed", "skipped", "failed")] == [
        None, None, None, None]  # 2 of 3 attempted: below the minimum sample
    reason = tally.add("failed", "550 5.1.1 unknown user")
    assert reason == ("paused: 3 of 4 attempted recipients failed (75%, above the failure "
                      "threshold of 50%); last reply: 550 5.1.1 unknown user")
    assert (tally.sent, tally.failed, tally.skipped) == (1, 3, 1)


def test_the_rate_limiter_spaces_messages_by_its_rate_as_time_moves() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20.0, clock=clock)
    # Five callers at the same instant queue one interval (1/20 s) apart.
    assert [limiter.reserve() for _ in range(5)] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    clock.advance(1.0)  # a quiet second refills the bucket (one message of burst)
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(0.05)


def test_a_rate_of_zero_means_no_limit() -> None:
    limiter = RateLimiter(0.0, clock=FakeClock())
    assert not limiter.limited
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
