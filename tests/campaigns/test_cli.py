"""`mailer campaign ...`: the commands as an operator uses them, exit codes and one-line errors.

The commands run through click's CliRunner on the `mailer` command (`mailer --settings PATH
campaign ...`, whose group turns errors into exit codes); the Ctrl-C test runs it in a child
process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mailer.cli import main
from mailer.mail import tokens
from tests.campaigns.world import ROOT, SECRET, UNSUBSCRIBE_URL, World, parse, settings_mapping
from tests.helpers import run_cli, write_settings
from tests.servers import SmtpSink
from tests.waiting import wait_for_sync


class Cli:
    def __init__(self, world: World, settings_path: Path) -> None:
        self.world = world
        self.settings_path = settings_path

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--settings", str(self.settings_path), "campaign",
                                         *args])

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def write(world: World, port: int, **overrides: dict[str, Any]) -> Path:
    """The settings file `mailer` is run with: the world's database (either engine)."""
    return write_settings(world.tmp / "settings.toml",
                          settings_mapping(world.tmp, port, world.db, **overrides))


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, smtp_sink, database)


@pytest.fixture
def cli(world: World) -> Cli:
    return Cli(world, write(world, world.sink.port))


def create(cli: Cli, *extra: str) -> int:
    result = cli("create", "--kind", "offers", "--template", "welcome-offer",
                 "--subject", "An offer for {{ customer.name }}", *extra)
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip())


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mailer: ")
    return lines[0]


def test_create_prints_the_id_of_a_draft_or_a_scheduled_campaign(cli: Cli) -> None:
    draft = create(cli)
    scheduled = create(cli, "--at", "2031-05-06T07:08")
    shown = cli.json("show", str(scheduled))
    assert shown == {
        "id": scheduled, "kind": "offers", "subject": "An offer for {{ customer.name }}",
        "status": "scheduled", "scheduled_at": "2031-05-06T07:08:00.000000+00:00",
        "counts": {"audience": 0, "sent": 0, "failed": 0, "skipped": 0, "pending": 0},
        "status_reason": "",
        "deliverability": {"sent": 0, "bounced": {"hard": 0, "soft": 0}, "complaints": 0,
                           "rates": {"hard_bounce": 0.0, "soft_bounce": 0.0, "complaint": 0.0}},
    }
    assert cli.json("show", str(draft))["status"] == "draft"
    assert [c["id"] for c in cli.json("list")] == [draft, scheduled]


def test_a_template_error_is_refused_at_creation_naming_template_line_and_variable(
    cli: Cli, world: World,
) -> None:
    world.write_template("typo.txt", '{% extends "base.txt" %}\n{% block content %}\n'
                         'Dear {{ customer.name }},\n{{ customer.nmae }}\n{% endblock %}\n')
    result = cli("create", "--kind", "offers", "--template", "typo", "--subject", "Hello")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "campaigns/typo.txt line 4" in line and "nmae" in line
    assert cli.json("list") == []


@pytest.mark.parametrize(("args", "expected"), [
    (("--template", "no-such-template", "--subject", "Hi"), "no-such-template"),
    (("--template", "welcome-offer", "--subject", "{{ oops"), "subject"),
    (("--template", "welcome-offer", "--subject", "Hi", "--at", "soon"), "--at"),
])
def test_bad_campaign_definitions_exit_2_with_one_line(
    cli: Cli, args: tuple[str, ...], expected: str
) -> None:
    result = cli("create", "--kind", "offers", *args)
    assert result.exit_code == 2
    assert expected in one_line_error(result)
    assert cli.json("list") == []


def test_show_counts_the_ledger_and_says_why_a_campaign_is_paused(
    cli: Cli, world: World
) -> None:
    asyncio.run(world.add_customers(6, offers_every=2))
    campaign_id = create(cli)
    assert "(3 customers opted in to offers now)" in cli("show", str(campaign_id)).stdout
    world.sink.reject_recipients = {"c0@example.com"}
    result = cli("send", str(campaign_id))
    assert result.exit_code == 0, result.output
    assert cli.json("show", str(campaign_id))["counts"] == {
        "audience": 3, "sent": 2, "failed": 1, "skipped": 0, "pending": 0}
    world.rows("UPDATE campaigns SET status = 'paused', status_reason = 'paused: because'")
    assert "status:    paused (paused: because)" in cli("show", str(campaign_id)).stdout


