"""DKIM signing cost: campaign messages per second built unsigned vs built and signed.

Same run, same process, same messages: `CampaignMessageBuilder.build` alone (the baseline),
then build + `mailer.dkim.Signer.sign` with an RSA-2048 key (rsa-sha256) and with an ed25519
key (ed25519-sha256), and, for comparison, RSA done by dkimpy alone (its pure-Python RSA and a
PEM parse per message: what `mailer.dkim._install_fast_rsa` replaces with `cryptography`).
The figure that matters is the ratio signed / unsigned for each key type: how much of the
builder's rate signing leaves. A typical campaign message (subject, text and
HTML bodies of about 3 KB) is used. Keys are generated for the run (`openssl genrsa`, pynacl).

Each measurement is taken `--rounds` times (default 3), alternating, and the best rate kept,
so a burst of other work on the machine does not decide a ratio. Exit 0 (a measurement).

Run: `python bench/dkim_bench.py [--messages N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import dkim as dkimpy
import nacl.encoding
import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailer import dkim  # noqa: E402
from mailer.campaigns.templates import RenderedCampaign  # noqa: E402
from mailer.outgoing import CampaignHeaders, CampaignMessageBuilder  # noqa: E402
from mailer.settings import DkimSettings  # noqa: E402

TEXT = ("Dear customer,\n\nOur fastest broadband yet is now available on your street. "
        "Upgrade today and get three months at half price.\n\n" * 12)
HTML = "<html><body>" + "".join(f"<p>{line}</p>" for line in TEXT.splitlines()) + "</body></html>"


def rate(count: int, work: Callable[[int], bytes]) -> float:
    start = time.perf_counter()
    for i in range(count):
        work(i)
    return count / (time.perf_counter() - start)


@contextlib.contextmanager
def dkimpy_alone() -> Iterator[None]:
    """dkimpy's own RSA (pure Python, the key parsed per message) for the time of a block."""
    fast = dkimpy.RSASSA_PKCS1_v1_5_sign, dkimpy.parse_pem_private_key
    dkimpy.RSASSA_PKCS1_v1_5_sign = dkim._dkimpy_rsa_sign
    dkimpy.parse_pem_private_key = dkim.parse_pem_private_key
    try:
        yield
    finally:
        dkimpy.RSASSA_PKCS1_v1_5_sign, dkimpy.parse_pem_private_key = fast


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
        return builder.build(customer_id=i, to_address=f"customer{i}@example.com",
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
    size = len(build(0))
    best: dict[str, float] = {"unsigned": 0.0, **{name: 0.0 for name in signers},
                              "rsa-sha256 dkimpy alone": 0.0}
    for round_number in range(1, args.rounds + 1):
        rates = {"unsigned": rate(args.messages, build)}
        for name, signer in signers.items():
            assert signer is not None
            sign = signer.sign
            rates[name] = rate(args.messages, lambda i, sign=sign: sign(build(i)))  # type: ignore[misc]
        rsa = signers["rsa-sha256"]
        assert rsa is not None
        with dkimpy_alone():
            # Slow: a quarter of the messages is plenty to measure it.
            rates["rsa-sha256 dkimpy alone"] = rate(max(1, args.messages // 4),
                                                    lambda i, rsa=rsa: rsa.sign(build(i)))  # type: ignore[misc]
        print(f"round {round_number}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()))
        for key, value in rates.items():
            best[key] = max(best[key], value)
    print(f"message size {size} bytes, {args.messages} messages per measurement, best of "
          f"{args.rounds}")
    print(f"unsigned build: {best['unsigned']:,.0f} messages/s")
    for name in (*signers, "rsa-sha256 dkimpy alone"):
        ratio = best[name] / best["unsigned"]
        per_message_ms = 1000 / best[name] - 1000 / best["unsigned"]
        print(f"build + {name}: {best[name]:,.0f} messages/s ({ratio:.2f} of unsigned; "
              f"signing adds {per_message_ms:.2f} ms per message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
