"""DKIM signing cost: campaign messages per second built unsigned vs built and signed.

Same run, same process, same messages: `CampaignMessageBuilder.build` alone (the baseline),
then build + `mailer.mail.dkim.Signer.sign` with an RSA-2048 key (rsa-sha256) and with an ed25519
key (ed25519-sha256), and, for comparison, the same signatures made by `dkim.sign` (dkimpy
alone: its parser and canonicalisation of every field, its key parsed per message and, for
RSA, its pure-Python RSA), which `Signer.sign` matches byte for byte.
The figure that matters is the ratio signed / unsigned for each key type: how much of the
builder's rate signing leaves. A typical campaign message (subject, text and
HTML bodies of about 3 KB) is used. Keys are generated for the run (`openssl genrsa`, pynacl).

Each measurement is taken `--rounds` times (default 3), alternating, and the best rate kept,
so a burst of other work on the machine does not decide a ratio. Exit 0 (a measurement).

Run: `python bench/dkim_bench.py [--messages N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dkim as dkimpy
import nacl.encoding
import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailer import dkim  # noqa: E402
from mailer.campaigns.templates import RenderedCampaign  # noqa: E402
from mailer.mail.outgoing import CampaignHeaders, CampaignMessageBuilder  # noqa: E402
from mailer.settings import DkimSettings  # noqa: E402

TEXT = ("Dear customer,\n\nOur fastest broadband yet is now available on your street. "
        "Upgrade today and get three months at half price.\n\n" * 12)
HTML = "<html><body>" + "".join(f"<p>{line}</p>" for line in TEXT.splitlines()) + "</body></html>"


def rate(count: int, work: Callable[[int], bytes]) -> float:
    start = time.perf_counter()
    for i in range(count):
        work(i)
    return count / (time.perf_counter() - start)


def dkimpy_sign(key: bytes, algorithm: bytes) -> Callable[[bytes], bytes]:
    """`dkim.sign` with the signer's settings: what `mailer.mail.dkim.Signer.sign` replaces."""
    def sign(message: bytes) -> bytes:
        include = [h.encode() for h in dkim.SIGNED_HEADERS]
        present = {name.lower() for name, _ in dkimpy.rfc822_parse(message)[0]}
        header: bytes = dkimpy.sign(
            message, b"s1", b"imperialtelecom.co.uk", key, canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=algorithm, linesep=b"\r\n",
            include_headers=[h for h in include if h.lower() in present])
        return header + message
    return sign


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    builder = CampaignMessageBuilder(
        CampaignHeaders(campaign_id=7, sender="Imperial Telecom <news@imperialtelecom.co.uk>",
                        domain="imperialtelecom.co.uk",
                        unsubscribe_address="unsubscribe@imperialtelecom.co.uk", kind="offers"),
        date=datetime.now(UTC))
    rendered = RenderedCampaign(subject="Faster broadband, half price", text=TEXT, html=HTML)

    def build(i: int) -> bytes:
        return builder.build(message_id=f"<c7.{i}@imperialtelecom.co.uk>",
                             to_address=f"customer{i}@example.com",
                             to_name=f"Customer {i}", rendered=rendered,
                             unsubscribe_url=f"https://imperialtelecom.co.uk/u/{i}.offers.x")

    with tempfile.TemporaryDirectory() as tmp:
        pem = Path(tmp) / "dkim.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(pem), "2048"], check=True,
                       capture_output=True)
        seed = nacl.signing.SigningKey.generate().encode(nacl.encoding.Base64Encoder).decode()
        signers = {
            "rsa-sha256": dkim.load_signer(DkimSettings(
                domain="imperialtelecom.co.uk", selector="s1", private_key_file=pem)),
            "ed25519-sha256": dkim.load_signer(DkimSettings(
                domain="imperialtelecom.co.uk", selector="s1", private_key=seed,
                algorithm="ed25519-sha256")),
        }
        alone = {"rsa-sha256 by dkim.sign": dkimpy_sign(pem.read_bytes(), b"rsa-sha256"),
                 "ed25519-sha256 by dkim.sign": dkimpy_sign(seed.encode(), b"ed25519-sha256")}
    size = len(build(0))
    best: dict[str, float] = {"unsigned": 0.0, **{name: 0.0 for name in signers},
                              **{name: 0.0 for name in alone}}
    for round_number in range(1, args.rounds + 1):
        rates = {"unsigned": rate(args.messages, build)}
        for name, signer in signers.items():
            assert signer is not None
            sign = signer.sign
            rates[name] = rate(args.messages, lambda i, sign=sign: sign(build(i)))  # type: ignore[misc]
        for name, sign in alone.items():
            # dkimpy's RSA is slow: a quarter of the messages is plenty to measure it.
            count = max(1, args.messages // 4)
            rates[name] = rate(count, lambda i, sign=sign: sign(build(i)))  # type: ignore[misc]
        print(f"round {round_number}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()))
        for key, value in rates.items():
            best[key] = max(best[key], value)
    print(f"message size {size} bytes, {args.messages} messages per measurement, best of "
          f"{args.rounds}")
    print(f"unsigned build: {best['unsigned']:,.0f} messages/s")
    for name in (*signers, *alone):
        ratio = best[name] / best["unsigned"]
        per_message_ms = 1000 / best[name] - 1000 / best["unsigned"]
        print(f"build + {name}: {best[name]:,.0f} messages/s ({ratio:.2f} of unsigned; "
              f"signing adds {per_message_ms:.2f} ms per message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