def test_preview_prints_the_whole_message_that_customer_would_get(
    cli: Cli, world: World
) -> None:
    asyncio.run(world.add_customers(2))
    campaign_id = create(cli)
    result = cli("preview", str(campaign_id), "--to", "C1@example.com")
    assert result.exit_code == 0, result.output
    message = parse(result.stdout_bytes)
    assert message["To"].addresses[0].addr_spec == "c1@example.com"
    assert message["Subject"] == "An offer for Customer 1"
    assert "List-Unsubscribe" in message and "List-Unsubscribe-Post" in message
    # A preview is not a message we sent: its link is the sample, never the customer's own.
    assert f"<{UNSUBSCRIBE_URL}/SAMPLE>" in " ".join(str(message["List-Unsubscribe"]).split())
    assert f"{UNSUBSCRIBE_URL}/SAMPLE" in result.stdout
    assert world.sink.messages == []
    missing = cli("preview", str(campaign_id), "--to", "nobody@example.com")
    assert missing.exit_code == 1
    assert "no customer with email nobody@example.com" in one_line_error(missing)


def test_a_test_send_goes_to_the_given_address_marked_and_kept_off_the_ledger(
    cli: Cli, world: World
) -> None:
    asyncio.run(world.add_customers(2))
    campaign_id = create(cli)
    result = cli("test", str(campaign_id), "--to", "marketing@imperial.test")
    assert result.exit_code == 0, result.output
    [received] = world.sink.messages
    assert received.rcpt_tos == ("marketing@imperial.test",)
    message = parse(received.content)
    assert str(message["Subject"]).startswith("[TEST] ")
    # The test copies' link, which opens a page saying nothing was changed.
    assert (f"<{UNSUBSCRIBE_URL}/{tokens.token_for_test_copies(SECRET, campaign_id)}>"
            in " ".join(str(message["List-Unsubscribe"]).split()))
    # Its own random Message-ID: receivers drop a second message with an id they have seen.
    again = cli("test", str(campaign_id), "--to", "marketing@imperial.test")
    assert again.exit_code == 0, again.output
    ids = {str(parse(m.content)["Message-ID"]) for m in world.sink.messages}
    assert len(ids) == 2
    assert cli.json("show", str(campaign_id))["status"] == "draft"
    assert world.rows("SELECT count(*) FROM campaign_recipients") == [(0,)]


def test_test_copies_stop_at_the_daily_cap_per_campaign_with_one_line(
    world: World,
) -> None:
    cli = Cli(world, write(world, world.sink.port, campaigns={"test_copies_per_day": 2}))
    first, second = create(cli), create(cli)
    for _ in range(2):
        assert cli("test", str(first), "--to", "marketing@imperial.test").exit_code == 0
    refused = cli("test", str(first), "--to", "marketing@imperial.test")
    assert refused.exit_code == 1
    assert one_line_error(refused) == (
        f"mailer: campaign {first}: 2 test copies sent today, the most [campaigns] "
        "test_copies_per_day allows; send more tomorrow (UTC)")
    assert len(world.sink.messages) == 2
    # The cap is per campaign.
    assert cli("test", str(second), "--to", "marketing@imperial.test").exit_code == 0
    assert len(world.sink.messages) == 3


def test_a_test_copy_the_server_refused_does_not_count_against_the_cap(world: World) -> None:
    cli = Cli(world, write(world, world.sink.port, campaigns={"test_copies_per_day": 1}))
    campaign_id = create(cli)
    world.sink.fail_next(1)
    failed = cli("test", str(campaign_id), "--to", "marketing@imperial.test")
    assert failed.exit_code != 0
    assert cli("test", str(campaign_id), "--to", "marketing@imperial.test").exit_code == 0
    assert len(world.sink.messages) == 1


