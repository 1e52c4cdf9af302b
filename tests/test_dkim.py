"""DKIM: every signature verifies with dkimpy against its record; a bad key is one line."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim as dkimpy
import nacl.encoding
import nacl.signing
import pytest

from mailer.errors import SettingsError
from mailer.mail import dkim
from mailer.settings import DkimAlgorithm, DkimSettings

DOMAIN = "imperialtelecom.co.uk"
SELECTOR = "mail2026"

MESSAGE = (
    b"From: Imperial Telecom <news@imperialtelecom.co.uk>\r\n"
    b"To: Ada <ada@example.com>\r\n"
    b"Subject: Our new broadband offer\r\n"
    b"Date: Wed, 02 Dec 2026 08:00:00 +0000\r\n"
    b"Message-ID: <x7f3k@imperialtelecom.co.uk>\r\n"
    b"List-Unsubscribe: <https://imperialtelecom.co.uk/u/1.offers.abc>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Mailer-Campaign: 12\r\n"
    b"Feedback-ID: c12:offers:imperialtelecom\r\n"
    b"\r\n"
    b"Hello Ada,\r\n\r\nFaster broadband is here.  \r\n"
)


@pytest.fixture(scope="module")
def rsa_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="module")
def ed25519_key() -> str:
    seed = nacl.signing.SigningKey.generate()
    return seed.encode(encoder=nacl.encoding.Base64Encoder).decode("ascii")


def signer_for(algorithm: DkimAlgorithm, rsa_key_file: Path, ed25519_key: str) -> dkim.Signer:
    if algorithm == "rsa-sha256":
        settings = DkimSettings(domain=DOMAIN, selector=SELECTOR, private_key_file=rsa_key_file)
    else:
        settings = DkimSettings(domain=DOMAIN, selector=SELECTOR, private_key=ed25519_key,
                                algorithm="ed25519-sha256")
    signer = dkim.load_signer(settings)
    assert signer is not None
    return signer


def dns_of(signer: dkim.Signer) -> Callable[..., bytes | None]:
    """A DNS that knows one TXT record: the one `mailer dkim dns` tells the operator to publish."""
    def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
        wanted = (signer.dns_name() + ".").encode("ascii")
        asked = name if isinstance(name, bytes) else name.encode("ascii")
        return signer.dns_value().encode("ascii") if asked.rstrip(b".") + b"." == wanted else None
    return lookup


ALGORITHMS: tuple[DkimAlgorithm, ...] = ("rsa-sha256", "ed25519-sha256")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signed_message_verifies_against_the_published_record(
    algorithm: DkimAlgorithm, rsa_key_file: Path, ed25519_key: str
) -> None:
    signer = signer_for(algorithm, rsa_key_file, ed25519_key)
    signed = signer.sign(MESSAGE)
    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(MESSAGE)
    assert dkimpy.verify(signed, dnsfunc=dns_of(signer))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signature_uses_relaxed_canonicalisation_and_signs_the_present_listed_headers(
    algorithm: DkimAlgorithm, rsa_key_file: Path, ed25519_key: str
) -> None:
    signer = signer_for(algorithm, rsa_key_file, ed25519_key)
    verifier = dkimpy.DKIM(signer.sign(MESSAGE))
    assert verifier.verify(dnsfunc=dns_of(signer))
    fields = verifier.signature_fields
    assert fields[b"c"] == b"relaxed/relaxed"
    assert fields[b"a"] == algorithm.encode()
    assert fields[b"d"] == DOMAIN.encode()
    assert fields[b"s"] == SELECTOR.encode()
    signed = [h.strip().lower() for h in fields[b"h"].split(b":")]
    assert signed == [h.lower().encode() for h in dkim.SIGNED_HEADERS]
    assert b"x-mailer-campaign" not in signed


def test_headers_absent_from_a_message_are_not_listed(rsa_key_file: Path, ed25519_key: str) -> None:
    signer = signer_for("rsa-sha256", rsa_key_file, ed25519_key)
    plain = (b"From: news@imperialtelecom.co.uk\r\nTo: ada@example.com\r\nSubject: Hi\r\n"
             b"Message-ID: <a1@imperialtelecom.co.uk>\r\n\r\nbody\r\n")
    verifier = dkimpy.DKIM(signer.sign(plain))
    assert verifier.verify(dnsfunc=dns_of(signer))
    assert verifier.signature_fields[b"h"].replace(b" ", b"") == b"from:to:subject:message-id"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_altered_body_or_signed_header_no_longer_verifies_but_refolding_does(
    algorithm: DkimAlgorithm, rsa_key_file: Path, ed25519_key: str
) -> None:
    signer = signer_for(algorithm, rsa_key_file, ed25519_key)
    signed = signer.sign(MESSAGE)
    dns = dns_of(signer)
    assert not dkimpy.verify(signed.replace(b"Faster", b"Slower"), dnsfunc=dns)
    assert not dkimpy.verify(signed.replace(b"Our new", b"Your new"), dnsfunc=dns)
    # Relaxed (RFC 6376 §3.4.2, §3.4.4): a relay's re-folding and trailing spaces are fine.
    refolded = signed.replace(b"Subject: Our new", b"Subject: Our\r\n  new").replace(
        b"here.  \r\n", b"here.\r\n")
    assert dkimpy.verify(refolded, dnsfunc=dns)


def test_dns_record_names_selector_and_domain_and_carries_the_public_key(
    rsa_key_file: Path, ed25519_key: str
) -> None:
    rsa = signer_for("rsa-sha256", rsa_key_file, ed25519_key)
    assert rsa.dns_name() == f"{SELECTOR}._domainkey.{DOMAIN}"
    assert rsa.dns_record().startswith(
        f'{SELECTOR}._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=rsa; p=')
    openssl = subprocess.run(["openssl", "rsa", "-in", str(rsa_key_file), "-pubout",
                              "-outform", "DER"], check=True, capture_output=True).stdout
    assert rsa.dns_value() == f"v=DKIM1; k=rsa; p={base64.b64encode(openssl).decode()}"
    ed = signer_for("ed25519-sha256", rsa_key_file, ed25519_key)
    assert ed.dns_value().startswith("v=DKIM1; k=ed25519; p=")


def test_dkim_off_gives_no_signer() -> None:
    assert dkim.load_signer(DkimSettings()) is None


def test_missing_key_file_is_one_line_naming_the_key(tmp_path: Path) -> None:
    settings = DkimSettings(domain=DOMAIN, selector=SELECTOR,
                            private_key_file=tmp_path / "nope.pem")
    with pytest.raises(SettingsError) as caught:
        dkim.load_signer(settings)
    assert str(caught.value) == (f"[dkim] private_key_file: cannot read {tmp_path / 'nope.pem'}: "
                                 "No such file or directory")


def test_garbage_key_file_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "dkim.pem"
    path.write_text("-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n"
                    "-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(SettingsError) as caught:
        dkim.load_signer(DkimSettings(domain=DOMAIN, selector=SELECTOR, private_key_file=path))
    assert str(caught.value) == "[dkim] private_key_file: not an RSA private key in PEM form"


def test_short_rsa_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "512"], check=True,
                   capture_output=True)
    with pytest.raises(SettingsError, match=r"^\[dkim\] private_key_file: RSA key of 512 bits"):
        dkim.load_signer(DkimSettings(domain=DOMAIN, selector=SELECTOR, private_key_file=path))


def test_bad_ed25519_key_from_the_environment_names_the_variable() -> None:
    settings = DkimSettings(domain=DOMAIN, selector=SELECTOR, private_key="c2hvcnQ=",
                            algorithm="ed25519-sha256")
    with pytest.raises(SettingsError) as caught:
        dkim.load_signer(settings)
    assert str(caught.value).startswith("MAILER_DKIM_KEY: not an ed25519 private key")


def test_the_private_key_never_appears_in_a_repr(rsa_key_file: Path, ed25519_key: str) -> None:
    signer = signer_for("ed25519-sha256", rsa_key_file, ed25519_key)
    settings = DkimSettings(domain=DOMAIN, selector=SELECTOR, private_key=ed25519_key,
                            algorithm="ed25519-sha256")
    assert ed25519_key not in repr(signer)
    assert ed25519_key not in repr(settings)


# Messages whose canonical forms differ from what was written in every way RFC 6376 §3.4
# allows: folded and tab-indented fields, runs of spaces, spaces before line ends, trailing
# empty lines, an empty body, no space after a colon, upper-case names, a field given twice
# (the last one is signed), an unsigned field between signed ones, LF line ends, 8-bit text.
CORPUS = [
    MESSAGE,
    MESSAGE.replace(b"Subject: Our new broadband offer", b"Subject:  Our new\r\n\t broadband"
                    b"   offer  "),
    MESSAGE.replace(b"To: Ada <ada@example.com>", b"TO:Ada <ada@example.com>\r\nX-Note: x\r\n"
                    b"To: Bob <bob@example.com>"),
    MESSAGE + b"\r\n\r\n\r\n",
    MESSAGE[:MESSAGE.index(b"\r\n\r\n") + 4],
    MESSAGE.replace(b"\r\n", b"\n"),
    MESSAGE.replace(b"Hello Ada,", b"Hello \t Ada,\t").replace(b"is here.",
                                                               "c\u2019est là".encode()),
    MESSAGE + b"\r\n.\r\n -- \r\n",
]


def present_signed_headers(message: bytes) -> list[bytes]:
    present = {name.lower() for name, _ in dkimpy.rfc822_parse(message)[0]}
    return [h.encode() for h in dkim.SIGNED_HEADERS if h.lower().encode() in present]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("number", range(len(CORPUS)))
def test_the_signature_is_byte_for_byte_the_one_dkimpy_signing_alone_writes(
    algorithm: DkimAlgorithm, number: int, rsa_key_file: Path, ed25519_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = CORPUS[number]
    signer = signer_for(algorithm, rsa_key_file, ed25519_key)
    ours = signer.sign(message, now=1_796_000_000)
    # dkimpy's own `sign` (its parser, canonicalisation and, for RSA, its pure-Python
    # RSASSA-PKCS1-v1_5, deterministic like ed25519) at the same signing time.
    monkeypatch.setattr(dkimpy.time, "time", lambda: 1_796_000_000.5)
    key = rsa_key_file.read_bytes() if algorithm == "rsa-sha256" else ed25519_key.encode()
    theirs = dkimpy.sign(message, SELECTOR.encode(), DOMAIN.encode(), key,
                         canonicalize=(b"relaxed", b"relaxed"),
                         signature_algorithm=algorithm.encode(),
                         include_headers=present_signed_headers(message),
                         linesep=b"\r\n")
    assert ours == theirs + message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert dkimpy.verify(ours, dnsfunc=dns_of(signer))
