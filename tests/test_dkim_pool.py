"""DKIM signing processes: the same signatures as in-process signing, made on other cores;
a child that dies costs nothing but its speed; no child outlives the sender, even a kill -9."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import dkim as dkimpy
import pytest

from mailer.mail import dkim
from mailer.mail.dkim_pool import SigningPool, signing
from mailer.settings import DkimAlgorithm
from tests.helpers import ROOT
from tests.test_dkim import (  # noqa: F401 - fixtures
    ALGORITHMS,
    CORPUS,
    dns_of,
    ed25519_key,
    rsa_key_file,
    signer_for,
)
from tests.waiting import wait_for_sync


def tag(signed: bytes, name: bytes) -> bytes:
    header = signed[:signed.index(b"\r\n", signed.index(b"b="))]
    tags = dict(part.strip().split(b"=", 1) for part in
                header.split(b":", 1)[1].replace(b"\r\n", b"").split(b";"))
    return tags[name]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_children_sign_every_message_as_this_process_would(
    algorithm: DkimAlgorithm, rsa_key_file: Path, ed25519_key: str,  # noqa: F811
) -> None:
    signer = signer_for(algorithm, rsa_key_file, ed25519_key)
    async with signing(signer, processes=2) as pool:
        assert pool is not None
        assert await pool.ready() == 2
        signed = await asyncio.gather(*(pool.sign(m) for m in CORPUS * 3))
        assert pool.signed_by_children == len(signed)
    for message, result in zip(CORPUS * 3, signed, strict=True):
        now = int(tag(result, b"t"))
        assert result == signer.sign(message, now=now)
        assert dkimpy.verify(result, dnsfunc=dns_of(signer))


async def test_a_child_that_dies_is_replaced_by_signing_here_with_one_warning(
    rsa_key_file: Path, ed25519_key: str, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    signer = signer_for("ed25519-sha256", rsa_key_file, ed25519_key)
    caplog.set_level(logging.WARNING, logger="mailer.mail.dkim_pool")
    async with signing(signer, processes=1) as pool:
        assert pool is not None
        assert await pool.ready() == 1
        [pid] = pool.pids
        first = await pool.sign(CORPUS[0])
        os.kill(pid, signal.SIGKILL)
        later = await asyncio.gather(*(pool.sign(m) for m in CORPUS))
        assert pool.pids == []
        assert pool.signed_by_children == 1
    for result in [first, *later]:
        assert dkimpy.verify(result, dnsfunc=dns_of(signer))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].endswith("signing in the sending process instead")


async def test_a_message_that_cannot_be_signed_fails_as_it_does_without_children(
    rsa_key_file: Path, ed25519_key: str,  # noqa: F811
) -> None:
    signer = signer_for("ed25519-sha256", rsa_key_file, ed25519_key)
    no_from = b"To: ada@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    async with signing(signer, processes=1) as pool:
        assert pool is not None
        assert await pool.ready() == 1
        with pytest.raises(dkimpy.ParameterError, match="From"):
            await pool.sign(no_from)
        # The child is still there and signs the next one.
        assert dkimpy.verify(await pool.sign(CORPUS[0]), dnsfunc=dns_of(signer))
        assert pool.signed_by_children == 1 and len(pool.pids) == 1


async def test_before_the_children_are_ready_messages_are_signed_here(
    rsa_key_file: Path, ed25519_key: str,  # noqa: F811
) -> None:
    signer = signer_for("ed25519-sha256", rsa_key_file, ed25519_key)
    pool = SigningPool(signer, processes=1)
    await pool.start()
    try:
        signed = await pool.sign(CORPUS[0])  # at once: the child is still importing
        assert pool.signed_by_children == 0
        assert dkimpy.verify(signed, dnsfunc=dns_of(signer))
    finally:
        await pool.close()


async def test_close_ends_every_child(rsa_key_file: Path, ed25519_key: str) -> None:  # noqa: F811
    signer = signer_for("rsa-sha256", rsa_key_file, ed25519_key)
    async with signing(signer, processes=2) as pool:
        assert pool is not None
        assert await pool.ready() == 2
        pids = pool.pids
        assert all(alive(pid) for pid in pids)
    assert not any(alive(pid) for pid in pids)


SENDER = """
import asyncio, sys
from mailer.mail.dkim import make_signer
from mailer.mail.dkim_pool import signing

async def main():
    signer = make_signer("imperialtelecom.co.uk", "s", "ed25519-sha256",
                         sys.stdin.buffer.read(), "key")
    async with signing(signer, processes=2) as pool:
        assert pool is not None
        await pool.ready()
        print(" ".join(map(str, pool.pids)), flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


def test_no_child_outlives_a_sender_killed_with_sigkill(ed25519_key: str) -> None:  # noqa: F811
    sender = subprocess.Popen([sys.executable, "-c", SENDER], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert sender.stdin is not None and sender.stdout is not None
    sender.stdin.write(ed25519_key.encode())
    sender.stdin.close()
    pids = [int(pid) for pid in sender.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    sender.kill()
    sender.wait(timeout=10)
    wait_for_sync(lambda: not any(alive(pid) for pid in pids),
                  what=f"the signing processes {pids} to go with their sender")


def test_signer_key_text_is_kept_for_the_children_but_never_shown(
    rsa_key_file: Path, ed25519_key: str,  # noqa: F811
) -> None:
    signer = signer_for("ed25519-sha256", rsa_key_file, ed25519_key)
    assert signer.key_data == ed25519_key.encode()
    assert ed25519_key not in repr(signer)
    assert isinstance(signer, dkim.Signer)


async def test_without_a_signer_there_is_no_pool() -> None:
    async with signing(None) as pool:
        assert pool is None
