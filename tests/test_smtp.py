"""SMTP connections: TLS verified against the named CA, failures sorted transient/permanent."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller

from mailer import smtp
from mailer.smtp import PermanentSmtpError, SmtpConfig, TransientSmtpError
from tests.servers import HOST, SmtpSink, _self_signed_certificate, free_port

MESSAGE = b"From: news@imperial.test\r\nTo: ann@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


class _Recorder:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


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
    port = free_port()
    controller = Controller(recorder, hostname=HOST, port=port,
                            tls_context=_server_context(certificate), require_starttls=True)
    controller.start()
    try:
        yield port, recorder
    finally:
        controller.stop()


@pytest.fixture
def implicit_tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, _Recorder]]:
    recorder = _Recorder()
    port = free_port()
    controller = Controller(recorder, hostname=HOST, port=port,
                            ssl_context=_server_context(certificate))
    controller.start()
    try:
        yield port, recorder
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
        await smtp.send(client, "news@imperial.test", "ann@example.com", MESSAGE, 10)
    finally:
        await smtp.close(client)
    assert recorder.count == 1


async def test_a_certificate_no_trusted_ca_signed_is_refused(
    starttls_server: tuple[int, _Recorder]
) -> None:
    port, recorder = starttls_server
    with pytest.raises(TransientSmtpError, match="CERTIFICATE_VERIFY_FAILED"):
        await smtp.connect(SmtpConfig(host=HOST, port=port, security="starttls", timeout_s=10))
    assert recorder.count == 0


async def test_a_550_for_the_recipient_is_permanent_with_the_reply(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_recipients.add("gone@example.com")
    client = await smtp.connect(SmtpConfig(host=HOST, port=smtp_sink.port, security="none"))
    try:
        with pytest.raises(PermanentSmtpError, match=r"550 5\.1\.1"):
            await smtp.send(client, "news@imperial.test", "gone@example.com", MESSAGE, 10)
    finally:
        await smtp.close(client)
    assert smtp_sink.messages == []


async def test_a_451_is_transient(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(1, code=451)
    client = await smtp.connect(SmtpConfig(host=HOST, port=smtp_sink.port, security="none"))
    try:
        with pytest.raises(TransientSmtpError, match="451"):
            await smtp.send(client, "news@imperial.test", "ann@example.com", MESSAGE, 10)
        await smtp.send(client, "news@imperial.test", "ann@example.com", MESSAGE, 10)
    finally:
        await smtp.close(client)
    assert len(smtp_sink.messages) == 1


async def test_an_unreachable_server_is_transient() -> None:
    with pytest.raises(TransientSmtpError, match="cannot connect"):
        await smtp.connect(SmtpConfig(host=HOST, port=free_port(), security="none",
                                      timeout_s=5))


async def test_after_a_refused_recipient_the_same_connection_carries_the_next_message(
    smtp_sink: SmtpSink,
) -> None:
    smtp_sink.reject_recipients.add("gone@example.com")
    client = await smtp.connect(SmtpConfig(host=HOST, port=smtp_sink.port, security="none"))
    try:
        with pytest.raises(PermanentSmtpError, match=r"SMTP to <gone@example.com>: 550 5\.1\.1"):
            await smtp.send(client, "news@imperial.test", "gone@example.com", MESSAGE, 10)
        reply = await smtp.send(client, "news@imperial.test", "ann@example.com", MESSAGE, 10)
    finally:
        await smtp.close(client)
    assert reply == "OK"
    [received] = smtp_sink.messages
    assert received.mail_from == "news@imperial.test"
    assert received.rcpt_tos == ("ann@example.com",)
    assert received.content == MESSAGE


@pytest.mark.parametrize("recipient", ["Ann <ann@example.com>", " ann@example.com "])
async def test_an_address_that_is_not_plain_goes_through_the_parsing_path(
    smtp_sink: SmtpSink, recipient: str
) -> None:
    client = await smtp.connect(SmtpConfig(host=HOST, port=smtp_sink.port, security="none"))
    try:
        await smtp.send(client, "news@imperial.test", recipient, MESSAGE, 10)
    finally:
        await smtp.close(client)
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("ann@example.com",)]
