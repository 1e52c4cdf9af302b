"""DKIM: signing every message we send, and the DNS record that lets receivers check it.

RFC 6376 signatures made with `dkimpy`: rsa-sha256, or ed25519-sha256 (RFC 8463), with
relaxed/relaxed canonicalisation (RFC 6376 §3.4: survives the header re-folding and trailing
whitespace changes relays make). The signed headers are the ones that say who sent what to
whom and how to leave: From, To, Subject, Date, Message-ID, List-Unsubscribe,
List-Unsubscribe-Post (RFC 8058 §4 asks for both to be signed for one-click to be trusted),
MIME-Version, Content-Type and Feedback-ID; only those present in a message are listed.

The key is read and checked once, at start (`load_signer`): a missing, unreadable or invalid
key is one `SettingsError` line naming `[dkim] private_key_file` or `MAILER_DKIM_KEY`.

Speed: dkimpy does RSA in pure Python (about 9.5 ms a message for RSA-2048) and parses the PEM
key again for every message (about 1 ms). `_install_fast_rsa` is the ONE place that changes
that: it replaces the two names dkimpy's `DKIM.sign`/`DKIM.gen_header` call in the `dkim`
module -- `parse_pem_private_key` (now cached per key) and `RSASSA_PKCS1_v1_5_sign` (now
`cryptography`'s RSASSA-PKCS1-v1_5 over the SHA-256 digest dkimpy computed, RFC 8017 §8.2.1,
the same bytes). Canonicalisation, the hashed header list and the DKIM-Signature header are
still dkimpy's own; every signature is checked with dkimpy's verifier in the tests.
"""

from __future__ import annotations

import base64
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim as dkimpy
import nacl.encoding
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from mailer.errors import SettingsError
from mailer.settings import DkimAlgorithm, DkimSettings

log = logging.getLogger(__name__)


_dkimpy_rsa_sign = dkimpy.RSASSA_PKCS1_v1_5_sign


@functools.lru_cache(maxsize=8)
def _cached_pem_key(data: bytes) -> dict[str, int]:
    parsed: dict[str, int] = parse_pem_private_key(data)
    return parsed


@functools.lru_cache(maxsize=8)
def _rsa_key(modulus: int, public_exponent: int, private_exponent: int, p: int, q: int,
             dmp1: int, dmq1: int, iqmp: int) -> rsa.RSAPrivateKey:
    numbers = rsa.RSAPrivateNumbers(p, q, private_exponent, dmp1, dmq1, iqmp,
                                    rsa.RSAPublicNumbers(public_exponent, modulus))
    return numbers.private_key()


def _fast_rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's `RSASSA_PKCS1_v1_5_sign(hash, private_key)`, done by `cryptography`."""
    if digest.name.lower() != "sha256":  # rsa-sha1 (RFC 8301 forbids signing with it)
        result: bytes = _dkimpy_rsa_sign(digest, private_key)
        return result
    key = _rsa_key(private_key["modulus"], private_key["publicExponent"],
                   private_key["privateExponent"], private_key["prime1"],
                   private_key["prime2"], private_key["exponent1"], private_key["exponent2"],
                   private_key["coefficient"])
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def _install_fast_rsa() -> None:
    """Point dkimpy's RSA key parsing and signing at the fast versions (see the module)."""
    dkimpy.parse_pem_private_key = _cached_pem_key
    dkimpy.RSASSA_PKCS1_v1_5_sign = _fast_rsa_sign


_install_fast_rsa()

SIGNED_HEADERS: tuple[str, ...] = (
    "From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post",
    "MIME-Version", "Content-Type",
    # Gmail's feedback loop only trusts a Feedback-ID covered by the DKIM signature.
    "Feedback-ID",
)
_SIGNED_LOWER = frozenset(h.lower() for h in SIGNED_HEADERS)
# RFC 6376 §3.3.3: keys under 1024 bits are not to be trusted (dkimpy refuses them too).
_MIN_RSA_BITS = 1024
_CHECK_MESSAGE = b"From: a@example.com\r\nSubject: check\r\n\r\nkey check\r\n"