def test_send_mails_everyone_and_reports_without_a_terminal(cli: Cli, world: World) -> None:
    asyncio.run(world.add_customers(20))
    campaign_id = create(cli)
    result = cli("send", str(campaign_id))
    assert result.exit_code == 0, result.output
    assert f"campaign {campaign_id}: sent; 20 sent, 0 failed, 0 skipped" in result.stdout
    assert len(world.sink.messages) == 20 and set(world.received().values()) == {1}
    again = cli("send", str(campaign_id))
    assert again.exit_code == 1
    assert f"campaign {campaign_id} is sent" in one_line_error(again)


def test_a_one_shot_send_logs_warnings_only_unless_asked(cli: Cli, world: World) -> None:
    asyncio.run(world.add_customers(3))
    quiet = run_cli(cli.settings_path, "campaign", "send", str(create(cli)))
    assert (quiet.code, quiet.stderr) == (0, "")  # stderr is a pipe here, not a terminal
    told = run_cli(cli.settings_path, "--log-level", "info", "campaign", "send",
                   str(create(cli)))
    assert told.code == 0, told.stderr
    assert " INFO mailer.campaigns.sender: campaign " in told.stderr


def test_a_send_the_smtp_server_never_answers_pauses_and_exits_3(world: World) -> None:
    cli = Cli(world, write(world, 1, smtp={"max_attempts": 1}))  # nothing on port 1
    asyncio.run(world.add_customers(2))
    campaign_id = create(cli)
    result = cli("send", str(campaign_id))
    assert result.exit_code == 3
    assert one_line_error(result).startswith(
        f"mailer: campaign {campaign_id} paused: SMTP server unavailable: ")
    assert world.rows("SELECT paused_by FROM campaigns") == [("smtp-unavailable",)]


def test_send_without_a_secret_refuses_in_one_line(world: World) -> None:
    cli = Cli(world, write(world, world.sink.port, campaigns={"secret": ""}))
    asyncio.run(world.add_customers(2))
    campaign_id = create(cli)
    result = cli("send", str(campaign_id))
    assert result.exit_code == 2
    assert "[campaigns] secret" in one_line_error(result)
    assert world.sink.messages == []


def test_send_and_test_with_a_weak_secret_refuse_as_mailer_run_does(world: World) -> None:
    cli = Cli(world, write(world, world.sink.port, campaigns={"secret": "short"}))
    asyncio.run(world.add_customers(2))
    campaign_id = create(cli)
    for command in (("send", str(campaign_id)), ("test", str(campaign_id), "--to",
                                                  "marketing@imperial.test")):
        result = cli(*command)
        assert result.exit_code == 2, command
        assert one_line_error(result).startswith("mailer: [campaigns] secret: too short")
    assert world.sink.messages == []


def test_status_commands_move_the_campaign_or_refuse_in_one_line(cli: Cli) -> None:
    draft = create(cli)
    refused = cli("pause", str(draft))
    assert refused.exit_code == 1
    assert f"campaign {draft} is draft" in one_line_error(refused)
    scheduled = create(cli, "--at", "2031-01-01T00:00")
    assert cli("pause", str(scheduled)).stdout.strip() == f"campaign {scheduled} is paused"
    resumed = cli("resume", str(scheduled))
    assert resumed.exit_code == 0 and "is scheduled (scheduled for 20" in resumed.stdout
    assert cli("cancel", str(scheduled)).stdout.strip() == f"campaign {scheduled} is cancelled"
    wrong_state = cli("resume", str(scheduled))
    assert wrong_state.exit_code == 1
    assert one_line_error(wrong_state).endswith(
        f"campaign {scheduled} is cancelled; only a paused campaign can be resumed")
    missing = cli("show", "999")
    assert missing.exit_code == 1 and "no campaign 999" in one_line_error(missing)


