"""The DNS checks against a real authoritative server: every check passes on a correct zone,
and each broken record fails with its exact fix."""

from __future__ import annotations

from mailer.doctor.dns_checks import dns_checks, judge_reverse
from mailer.doctor.report import Check, Report
from mailer.doctor.resolver import Resolver
from mailer.mail.dkim import load_signer
from mailer.settings import DoctorSettings, Settings
from tests.doctor.conftest import DOMAIN, SELECTOR, World, rsa_pem
from tests.doctor.dns_zone import DnsServer


async def diagnose_dns(settings: Settings) -> Report:
    checks, _ = await dns_checks(Resolver(settings.doctor), settings, load_signer(settings.dkim))
    return Report.of(checks)


def only(report: Report, name: str) -> Check:
    return report.named(name)


async def test_every_dns_check_passes_on_a_correct_zone(world: World) -> None:
    report = await diagnose_dns(world.settings())

    assert report.exit_code == 0, report.checks
    assert only(report, "SPF").found == (
        f'{DOMAIN}: "v=spf1 ip4:127.0.0.1 ~all" (0 of 10 look-ups, covers 127.0.0.1)')
    assert only(report, "DKIM key").found == f"{SELECTOR}._domainkey.{DOMAIN}: rsa key matches ours"
    assert only(report, "DMARC alignment").result == "pass"
    assert only(report, "MX").found == f"{DOMAIN}: 10 mx.{DOMAIN}"
    assert [c.result for c in report.checks if c.name in ("MTA-STS", "TLS-RPT", "BIMI")] == [
        "info", "info", "info"]


async def test_no_spf_record_fails_with_the_record_to_publish(world: World) -> None:
    world.zone.remove(DOMAIN, "TXT")

    check = only(await diagnose_dns(world.settings()), "SPF")

    assert (check.result, check.found) == ("fail", f"{DOMAIN}: no SPF record")
    assert check.fix == f'publish {DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.1 ~all"'


async def test_two_spf_records_fail_with_the_one_record_to_keep(world: World) -> None:
    world.zone.txt(DOMAIN, "v=spf1 include:_spf.relay.test -all")
    world.zone.txt("_spf.relay.test", "v=spf1 ip4:192.0.2.0/24 -all")

    check = only(await diagnose_dns(world.settings()), "SPF")

    assert check.result == "fail"
    assert check.found.startswith(f"{DOMAIN}: 2 SPF records")
    assert check.fix == ('delete all but one, and make the one left '
                         '"v=spf1 ip4:127.0.0.1 include:_spf.relay.test -all"')


async def test_eleven_lookups_fail_with_flattening_as_the_fix(world: World) -> None:
    world.zone.remove(DOMAIN, "TXT")
    hosts = [f"h{i}.{DOMAIN}" for i in range(11)]
    for host in hosts:
        world.zone.a(host, "192.0.2.1")
    world.zone.txt(DOMAIN, "v=spf1 " + " ".join(f"a:{h}" for h in hosts) + " ~all")

    check = only(await diagnose_dns(world.settings()), "SPF")

    assert check.result == "fail"
    assert "needs more than 10 DNS look-ups (RFC 7208 §4.6.4" in check.found
    assert check.fix == ("replace include:, a: and mx: terms by the ip4:/ip6: ranges they "
                         "stand for until at most 10 remain, e.g. publish imperial.test. IN TXT "
                         '"v=spf1 ip4:127.0.0.1 ~all"')


async def test_ten_lookups_through_includes_still_pass(world: World) -> None:
    world.zone.remove(DOMAIN, "TXT")
    world.zone.txt(DOMAIN, "v=spf1 include:a.relay.test ip4:127.0.0.1 ~all")
    world.zone.txt("a.relay.test", "v=spf1 " + " ".join(f"a:h{i}.relay.test" for i in range(9))
                   + " -all")
    for i in range(9):
        world.zone.a(f"h{i}.relay.test", "192.0.2.1")

    check = only(await diagnose_dns(world.settings()), "SPF")

    assert (check.result, "(10 of 10 look-ups" in check.found) == ("pass", True)


async def test_spf_that_allows_every_server_fails(world: World) -> None:
    world.zone.remove(DOMAIN, "TXT")
    world.zone.txt(DOMAIN, "v=spf1 ip4:127.0.0.1 +all")

    check = only(await diagnose_dns(world.settings()), "SPF")

    assert (check.result, check.found) == (
        "fail", f'{DOMAIN}: "v=spf1 ip4:127.0.0.1 +all" allows any server to send (+all)')


async def test_spf_that_leaves_out_the_relay_warns_with_the_term_to_add(world: World) -> None:
    world.zone.remove(DOMAIN, "TXT")
    world.zone.txt(DOMAIN, "v=spf1 ip4:192.0.2.0/24 ~all")

    check = only(await diagnose_dns(world.settings()), "SPF")

    assert check.result == "warn"
    assert check.fix.startswith("add ip4:127.0.0.1 to the record")


async def test_a_dkim_key_that_is_not_ours_fails_with_our_record(world: World) -> None:
    settings = world.settings()
    ours = load_signer(settings.dkim)
    assert ours is not None
    other_file = world.path.parent / "other.pem"
    other_file.write_bytes(rsa_pem(1))
    other = load_signer(world.settings(dkim={"private_key_file": str(other_file)}).dkim)
    assert other is not None
    world.zone.remove(ours.dns_name(), "TXT")
    world.zone.txt(ours.dns_name(), other.dns_value())

    check = only(await diagnose_dns(settings), "DKIM key")

    assert check.result == "fail"
    assert check.found == (f"{SELECTOR}._domainkey.{DOMAIN}: the published rsa key is not the "
                           "public half of [dkim] private_key_file (rsa)")
    assert check.fix == (f"publish {ours.dns_record()} in its place (or set [dkim] to the key "
                         "it belongs to)")