@dataclass(frozen=True)
class Signer:
    """Signs message bytes for one domain and selector with one key (already checked)."""

    domain: str
    selector: str
    algorithm: DkimAlgorithm
    # PEM (RSA) or base64 seed (ed25519), as dkimpy takes it; never in a repr or a log line.
    key: bytes = field(repr=False)

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header field in front (RFC 6376 §5.6)."""
        present = _present_headers(message)
        include = [h.encode("ascii") for h in SIGNED_HEADERS if h.lower() in present]
        header: bytes = dkimpy.sign(
            message, self.selector.encode("ascii"), self.domain.encode("ascii"), self.key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=self.algorithm.encode("ascii"),
            include_headers=include, linesep=b"\r\n",
        )
        return header + message

    def dns_name(self) -> str:
        """Where the public key is published (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_value(self) -> str:
        """The TXT record value: ``v=DKIM1; k=rsa; p=...`` (RFC 6376 §3.6.1)."""
        if self.algorithm == "ed25519-sha256":
            signing = nacl.signing.SigningKey(self.key, encoder=nacl.encoding.Base64Encoder)
            public = bytes(signing.verify_key)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode('ascii')}"
        parsed = parse_pem_private_key(self.key)
        spki = _rsa_subject_public_key_info(parsed["modulus"], parsed["publicExponent"])
        return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"

    def dns_record(self) -> str:
        """The record to publish, as a zone-file line."""
        return f'{self.dns_name()}. IN TXT "{self.dns_value()}"'


def load_signer(settings: DkimSettings) -> Signer | None:
    """The signer `[dkim]` describes, or None when DKIM is off; SettingsError for a bad key."""
    if not settings.enabled:
        return None
    if settings.private_key:
        where = "MAILER_DKIM_KEY"
        key = settings.private_key.encode("utf-8")
    else:
        path = settings.private_key_file
        where = "[dkim] private_key_file"
        if path is None:
            raise SettingsError(f"{where}: missing value (or set MAILER_DKIM_KEY)")
        key = _read_key(where, path)
    signer = Signer(domain=settings.domain, selector=settings.selector,
                    algorithm=settings.algorithm, key=key.strip() + b"\n")
    _check_key(where, signer)
    log.info("dkim signing as %s with %s", signer.dns_name(), signer.algorithm)
    return signer


def _read_key(where: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read {path}: {exc.strerror}") from exc


def _check_key(where: str, signer: Signer) -> None:
    """Prove the key works now rather than at the first send: parse it and sign once."""
    if signer.algorithm == "rsa-sha256":
        try:
            parsed = parse_pem_private_key(signer.key)
        except (UnparsableKeyError, ValueError, IndexError) as exc:
            raise SettingsError(f"{where}: not an RSA private key in PEM form") from exc
        bits = int(parsed["modulus"]).bit_length()
        if bits < _MIN_RSA_BITS:
            raise SettingsError(f"{where}: RSA key of {bits} bits is too short "
                                f"(at least {_MIN_RSA_BITS})")
    else:
        try:
            nacl.signing.SigningKey(signer.key.strip(), encoder=nacl.encoding.Base64Encoder)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise SettingsError(
                f"{where}: not an ed25519 private key (base64 of a 32-byte seed)") from exc
    try:
        signer.sign(_CHECK_MESSAGE)
    except dkimpy.DKIMException as exc:
        raise SettingsError(f"{where}: the key cannot sign: {exc}") from exc


def _present_headers(message: bytes) -> frozenset[str]:
    """Lower-cased names of the signable header fields present in `message`'s header."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[:end]
    names: set[str] = set()
    for line in head.splitlines():
        if not line or line[:1] in (b" ", b"\t"):
            continue  # a folded continuation (RFC 5322 §2.2.3)
        name = line.partition(b":")[0].strip().decode("ascii", "replace").lower()
        if name in _SIGNED_LOWER:
            names.add(name)
    return frozenset(names)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _der_integer(value: int) -> bytes:
    # A leading zero byte keeps a value whose top bit is set positive (X.690 §8.3).
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_RSA_ENCRYPTION = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))


def _rsa_subject_public_key_info(modulus: int, exponent: int) -> bytes:
    """DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of an RSA public key: what `p=` holds."""
    rsa_public_key = _der(0x30, _der_integer(modulus) + _der_integer(exponent))
    return _der(0x30, _RSA_ENCRYPTION + _der(0x03, b"\x00" + rsa_public_key))
