"""The test servers themselves: the SMTP sink's fault knobs (driven by aiosmtplib, the client
mailer sends with) and the IMAP server launchers."""

from __future__ import annotations

import socket
import time
from email.message import EmailMessage

import aiosmtplib
import pytest

from tests.servers import (
    DovecotServer,
    ImapTestServer,
    LoopbackController,
    PostfixSink,
    PymapServer,
    RawImap,
    SmtpSink,
    free_port,
    imap_server_class,
    sample_message,
)


def message(to: str = "bob@example.com") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "news@imperial.test"
    mail["To"] = to
    mail["Subject"] = "Special offers"
    mail.set_content("Hello.\n")
    return mail


async def send(sink: SmtpSink, *recipients: str, timeout_s: float = 5) -> None:
    await aiosmtplib.send(
        message(),
        hostname=sink.host,
        port=sink.port,
        sender="news@imperial.test",
        recipients=list(recipients) or ["bob@example.com"],
        timeout=timeout_s,
    )


# -- SmtpSink -----------------------------------------------------------------------------------


async def test_sink_records_envelope_and_raw_content(smtp_sink: SmtpSink) -> None:
    await send(smtp_sink, "bob@example.com", "carol@example.com")
    (received,) = smtp_sink.messages
    assert received.mail_from == "news@imperial.test"
    assert received.rcpt_tos == ("bob@example.com", "carol@example.com")
    assert b"Subject: Special offers\r\n" in received.content
    assert received.content.endswith(b"Hello.\r\n")
    assert smtp_sink.transactions == 1


async def test_rejected_recipient_gets_550_and_the_others_still_receive(
    smtp_sink: SmtpSink,
) -> None:
    smtp_sink.reject_recipients = {"Gone@Example.com"}
    errors, _ = await aiosmtplib.send(
        message(),
        hostname=smtp_sink.host,
        port=smtp_sink.port,
        sender="news@imperial.test",
        recipients=["bob@example.com", "gone@example.com"],
        timeout=5,
    )
    assert errors["gone@example.com"].code == 550
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("bob@example.com",)]

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(smtp_sink, "gone@example.com")


async def test_fail_next_451_fails_that_many_transactions_then_accepts(
    smtp_sink: SmtpSink,
) -> None:
    smtp_sink.fail_next(2, code=451)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await send(smtp_sink)
        assert caught.value.code == 451
    await send(smtp_sink)
    assert len(smtp_sink.messages) == 1
    assert smtp_sink.transactions == 3


async def test_fail_next_421_answers_and_closes_the_connection(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(1, code=421)
    client = aiosmtplib.SMTP(hostname=smtp_sink.host, port=smtp_sink.port, timeout=5)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
        await client.send_message(message())
    assert caught.value.code == 421
    assert not client.is_connected
    await send(smtp_sink)
    assert len(smtp_sink.messages) == 1


def test_fail_next_takes_only_421_or_451(smtp_sink: SmtpSink) -> None:
    with pytest.raises(ValueError, match="421, 451"):
        smtp_sink.fail_next(1, code=550)


async def test_delay_holds_the_reply_to_data(smtp_sink: SmtpSink) -> None:
    smtp_sink.delay_s = 0.5
    started = time.monotonic()
    await send(smtp_sink)
    assert time.monotonic() - started >= 0.5
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await send(smtp_sink, timeout_s=0.2)


async def test_drop_next_loses_the_connection_mid_data(smtp_sink: SmtpSink) -> None:
    smtp_sink.drop_next(1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(smtp_sink)
    assert smtp_sink.messages == []
    await send(smtp_sink)
    assert len(smtp_sink.messages) == 1


# -- IMAP servers and helpers -------------------------------------------------------------------


def squat(port: int) -> socket.socket:
    """Another program listening on `port` (SO_REUSEADDR, as servers bind)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_free_port_is_kept_from_a_plain_bind_but_a_server_takes_it() -> None:
    port = free_port()
    # Held (in TIME-WAIT): a bind without SO_REUSEADDR, as bind(port 0) would, is refused...
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))
    # ...while a server binding it as servers do (SO_REUSEADDR) takes it.
    squat(port).close()


def test_an_imap_server_whose_port_was_taken_before_its_first_start_moves_to_a_fresh_one(
) -> None:
    server = imap_server_class()()
    taken = server.port
    try:
        with squat(taken):
            server.start()
            assert server.running and server.port != taken
            with RawImap.for_server(server) as raw:
                assert raw.uids("INBOX") == []
    finally:
        server.close()


def test_an_imap_server_restarted_on_a_taken_port_says_which_port(
    imap_server: ImapTestServer,
) -> None:
    port = imap_server.port
    imap_server.stop()
    with squat(port), pytest.raises(RuntimeError, match=rf"port {port} is in use by another"):
        imap_server.start()
    assert imap_server.port == port and not imap_server.running


def test_an_smtp_sink_listens_on_the_port_it_was_given_before_it_started() -> None:
    sink = SmtpSink()
    port = sink.port
    with sink, socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        assert client.recv(100).startswith(b"220 ")


def test_a_loopback_controller_listens_on_the_port_the_kernel_chose() -> None:
    controller = LoopbackController(SmtpSink())
    assert controller.port == 0
    controller.start()
    try:
        with socket.create_connection(("127.0.0.1", controller.port), timeout=5) as client:
            assert client.recv(100).startswith(b"220 ")
    finally:
        controller.stop()


def test_smtp_sink_whose_port_was_taken_moves_to_a_fresh_one() -> None:
    sink = PostfixSink()
    taken = sink.port
    with squat(taken), sink:
        assert sink.port != taken
        with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as client:
            assert client.recv(100).startswith(b"220 ")


def test_imap_server_class_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_TEST_IMAP", "pymap")
    assert imap_server_class() is PymapServer
    monkeypatch.setenv("MAILER_TEST_IMAP", "dovecot")
    assert imap_server_class() is DovecotServer
    monkeypatch.setenv("MAILER_TEST_IMAP", "exchange")
    with pytest.raises(RuntimeError, match="expected dovecot or pymap"):
        imap_server_class()


def test_imap_server_restarts_on_the_same_port(imap_server: ImapTestServer) -> None:
    port = imap_server.port
    with RawImap.for_server(imap_server) as raw:
        raw.append_many("INBOX", [sample_message(subject="before")])
    imap_server.restart(kill=True)
    assert imap_server.port == port and imap_server.running
    with RawImap.for_server(imap_server) as raw:
        expected = ["before"] if imap_server.persistent else []
        assert raw.subjects("INBOX") == expected


@pytest.mark.skipif(imap_server_class() is not DovecotServer, reason="needs Dovecot")
def test_dovecot_keeps_to_its_temp_dir() -> None:
    server = DovecotServer()
    try:
        server.start()  # how fast: bench/, not here
        config = (server.dir / "dovecot.conf").read_text()
        assert "/etc/dovecot" not in config and "/var/" not in config
    finally:
        server.close()
    assert not server.dir.exists()