async def test_no_dkim_record_fails_with_the_record_to_publish(world: World) -> None:
    settings = world.settings()
    signer = load_signer(settings.dkim)
    assert signer is not None
    world.zone.remove(signer.dns_name(), "TXT")

    check = only(await diagnose_dns(settings), "DKIM key")

    assert (check.result, check.fix) == ("fail", f"publish {signer.dns_record()}")


async def test_no_dmarc_record_fails_with_a_p_none_record(world: World) -> None:
    world.zone.remove(f"_dmarc.{DOMAIN}", "TXT")

    check = only(await diagnose_dns(world.settings()), "DMARC")

    assert (check.result, check.found) == ("fail", f"_dmarc.{DOMAIN}: no DMARC record")
    assert check.fix == (f'publish _dmarc.{DOMAIN}. IN TXT "v=DMARC1; p=none; '
                         f'rua=mailto:dmarc-reports@{DOMAIN}"')


async def test_dmarc_without_rua_warns(world: World) -> None:
    world.zone.remove(f"_dmarc.{DOMAIN}", "TXT")
    world.zone.txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=quarantine")

    report = await diagnose_dns(world.settings())

    assert only(report, "DMARC").found.startswith(f"_dmarc.{DOMAIN}: p=quarantine")
    reports = only(report, "DMARC reports")
    assert (reports.result, reports.fix) == (
        "warn", f'add "rua=mailto:dmarc-reports@{DOMAIN}" to the record')


async def test_misaligned_from_fails_with_the_settings_to_change(world: World) -> None:
    # The From domain is another company's: neither DKIM d= nor the bounce domain aligns.
    settings = world.settings(smtp={"sender": "Offers <news@offers-partner.test>"})
    world.zone.txt("_dmarc.offers-partner.test", "v=DMARC1; p=reject; rua=mailto:d@x.test")

    check = only(await diagnose_dns(settings), "DMARC alignment")

    assert check.result == "fail"
    assert check.found == (f"From offers-partner.test aligns with neither DKIM d={DOMAIN} "
                           f"(relaxed) nor SPF {DOMAIN} (relaxed)")
    assert check.fix == ('set [dkim] domain = "offers-partner.test" (and publish its key), or '
                         f"send From an address at {DOMAIN} ([smtp] sender)")


async def test_strict_alignment_refuses_a_subdomain(world: World) -> None:
    settings = world.settings(smtp={"sender": f"News <news@news.{DOMAIN}>"})
    world.zone.txt(f"_dmarc.news.{DOMAIN}", "v=DMARC1; p=none; adkim=s; aspf=s; "
                                            "rua=mailto:d@x.test")

    check = only(await diagnose_dns(settings), "DMARC alignment")

    assert check.result == "fail"
    assert "(strict)" in check.found


async def test_relaxed_alignment_takes_a_subdomain(world: World) -> None:
    settings = world.settings(smtp={"sender": f"News <news@news.{DOMAIN}>"})

    check = only(await diagnose_dns(settings), "DMARC alignment")  # _dmarc.imperial.test

    assert check.result == "pass"


async def test_no_mx_for_the_bounce_domain_fails(world: World) -> None:
    world.zone.remove(DOMAIN, "MX")

    check = only(await diagnose_dns(world.settings()), "MX")

    assert (check.result, check.found) == (
        "fail", f"{DOMAIN}: no MX record (bounces and complaints cannot come back)")
    assert check.fix.startswith(f"publish {DOMAIN}. IN MX 10 <the host that receives mail")


async def test_unsubscribe_host_that_does_not_resolve_fails(world: World) -> None:
    world.zone.remove(f"unsubscribe.{DOMAIN}", "A")

    check = only(await diagnose_dns(world.settings()), "Unsubscribe host")

    assert (check.result, check.fix) == (
        "fail", f"publish unsubscribe.{DOMAIN}. IN A <the address of the public listener's "
                "proxy>")


async def test_a_silent_nameserver_is_one_failure_naming_it(world: World) -> None:
    with DnsServer() as other:
        silent = other.address
    settings = world.settings(doctor={"nameservers": [silent]})
    resolver = Resolver(settings.doctor, timeout_s=0.5)

    checks, _ = await dns_checks(resolver, settings, load_signer(settings.dkim))

    assert [(c.name, c.result) for c in checks] == [("DNS", "fail")]
    assert checks[0].fix.startswith("check [doctor] nameservers")


def test_reverse_dns_must_lead_back_to_the_address() -> None:
    good = judge_reverse("relay.test", {"192.0.2.1": ["relay.test"]},
                         {"relay.test": ["192.0.2.1"]})
    bad = judge_reverse("relay.test", {"192.0.2.1": ["other.test"]}, {"other.test": []})

    assert (good.result, bad.result) == ("pass", "warn")
    assert bad.found == "relay.test: 192.0.2.1 (PTR other.test) not forward-confirmed"


async def test_the_resolver_reads_ptr_records_from_the_zone(dns: DnsServer) -> None:
    dns.zone.ptr("192.0.2.7", "relay.imperial.test")
    resolver = Resolver(DoctorSettings(nameservers=(dns.address,)))

    assert await resolver.ptr("192.0.2.7") == ["relay.imperial.test"]
    assert await resolver.txt("nothing.imperial.test") == []
