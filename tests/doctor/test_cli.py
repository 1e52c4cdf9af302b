"""`mailer doctor` as an operator runs it: the real CLI in a subprocess against the whole test
world (DNS, TLS relay, Dovecot, the public app over TLS); the table, --json, the exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from mailer.doctor.report import Check, Report, table
from mailer.errors import SettingsError
from mailer.settings import load
from tests.doctor.conftest import DOMAIN, World
from tests.helpers import ROOT, base_sections, write_settings


async def doctor(settings_path: Path, *args: str) -> tuple[int, str, str]:
    """Run `mailer doctor` without blocking this loop (the public app answers from it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", "--settings", str(settings_path), "doctor", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_a_correct_setup_passes_every_check_and_exits_0(world: World,
                                                              listener: None) -> None:
    world.settings()  # writes the settings file

    code, out, err = await doctor(world.path)

    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    assert lines[0] == "DNS"
    assert [line for line in lines if line.startswith(("Servers", "Messages", "Reputation"))] \
        == ["Servers", "Messages", "Reputation"]
    assert not [line for line in lines if line.lstrip().startswith(("warn", "fail"))]
    assert any(line.lstrip().startswith("pass  Unsubscribe URL") for line in lines)
    assert lines[-1].endswith("passed, 0 warnings, 0 failed")


async def test_a_broken_record_exits_2_and_json_names_the_fix(world: World,
                                                              listener: None) -> None:
    world.settings()
    world.zone.remove(f"_dmarc.{DOMAIN}", "TXT")

    code, out, _ = await doctor(world.path, "--json")

    report = json.loads(out)
    assert (code, report["exit_code"]) == (2, 2)
    [dmarc] = [c for c in report["checks"] if c["name"] == "DMARC"]
    assert dmarc == {"area": "dns", "name": "DMARC", "result": "fail",
                     "found": f"_dmarc.{DOMAIN}: no DMARC record",
                     "fix": f'publish _dmarc.{DOMAIN}. IN TXT "v=DMARC1; p=none; '
                            f'rua=mailto:dmarc-reports@{DOMAIN}"'}


async def test_warnings_alone_exit_1(world: World, listener: None) -> None:
    world.settings(imap={"review_folder": "Not yet made"})

    code, out, _ = await doctor(world.path)

    assert code == 1, out
    assert "  warn  IMAP folders" in out
    assert "fix: run `mailer inbox process` once: it creates them" in out


def test_the_table_puts_each_fix_on_a_line_of_its_own() -> None:
    report = Report((Check("dns", "SPF", "fail", "x.test: no SPF record",
                           'publish x.test. IN TXT "v=spf1 a:relay.test ~all"'),
                     Check("dns", "MX", "pass", "x.test: 10 mx.x.test")))

    assert table(report).splitlines() == [
        "DNS",
        "  fail  SPF  x.test: no SPF record",
        '             fix: publish x.test. IN TXT "v=spf1 a:relay.test ~all"',
        "  pass  MX   x.test: 10 mx.x.test",
        "1 passed, 0 warnings, 1 failed",
    ]
    assert report.exit_code == 2


@pytest.mark.parametrize("value", ["dns.example", "127.0.0.1:0", "[::1]", "1.2.3.4:x"])
def test_a_nameserver_that_is_not_an_address_is_one_settings_line(tmp_path: Path,
                                                                   value: str) -> None:
    path = write_settings(tmp_path / "s.toml",
                          base_sections(tmp_path, doctor={"nameservers": [value]}))

    with pytest.raises(SettingsError) as raised:
        load(path)

    assert str(raised.value) == (f'[doctor] nameservers: expected "address" or '
                                 f'"address:port", got "{value}"')


def test_nameservers_with_and_without_ports(tmp_path: Path) -> None:
    path = write_settings(tmp_path / "s.toml", base_sections(
        tmp_path, doctor={"nameservers": ["9.9.9.9", "127.0.0.1:5353", "[::1]:53"]}))

    assert load(path).doctor.addresses() == (("9.9.9.9", 53), ("127.0.0.1", 5353),
                                             ("::1", 53))
