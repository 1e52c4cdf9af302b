"""SMTP connections: TLS verified against the named CA, failures sorted transient/permanent,
the same behaviour whether the server announces PIPELINING (one write for MAIL, RCPT and DATA)
or not (one command at a time), against aiosmtpd and against Postfix's smtp-sink."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from mailer.errors import PermanentSmtpError, TransientSmtpError
from mailer.mail import smtp
from mailer.mail.smtp import SmtpConfig
from tests.servers import (
    HOST,
    LoopbackController,
    PostfixSink,
    SmtpSink,
    _self_signed_certificate,
    free_port,
)
from tests.waiting import wait_for

MESSAGE = b"From: news@imperial.test\r\nTo: ann@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


class _Recorder:
    """Counts messages; announces PIPELINING, so TLS connections carry pipelined groups."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def smtp_sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    """The aiosmtpd sink, announcing PIPELINING or not."""
    with SmtpSink(pipelining=request.param) as sink:
        yield sink


async def _connect(sink: SmtpSink, timeout_s: float = 10) -> smtp.Session:
    session = await smtp.connect(SmtpConfig(host=HOST, port=sink.port, security="none",
                                            timeout_s=timeout_s))
    assert session.pipelining is sink.pipelining
    return session


@pytest.fixture(scope="module")
def certificate() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory() as directory:
        yield _self_signed_certificate(Path(directory))


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, _Recorder]]:
    recorder = _Recorder()
    controller = LoopbackController(recorder, tls_context=_server_context(certificate),
                                    require_starttls=True)
    controller.start()
    try:
        yield controller.port, recorder
    finally:
        controller.stop()


@pytest.fixture
def implicit_tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, _Recorder]]:
    recorder = _Recorder()
    controller = LoopbackController(recorder, ssl_context=_server_context(certificate))
    controller.start()
    try:
        yield controller.port, recorder
    finally:
        controller.stop()


@pytest.mark.parametrize(("security", "server"), [("starttls", "starttls_server"),
                                                ("tls", "implicit_tls_server")])
async def test_tls_with_the_named_ca_file_delivers(
    security: Literal["tls", "starttls"], server: str, certificate: tuple[Path, Path],
    request: pytest.FixtureRequest,
) -> None:
    port, recorder = request.getfixturevalue(server)
    client = await smtp.connect(SmtpConfig(host=HOST, port=port, security=security,
                                           ca_file=certificate[0], timeout_s=10))
    try:
        assert client.pipelining
        await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
        await client.send("news@imperial.test", "bob@example.com", MESSAGE, 10)
    finally:
        await client.close()
    assert recorder.count == 2


async def test_a_certificate_no_trusted_ca_signed_is_refused(
    starttls_server: tuple[int, _Recorder]
) -> None:
    port, recorder = starttls_server
    with pytest.raises(TransientSmtpError, match="CERTIFICATE_VERIFY_FAILED"):
        await smtp.connect(SmtpConfig(host=HOST, port=port, security="starttls", timeout_s=10))
    assert recorder.count == 0


async def test_a_550_for_the_recipient_is_permanent_with_the_reply(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_recipients.add("gone@example.com")
    client = await _connect(smtp_sink)
    try:
        with pytest.raises(PermanentSmtpError, match=r"550 5\.1\.1"):
            await client.send("news@imperial.test", "gone@example.com", MESSAGE, 10)
    finally:
        await client.close()
    assert smtp_sink.messages == []


async def test_a_451_is_transient(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(1, code=451)
    client = await _connect(smtp_sink)
    try:
        with pytest.raises(TransientSmtpError, match="451"):
            await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
        await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
    finally:
        await client.close()
    assert len(smtp_sink.messages) == 1


async def test_an_unreachable_server_is_transient() -> None:
    with pytest.raises(TransientSmtpError, match="cannot connect"):
        await smtp.connect(SmtpConfig(host=HOST, port=free_port(), security="none",
                                      timeout_s=5))


async def test_a_host_name_that_does_not_resolve_is_named_not_an_errno() -> None:
    # RFC 6761 §6.4: ".invalid" never resolves, so this asks DNS nothing that could answer.
    with pytest.raises(TransientSmtpError) as caught:
        await smtp.connect(SmtpConfig(host="smtp.mailer.invalid", port=25, security="none",
                                      timeout_s=10))
    assert str(caught.value).startswith(
        'SMTP smtp.mailer.invalid:25: cannot resolve host name "smtp.mailer.invalid" (')
    assert "Errno" not in str(caught.value)


async def test_after_a_refused_recipient_the_same_connection_carries_the_next_message(
    smtp_sink: SmtpSink,
) -> None:
    smtp_sink.reject_recipients.add("gone@example.com")
    client = await _connect(smtp_sink)
    try:
        with pytest.raises(PermanentSmtpError, match=r"SMTP to <gone@example.com>: 550 5\.1\.1"):
            await client.send("news@imperial.test", "gone@example.com", MESSAGE, 10)
        reply = await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
    finally:
        await client.close()
    assert reply == "OK"
    [received] = smtp_sink.messages
    assert received.mail_from == "news@imperial.test"
    assert received.rcpt_tos == ("ann@example.com",)
    assert received.content == MESSAGE


async def test_a_message_held_for_before_data_goes_out_only_when_it_says_so(
    smtp_sink: SmtpSink,
) -> None:
    # The sender waits there for its previous commit, with the envelope accepted; a message
    # withdrawn at that point is never delivered, and the next one goes out on a new connection.
    asked: list[str] = []

    async def hold(answer: bool) -> bool:
        asked.append("asked")
        await asyncio.sleep(0.05)
        return answer

    client = await _connect(smtp_sink)
    try:
        assert await client.send_held("news@imperial.test", "ann@example.com", MESSAGE, 10,
                                      lambda: hold(False)) is None
    finally:
        await client.close()
    client = await _connect(smtp_sink)
    try:
        reply = await client.send_held("news@imperial.test", "bob@example.com", MESSAGE, 10,
                                       lambda: hold(True))
    finally:
        await client.close()
    assert asked == ["asked", "asked"] and reply == "OK"
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("bob@example.com",)]


async def test_a_before_data_that_fails_delivers_nothing_and_its_error_comes_out(
    smtp_sink: SmtpSink,
) -> None:
    async def broken() -> bool:
        raise RuntimeError("the ledger's commit failed")

    client = await _connect(smtp_sink)
    try:
        with pytest.raises(RuntimeError, match="commit failed"):
            await client.send_held("news@imperial.test", "ann@example.com", MESSAGE, 10, broken)
    finally:
        await client.close()
    await asyncio.sleep(0.1)
    assert smtp_sink.messages == []


@pytest.mark.parametrize("recipient", ["Ann <ann@example.com>", " ann@example.com "])
async def test_an_address_that_is_not_plain_goes_through_the_parsing_path(
    smtp_sink: SmtpSink, recipient: str
) -> None:
    client = await _connect(smtp_sink)
    try:
        await client.send("news@imperial.test", recipient, MESSAGE, 10)
    finally:
        await client.close()
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("ann@example.com",)]


async def test_lines_starting_with_a_dot_and_bare_line_feeds_arrive_as_written(
    smtp_sink: SmtpSink,
) -> None:
    message = b"Subject: dots\r\n\r\n.hidden?\r\n..two\r\nbare\nfeed\r\n."
    client = await _connect(smtp_sink)
    try:
        await client.send("news@imperial.test", "ann@example.com", message, 10)
    finally:
        await client.close()
    [received] = smtp_sink.messages
    assert received.content == b"Subject: dots\r\n\r\n.hidden?\r\n..two\r\nbare\r\nfeed\r\n.\r\n"


async def test_a_connection_dropped_mid_message_is_transient(smtp_sink: SmtpSink) -> None:
    smtp_sink.drop_next()
    client = await _connect(smtp_sink)
    try:
        with pytest.raises(TransientSmtpError, match=r"SMTP to <ann@example.com>: .*"):
            await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
    finally:
        await client.close()
    assert smtp_sink.messages == []


async def test_a_server_that_does_not_answer_times_out_as_transient(smtp_sink: SmtpSink) -> None:
    smtp_sink.delay_s = 3
    client = await _connect(smtp_sink, timeout_s=0.5)
    try:
        with pytest.raises(TransientSmtpError, match=r"(?i)timed out"):
            await client.send("news@imperial.test", "ann@example.com", MESSAGE, 0.5)
    finally:
        await client.close()


async def test_plain_and_parsed_addresses_take_turns_on_one_connection(
    smtp_sink: SmtpSink,
) -> None:
    client = await _connect(smtp_sink)
    try:
        for recipient in ("ann@example.com", "Bob <bob@example.com>", "cy@example.com"):
            await client.send("news@imperial.test", recipient, MESSAGE, 10)
    finally:
        await client.close()
    assert [m.rcpt_tos for m in smtp_sink.messages] == [
        ("ann@example.com",), ("bob@example.com",), ("cy@example.com",)]


@pytest.mark.parametrize(("message", "block"), [
    (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
    (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
    (b".a\r\n.\r\nb.\r\n", b"..a\r\n..\r\nb.\r\n.\r\n"),
    (b"a\nb\rc\r\n", b"a\r\nb\r\nc\r\n.\r\n"),
    (b"a\n.b", b"a\r\n..b\r\n.\r\n"),
])
def test_the_data_block_has_crlf_lines_doubled_leading_dots_and_the_final_dot(
    message: bytes, block: bytes
) -> None:
    assert smtp.data_block(message) == block


async def test_postfix_takes_pipelined_messages_whole_one_after_another() -> None:
    message = b"Subject: hi\r\n\r\n.starts with a dot\r\nend\r\n"
    with PostfixSink() as sink:
        client = await smtp.connect(SmtpConfig(host=HOST, port=sink.port, security="none"))
        try:
            assert client.pipelining
            replies = [await client.send("news@imperial.test", f"c{i}@example.com",
                                         message, 10) for i in range(3)]
        finally:
            await client.close()
        received = sink.messages()
    assert replies == ["2.0.0 Ok"] * 3
    assert sorted(m.split(b"X-Rcpt-Args: ")[1].split(b"\n")[0] for m in received) == [
        b"<c0@example.com>", b"<c1@example.com>", b"<c2@example.com>"]
    # smtp-sink writes lines with LF and undoes the dot doubling, as any server does.
    assert all(b"\nSubject: hi\n\n.starts with a dot\nend\n" in m for m in received)


async def test_postfix_refusing_the_recipient_and_hanging_up_gives_its_421() -> None:
    with PostfixSink("-Q", "rcpt") as sink:
        client = await smtp.connect(SmtpConfig(host=HOST, port=sink.port, security="none"))
        try:
            assert client.pipelining
            with pytest.raises(TransientSmtpError, match=r"<ann@example.com>: 421 4\.0\.0"):
                await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
            with pytest.raises(TransientSmtpError, match="connection"):
                await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
        finally:
            await client.close()
        # smtp-sink removes the refused transaction's file just after hanging up.
        await wait_for(lambda: sink.messages() == [], what="smtp-sink to keep no message")


async def test_postfix_hanging_up_after_the_message_without_a_reply_is_transient() -> None:
    with PostfixSink("-q", ".") as sink:
        client = await smtp.connect(SmtpConfig(host=HOST, port=sink.port, security="none"))
        try:
            with pytest.raises(TransientSmtpError, match="connection closed by the server"):
                await client.send("news@imperial.test", "ann@example.com", MESSAGE, 10)
        finally:
            await client.close()