def test_a_draft_is_scheduled_later_and_moved_and_a_paused_one_resumes_at_a_time(
    cli: Cli, world: World,
) -> None:
    draft = create(cli)
    scheduled = cli("schedule", str(draft), "--at", "2031-01-01T09:00+01:00")
    assert scheduled.stdout.strip() == (
        f"campaign {draft} is scheduled (scheduled for 2031-01-01T08:00:00.000000+00:00)")
    moved = cli("schedule", str(draft), "--at", "2031-02-01T09:00")
    assert "scheduled for 2031-02-01T09:00:00.000000+00:00" in moved.stdout
    assert cli("pause", str(draft)).exit_code == 0
    world.rows("UPDATE campaigns SET status_reason = 'paused by operator'")
    resumed_later = cli("schedule", str(draft), "--at", "2031-03-01T09:00Z")
    assert "is scheduled (scheduled for 2031-03-01T09:00" in resumed_later.stdout
    shown = json.loads(cli("show", str(draft), "--json").stdout)
    assert shown["status"] == "scheduled" and shown["status_reason"] == ""
    bad_time = cli("schedule", str(draft), "--at", "next tuesday")
    assert bad_time.exit_code == 2
    assert "--at 'next tuesday': expected an ISO 8601 time" in one_line_error(bad_time)
    assert cli("cancel", str(draft)).exit_code == 0
    refused = cli("schedule", str(draft), "--at", "2031-03-01T09:00")
    assert refused.exit_code == 1
    assert one_line_error(refused).endswith(
        f"campaign {draft} is cancelled; only a draft, scheduled or paused campaign can be "
        "scheduled")


def test_a_time_already_past_is_refused_in_one_line_and_nothing_is_scheduled(
    cli: Cli, world: World,
) -> None:
    past = "2020-06-01T09:00Z"
    created = cli("create", "--kind", "offers", "--template", "welcome-offer",
                  "--subject", "An offer", "--at", past)
    assert created.exit_code == 2
    line = one_line_error(created)
    assert line.startswith(f"mailer: --at '{past}': 2020-06-01 09:00 UTC is in the past")
    assert line.endswith("choose a later time, or use `campaign send` to send now")
    assert world.rows("SELECT count(*) FROM campaigns") == [(0,)]

    draft = create(cli)
    moved = cli("schedule", str(draft), "--at", past)
    assert moved.exit_code == 2
    assert "2020-06-01 09:00 UTC is in the past" in one_line_error(moved)
    assert world.rows("SELECT status, scheduled_at FROM campaigns") == [("draft", None)]
    assert world.sink.messages == []


_CHILD = """
import sys
from mailer.cli import main
main(args=["--settings", sys.argv[1], "campaign", *sys.argv[2:]], prog_name="mailer")
"""


def test_ctrl_c_during_send_pauses_cleanly_and_send_carries_on_exactly_once(
    cli: Cli, world: World
) -> None:
    asyncio.run(world.add_customers(80))
    campaign_id = create(cli)
    world.sink.delay_s = 0.02
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(cli.settings_path), "send", str(campaign_id)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_sync(lambda: len(world.sink.messages) >= 10 or child.poll() is not None,
                  what="10 messages sent or the sender gone")
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=20)
    assert f"campaign {campaign_id}: paused" in stdout
    assert child.returncode == 130, stderr
    assert "paused" in stderr.strip().splitlines()[-1]
    shown = cli.json("show", str(campaign_id))
    assert shown["status"] == "paused"
    assert "paused: interrupted" in cli("show", str(campaign_id)).stdout
    assert shown["counts"]["sent"] == len(world.sink.messages) < 80
    world.sink.delay_s = 0.0
    result = cli("send", str(campaign_id))
    assert result.exit_code == 0, result.output
    assert len(world.sink.messages) == 80 and set(world.received().values()) == {1}


def test_send_again_after_kill_9_of_send_carries_on_at_once(cli: Cli, world: World) -> None:
    asyncio.run(world.add_customers(80))
    campaign_id = create(cli)
    world.sink.delay_s = 0.02
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(cli.settings_path), "send", str(campaign_id)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_sync(lambda: len(world.sink.messages) >= 10 or child.poll() is not None,
                  what="10 messages sent or the sender gone")
    child.kill()
    assert child.wait(20) == -signal.SIGKILL
    # Its lease has not expired, but its holder is a dead process of this host.
    [(holder_pid,)] = world.rows("SELECT pid FROM leases")
    assert holder_pid == child.pid
    world.sink.delay_s = 0.0
    result = cli("send", str(campaign_id))
    assert result.exit_code == 0, result.output
    assert f"campaign {campaign_id}: sent; 80 sent" in result.stdout
    received = world.received()
    assert set(received) == world.opted_in()
    assert sum(n - 1 for n in received.values()) <= world.settings.smtp.max_connections
