"""mailer.inbox.imap against a real IMAP server (Dovecot, else pymap), and the aioimaplib fixes.

Every test gets a fresh server. What the client did is checked through `RawImap`, an independent
session, not through the client under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aioimaplib import aioimaplib as upstream

from mailer.errors import ConnectionLost, ImapError
from mailer.inbox import aioimaplib_fixes
from mailer.inbox.aioimaplib_fixes import ConnectionLostError, PatchedProtocol
from mailer.inbox.imap import ImapClient, ImapConfig
from mailer.inbox.imap_wire import FetchedHeader, encode_mailbox_name
from tests.helpers import dovecot_only
from tests.servers import (
    DovecotServer,
    ImapTestServer,
    RawImap,
    free_port,
    imap_server_class,
    sample_message,
)
from tests.waiting import wait_for


def bulk_messages(count: int) -> list[bytes]:
    # The email package takes ~0.5 ms a message; for thousands, a template is enough.
    return [
        b"From: customer%d@example.com\r\nTo: inbox@example.com\r\nSubject: Message %d\r\n"
        b"Message-ID: <%d@example.com>\r\n\r\nBody %d\r\n" % (i, i, i, i)
        for i in range(count)
    ]


def assert_one_line(error: BaseException) -> None:
    assert "\n" not in str(error) and str(error).strip() == str(error)


@pytest.fixture
async def selected(imap_client: ImapClient) -> ImapClient:
    await imap_client.select("INBOX")
    return imap_client


@pytest.fixture
def no_move_server() -> Iterator[DovecotServer]:
    """A Dovecot announcing every capability but MOVE: the COPY/STORE/EXPUNGE fallback."""
    if imap_server_class() is not DovecotServer:
        pytest.skip("needs Dovecot (capability override)")
    with DovecotServer(without_move=True) as server:
        assert isinstance(server, DovecotServer)
        try:
            yield server
        finally:
            server.resume()  # after a test that paused it


@pytest.fixture
def no_move_raw(no_move_server: DovecotServer) -> Iterator[RawImap]:
    raw = RawImap.for_server(no_move_server)
    try:
        yield raw
    finally:
        raw.close()


def config_for(server: ImapTestServer, timeout_s: float = 10.0) -> ImapConfig:
    return ImapConfig(server.host, server.port, "none", server.username, server.password,
                      timeout_s=timeout_s)


@pytest.fixture
async def no_move_client(no_move_server: DovecotServer) -> AsyncIterator[ImapClient]:
    client = await ImapClient.connect(config_for(no_move_server))
    try:
        await client.select("INBOX")
        yield client
    finally:
        await client.close()


@pytest.fixture(params=["MOVE", "COPY, STORE, EXPUNGE"])
def mover(request: pytest.FixtureRequest) -> tuple[ImapClient, RawImap]:
    """A selected client moving with MOVE, or (a server without MOVE) with the fallback, and
    a raw session on its server."""
    if request.param == "MOVE":
        return request.getfixturevalue("selected"), request.getfixturevalue("raw_imap")
    return request.getfixturevalue("no_move_client"), request.getfixturevalue("no_move_raw")


@pytest.fixture
def frozen(imap_server: ImapTestServer) -> Iterator[ImapTestServer]:
    """The server, to be paused by the test; resumed afterwards whatever happens."""
    try:
        yield imap_server
    finally:
        imap_server.resume()


# -- connecting ---------------------------------------------------------------------------------


async def test_connect_logs_in_and_learns_the_capabilities(imap_client: ImapClient) -> None:
    assert {"IMAP4REV1", "IDLE", "MOVE", "UIDPLUS"} <= imap_client.capabilities


async def test_wrong_password_is_an_imap_error_naming_server_and_user(
    imap_config: ImapConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = dataclasses.replace(imap_config, password='wrong"pass\\word')
    with pytest.raises(ImapError) as caught:
        await ImapClient.connect(bad)
    message = str(caught.value)
    assert not isinstance(caught.value, ConnectionLost)
    assert f"{imap_config.host}:{imap_config.port}" in message
    assert "LOGIN as 'mailer' failed: NO" in message
    assert_one_line(caught.value)
    assert "wrong" not in message and "wrong" not in caplog.text


async def test_a_host_name_that_does_not_resolve_is_named_not_unknown_error_2() -> None:
    # RFC 6761 §6.4: ".invalid" never resolves.
    config = ImapConfig("imap.mailer.invalid", 143, "none", "mailer", "secret", timeout_s=10)
    with pytest.raises(ImapError) as caught:
        await ImapClient.connect(config)
    assert str(caught.value).startswith(
        'IMAP imap.mailer.invalid:143: connect: cannot resolve host name "imap.mailer.invalid" (')
    assert "Unknown error" not in str(caught.value)


async def test_connection_refused_is_an_imap_error() -> None:
    port = free_port()
    config = ImapConfig("127.0.0.1", port, "none", "mailer", "secret", timeout_s=5)
    with pytest.raises(ImapError, match=rf"127\.0\.0\.1:{port}: connect: .*refused") as caught:
        await ImapClient.connect(config)
    assert_one_line(caught.value)


async def test_a_server_that_never_greets_times_out(
    imap_config: ImapConfig, frozen: ImapTestServer
) -> None:
    frozen.pause()
    with pytest.raises(ImapError, match=r"greeting timed out after 0\.5 s"):
        await ImapClient.connect(dataclasses.replace(imap_config, timeout_s=0.5))


async def test_a_bye_greeting_is_reported() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* BYE Too many connections\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        config = ImapConfig("127.0.0.1", port, "none", "mailer", "secret", timeout_s=5)
        with pytest.raises(ConnectionLost, match="greeting: server said BYE: Too many connections"):
            await ImapClient.connect(config)


async def test_config_repr_hides_the_password(imap_config: ImapConfig) -> None:
    assert imap_config.password not in repr(imap_config)


async def test_close_twice_and_after_server_death_never_raises(
    imap_server: ImapTestServer, imap_config: ImapConfig
) -> None:
    client = await ImapClient.connect(imap_config)
    imap_server.kill()
    await client.close()
    await client.close()
    with pytest.raises(ConnectionLost, match="closed client"):
        await client.noop()


# -- folders ------------------------------------------------------------------------------------


async def test_select_returns_the_folders_uidvalidity(
    imap_client: ImapClient, raw_imap: RawImap
) -> None:
    status = b"".join(raw_imap.command('STATUS "INBOX" (UIDVALIDITY)'))
    uidvalidity = await imap_client.select("INBOX")
    assert uidvalidity > 0
    assert f"UIDVALIDITY {uidvalidity}".encode() in status


async def test_select_of_a_missing_folder_is_an_imap_error(imap_client: ImapClient) -> None:
    with pytest.raises(ImapError, match='SELECT "Nope" failed: NO') as caught:
        await imap_client.select("Nope")
    assert not isinstance(caught.value, ConnectionLost)


@pytest.mark.parametrize(
    "name", ["Processed", "Unsubscribe requests (needs review)", "Geprüft & ok"]
)
async def test_ensure_folder_creates_once_and_is_idempotent(
    imap_client: ImapClient, raw_imap: RawImap, name: str
) -> None:
    await imap_client.ensure_folder(name)
    await imap_client.ensure_folder(name)
    await imap_client.select(name)
    listed = raw_imap.command(f'LIST "" {encode_mailbox_name(name)}')
    assert len(listed) == 1


def test_mailbox_names_are_quoted_and_non_ascii_is_modified_utf7() -> None:
    assert encode_mailbox_name("INBOX") == '"INBOX"'
    assert encode_mailbox_name('a "b"\\c') == '"a \\"b\\"\\\\c"'
    # RFC 3501 5.1.3's own example, plus "&" itself.
    assert encode_mailbox_name("~peter/mail/台北/日本語") == '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'
    assert encode_mailbox_name("R&D") == '"R&-D"'


# -- searching and fetching ---------------------------------------------------------------------


async def test_uids_above_in_an_empty_mailbox_is_empty(selected: ImapClient) -> None:
    assert await selected.uids_above(0) == []


async def test_uids_above_returns_only_newer_uids(selected: ImapClient, raw_imap: RawImap) -> None:
    raw_imap.append_many("INBOX", bulk_messages(5))
    uids = raw_imap.uids("INBOX")
    assert await selected.uids_above(0) == uids
    assert await selected.uids_above(uids[1]) == uids[2:]


async def test_uids_above_the_highest_uid_is_empty_despite_star_matching_it(
    selected: ImapClient, raw_imap: RawImap
) -> None:
    raw_imap.append_many("INBOX", bulk_messages(3))
    highest = raw_imap.uids("INBOX")[-1]
    # "N:*" with N above the highest UID still matches the highest (RFC 3501 6.4.8).
    assert await selected.uids_above(highest) == []
    assert await selected.uids_above(highest + 100) == []


async def test_fetch_headers_of_1500_messages_in_batches_without_setting_seen(
    selected: ImapClient, raw_imap: RawImap
) -> None:
    messages = bulk_messages(1500)
    raw_imap.append_many("INBOX", messages)
    uids = await selected.uids_above(0)
    assert len(uids) == 1500

    headers = await selected.fetch_headers(uids)  # how fast: bench/inbox_bench.py

    assert [h.uid for h in headers] == uids
    for header, message in zip(headers, messages, strict=True):
        assert header.size == len(message)
        assert header.header == message.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert all("\\Seen" not in flags for flags in raw_imap.flags("INBOX").values())


async def test_fetch_headers_survives_one_response_of_1500_messages(
    selected: ImapClient, raw_imap: RawImap
) -> None:
    # Upstream aioimaplib overflows the stack on this (fix 1); batching alone would hide that.
    raw_imap.append_many("INBOX", bulk_messages(1500))
    uids = await selected.uids_above(0)
    headers = await selected.fetch_headers(uids, batch=len(uids))
    assert len(headers) == 1500


async def test_fetch_headers_skips_uids_that_do_not_exist(
    selected: ImapClient, raw_imap: RawImap
) -> None:
    raw_imap.append_many("INBOX", bulk_messages(3))
    await selected.select("INBOX")
    uids = raw_imap.uids("INBOX")
    headers = await selected.fetch_headers([uids[0], uids[2], uids[2] + 50], batch=1)
    assert [h.uid for h in headers] == [uids[0], uids[2]]
    assert await selected.fetch_headers([]) == []


async def test_fetch_message_returns_the_raw_bytes_without_setting_seen(
    selected: ImapClient, raw_imap: RawImap
) -> None:
    message = sample_message(subject="Unsubscribe special offers", body="Bitte austragen. ✓\n")
    raw_imap.append_many("INBOX", [message])
    await selected.select("INBOX")
    (uid,) = raw_imap.uids("INBOX")
    assert await selected.fetch_message(uid) == message
    assert await selected.fetch_headers([uid]) == [
        FetchedHeader(uid, len(message), message.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    ]
    assert raw_imap.flags("INBOX")[uid] == set()


async def test_fetch_message_of_a_vanished_uid_is_none(selected: ImapClient) -> None:
    assert await selected.fetch_message(4242) is None


# -- moving -------------------------------------------------------------------------------------


async def move_second_of_three(client: ImapClient, raw_imap: RawImap) -> None:
    raw_imap.append_many("INBOX", [sample_message(subject=f"m{i}") for i in range(3)])
    await client.select("INBOX")
    uids = raw_imap.uids("INBOX")
    await client.ensure_folder("Processed")
    await client.move(uids[1], "Processed")
    assert raw_imap.subjects("INBOX") == ["m0", "m2"]
    assert raw_imap.subjects("Processed") == ["m1"]
    for folder in ("INBOX", "Processed"):
        assert all("\\Deleted" not in flags for flags in raw_imap.flags(folder).values())


async def test_move_uses_move_and_the_message_changes_folder(
    selected: ImapClient, raw_imap: RawImap
) -> None:
    assert "MOVE" in selected.capabilities
    await move_second_of_three(selected, raw_imap)


async def test_move_without_move_copies_flags_and_expunges_only_that_uid(
    no_move_client: ImapClient, no_move_raw: RawImap
) -> None:
    raw_imap = no_move_raw
    assert "MOVE" not in no_move_client.capabilities
    # A message another client flagged \Deleted must survive our UID EXPUNGE (RFC 4315).
    raw_imap.append_many("INBOX", [sample_message(subject="someone else's")])
    raw_imap.command('SELECT "INBOX"')
    raw_imap.command("UID STORE 1:* +FLAGS.SILENT (\\Deleted)")
    other = raw_imap.uids("INBOX")

    raw_imap.append_many("INBOX", [sample_message(subject=f"m{i}") for i in range(3)])
    uids = [uid for uid in raw_imap.uids("INBOX") if uid not in other]
    await no_move_client.select("INBOX")
    await no_move_client.ensure_folder("Processed")
    await no_move_client.move(uids[1], "Processed")
    assert raw_imap.subjects("INBOX") == ["someone else's", "m0", "m2"]
    assert raw_imap.subjects("Processed") == ["m1"]


@dovecot_only
async def test_a_server_without_move_gets_the_fallback() -> None:
    with DovecotServer(without_move=True) as server:
        config = ImapConfig(server.host, server.port, "none", server.username, server.password)
        async with await ImapClient.connect(config) as client:
            assert "MOVE" not in client.capabilities
            assert "UIDPLUS" in client.capabilities
            await client.select("INBOX")
            with RawImap.for_server(server) as raw:
                await move_second_of_three(client, raw)


async def test_move_of_a_vanished_uid_changes_nothing(
    mover: tuple[ImapClient, RawImap]
) -> None:
    client, raw_imap = mover
    raw_imap.append_many("INBOX", [sample_message(subject="stays")])
    await client.ensure_folder("Processed")
    await client.move(999, "Processed")
    assert raw_imap.subjects("INBOX") == ["stays"]
    assert raw_imap.subjects("Processed") == []


async def test_move_of_messages_another_session_just_moved_moves_the_rest(
    mover: tuple[ImapClient, RawImap]
) -> None:
    client, raw_imap = mover
    raw_imap.append_many("INBOX", [sample_message(subject=f"m{i}") for i in range(3)])
    await client.select("INBOX")
    await client.ensure_folder("Processed")
    uids = raw_imap.uids("INBOX")
    raw_imap.command('SELECT "INBOX"')
    raw_imap.command(f'UID MOVE {uids[1]} "Processed"')  # our session has not heard of it yet

    await client.move_many(uids, "Processed")

    assert raw_imap.subjects("INBOX") == []
    assert sorted(raw_imap.subjects("Processed")) == ["m0", "m1", "m2"]


async def test_move_to_a_missing_folder_fails_and_keeps_the_message(
    mover: tuple[ImapClient, RawImap]
) -> None:
    client, raw_imap = mover
    raw_imap.append_many("INBOX", [sample_message(subject="stays")])
    (uid,) = raw_imap.uids("INBOX")
    await client.select("INBOX")
    with pytest.raises(ImapError, match='"Missing" failed: NO') as caught:
        await client.move(uid, "Missing")
    assert not isinstance(caught.value, ConnectionLost)
    assert raw_imap.subjects("INBOX") == ["stays"]
    assert raw_imap.flags("INBOX")[uid] == set()


async def test_append_to_a_folder_with_spaces(imap_client: ImapClient, raw_imap: RawImap) -> None:
    await imap_client.ensure_folder("Needs review")
    await imap_client.append("Needs review", sample_message(subject="appended"))
    assert raw_imap.subjects("Needs review") == ["appended"]


# -- IDLE ---------------------------------------------------------------------------------------


class IdleCount(asyncio.Event):
    """The `idling` event `ImapClient.idle` sets once the server accepts IDLE, counting how
    often that happened (it is cleared again when the IDLE ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0

    def set(self) -> None:
        self.accepted += 1
        super().set()


async def start_idle(client: ImapClient, timeout_s: float = 30) -> asyncio.Task[bool]:
    """`client.idle(timeout_s)` in a task, returned once the server has accepted the IDLE, so
    that what happens next happens while the client is idling."""
    idling = asyncio.Event()
    task = asyncio.create_task(client.idle(timeout_s=timeout_s, idling=idling))
    await wait_for(lambda: idling.is_set() or task.done(), what="the server to accept IDLE")
    if task.done():
        await task  # raises what went wrong
        raise AssertionError("IDLE ended before the server accepted it")
    return task


async def test_idle_returns_true_soon_after_another_client_appends(
    selected: ImapClient, imap_config: ImapConfig
) -> None:
    async with await ImapClient.connect(imap_config) as other:
        idle = await start_idle(selected, timeout_s=60)
        await other.append("INBOX", sample_message(subject="new"))
        # True, not the False of the minute's timeout: the announcement ended the IDLE.
        assert await idle is True
    # DONE was sent and answered: the client goes on as before.
    assert len(await selected.uids_above(0)) == 1
    await selected.noop()


async def test_idle_returns_false_when_nothing_arrives(selected: ImapClient) -> None:
    idling = IdleCount()
    started = time.monotonic()
    assert await selected.idle(timeout_s=0.3, idling=idling) is False
    assert time.monotonic() - started >= 0.3  # it waited out its timeout, in IDLE
    assert idling.accepted == 1 and not idling.is_set()
    await selected.noop()


async def test_idle_ignores_expunges(
    selected: ImapClient, raw_imap: RawImap, imap_config: ImapConfig
) -> None:
    raw_imap.append_many("INBOX", bulk_messages(2))
    await selected.select("INBOX")
    (first, _) = raw_imap.uids("INBOX")
    idle = await start_idle(selected, timeout_s=1.5)
    async with await ImapClient.connect(imap_config) as other:
        await other.select("INBOX")
        await other.ensure_folder("Elsewhere")
        await other.move(first, "Elsewhere")
    assert await idle is False


async def test_mail_announced_during_another_command_makes_idle_return_at_once(
    selected: ImapClient, raw_imap: RawImap
) -> None:
    assert await selected.uids_above(0) == []
    raw_imap.append_many("INBOX", [sample_message(subject="arrived meanwhile")])
    await selected.noop()  # the server announces the new message here, not in IDLE
    idling = IdleCount()
    assert await selected.idle(timeout_s=60, idling=idling) is True
    assert idling.accepted == 0  # at once: no IDLE was even sent
    assert len(await selected.uids_above(0)) == 1
    assert await selected.idle(timeout_s=0.2) is False


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_idle_raises_connection_lost_when_the_server_goes(
    selected: ImapClient, imap_server: ImapTestServer, how: str
) -> None:
    idle = await start_idle(selected, timeout_s=60)
    await asyncio.to_thread(imap_server.stop if how == "stop" else imap_server.kill)
    # ConnectionLost, not the False of the minute's timeout: the client saw the server go.
    with pytest.raises(ConnectionLost) as caught:
        await asyncio.wait_for(idle, 30)
    assert f"{imap_server.host}:{imap_server.port}" in str(caught.value)
    assert_one_line(caught.value)
    with pytest.raises(ConnectionLost):
        await selected.noop()


@dovecot_only
async def test_idle_raises_connection_lost_naming_the_servers_bye(
    selected: ImapClient, imap_server: DovecotServer
) -> None:
    idle = await start_idle(selected, timeout_s=60)
    await asyncio.to_thread(imap_server.kick_clients)
    with pytest.raises(ConnectionLost, match="server said BYE Server shutting down"):
        await asyncio.wait_for(idle, 30)


async def test_a_new_client_works_after_a_server_restart(
    imap_server: ImapTestServer, imap_config: ImapConfig, raw_imap: RawImap
) -> None:
    raw_imap.append_many("INBOX", [sample_message(subject="kept")])
    first = await ImapClient.connect(imap_config)
    await first.select("INBOX")
    idle = await start_idle(first, timeout_s=60)
    await asyncio.to_thread(imap_server.restart)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(idle, 30)
    await first.close()

    async with await ImapClient.connect(imap_config) as second:
        await second.select("INBOX")
        expected = 1 if imap_server.persistent else 0
        assert len(await second.uids_above(0)) == expected


async def test_cancelling_idle_leaves_the_client_usable(selected: ImapClient) -> None:
    idle = await start_idle(selected)
    idle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle
    await selected.noop()
    assert await selected.idle(timeout_s=0.1) is False


async def test_close_from_another_task_ends_idle(selected: ImapClient) -> None:
    idle = await start_idle(selected, timeout_s=60)
    await selected.close()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(idle, 30)


async def test_one_command_at_a_time(selected: ImapClient, raw_imap: RawImap) -> None:
    idle = await start_idle(selected, timeout_s=60)
    with pytest.raises(ImapError, match="NOOP while IDLE is running"):
        await selected.noop()
    # The refused NOOP left the IDLE alone: it still hears of new mail.
    raw_imap.append_many("INBOX", [sample_message(subject="new")])
    assert await idle is True


# -- timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    ["noop", "move", "move without MOVE", "fetch_headers", "append", "idle"],
)
async def test_every_command_times_out_when_the_server_stops_answering(
    request: pytest.FixtureRequest, frozen: ImapTestServer, operation: str
) -> None:
    server: ImapTestServer = (request.getfixturevalue("no_move_server")
                              if operation == "move without MOVE" else frozen)
    with RawImap.for_server(server) as raw_imap:
        raw_imap.append_many("INBOX", [sample_message()])
    client = await ImapClient.connect(config_for(server, timeout_s=0.5))
    await client.select("INBOX")
    await client.ensure_folder("Processed")
    calls: dict[str, Any] = {
        "noop": client.noop,
        "move": lambda: client.move(1, "Processed"),
        "move without MOVE": lambda: client.move(1, "Processed"),
        "fetch_headers": lambda: client.fetch_headers([1]),
        "append": lambda: client.append("INBOX", sample_message()),
        "idle": lambda: client.idle(timeout_s=0.2),  # DONE goes unanswered
    }
    server.pause()
    # The message names the 0.5 s command timeout that fired (the server never answers).
    with pytest.raises(ConnectionLost, match=r"timed out after 0\.5 s") as caught:
        await calls[operation]()
    assert_one_line(caught.value)
    await client.close()


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_server() -> Iterator[DovecotServer]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI for a test certificate")
    with DovecotServer(tls=True) as server:
        assert isinstance(server, DovecotServer)
        yield server


def tls_config(server: DovecotServer, **changes: Any) -> ImapConfig:
    assert server.tls_port is not None
    config = ImapConfig(
        server.host, server.tls_port, "tls", server.username, server.password,
        ca_file=server.ca_file, timeout_s=5,
    )  # fmt: skip
    return dataclasses.replace(config, **changes)


@dovecot_only
@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_tls_and_starttls_verify_the_certificate_against_the_ca_file(
    tls_server: DovecotServer, security: str
) -> None:
    port = tls_server.tls_port if security == "tls" else tls_server.port
    config = tls_config(tls_server, port=port, security=security)
    async with await ImapClient.connect(config) as client:
        assert "STARTTLS" not in client.capabilities
        assert await client.select("INBOX") > 0


@dovecot_only
@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_an_untrusted_certificate_is_refused(
    tls_server: DovecotServer, security: str
) -> None:
    port = tls_server.tls_port if security == "tls" else tls_server.port
    config = tls_config(tls_server, port=port, security=security, ca_file=None)
    with pytest.raises(ImapError, match=r"TLS failed: .*CERTIFICATE_VERIFY_FAILED") as caught:
        await ImapClient.connect(config)
    assert_one_line(caught.value)


async def test_starttls_on_a_server_without_it_is_refused_not_downgraded(
    imap_config: ImapConfig,
) -> None:
    config = dataclasses.replace(imap_config, security="starttls")
    with pytest.raises(ImapError, match="does not offer STARTTLS"):
        await ImapClient.connect(config)


# -- the aioimaplib fixes: each has a test showing upstream still needs it ----------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def authenticated(protocol_class: type[Any]) -> Any:
    protocol = protocol_class(asyncio.get_running_loop())
    protocol.connection_made(FakeTransport())
    protocol.state = upstream.AUTH
    return protocol


LONG_RESPONSE = b"* OK still here\r\n" * 3000


async def test_upstream_parser_still_overflows_the_stack_on_long_responses() -> None:
    # When this fails, aioimaplib#110 is fixed: drop fix 1 (_handle_responses).
    with pytest.raises(RecursionError):
        authenticated(upstream.IMAP4ClientProtocol).data_received(LONG_RESPONSE)


async def test_patched_parser_takes_long_responses() -> None:
    authenticated(PatchedProtocol).data_received(LONG_RESPONSE)


async def test_upstream_still_hangs_pending_commands_on_a_lost_connection() -> None:
    # When this fails, aioimaplib#118 is fixed: drop fix 2 (connection_lost, execute).
    protocol = authenticated(upstream.IMAP4ClientProtocol)
    noop = asyncio.ensure_future(protocol.simple_command("NOOP"))
    await asyncio.sleep(0)
    protocol.connection_lost(None)
    done, _ = await asyncio.wait({noop}, timeout=0.2)
    assert not done
    noop.cancel()


async def test_patched_protocol_fails_pending_and_later_commands_on_a_lost_connection() -> None:
    protocol = authenticated(PatchedProtocol)
    noop = asyncio.ensure_future(protocol.simple_command("NOOP"))
    await asyncio.sleep(0)
    protocol.data_received(b"* BYE going down\r\n")
    protocol.connection_lost(None)
    with pytest.raises(ConnectionLostError, match="server said BYE: going down"):
        await asyncio.wait_for(noop, 10)
    with pytest.raises(ConnectionLostError):
        await asyncio.wait_for(protocol.simple_command("NOOP"), 10)


async def test_upstream_login_still_logs_a_password_with_a_quote(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # When this fails, upstream scrubs the quoted password: drop fix 3 (login).
    caplog.set_level(logging.DEBUG, logger="aioimaplib.aioimaplib")
    protocol = authenticated(upstream.IMAP4ClientProtocol)
    protocol.state = upstream.NONAUTH
    login = asyncio.ensure_future(protocol.login("mailer", 'se"cret'))
    await asyncio.sleep(0)
    assert "cret" in caplog.text
    login.cancel()


async def test_patched_login_quotes_the_user_and_never_logs_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioimaplib.aioimaplib")
    protocol = authenticated(PatchedProtocol)
    protocol.state = upstream.NONAUTH
    login = asyncio.ensure_future(protocol.login("mail er", 'se"cret'))
    await asyncio.sleep(0)
    assert "cret" not in caplog.text
    assert b'LOGIN "mail er" "se\\"cret"' in b"".join(protocol.transport.written)
    login.cancel()


def test_upstream_still_has_no_starttls() -> None:
    # When this fails, aioimaplib has STARTTLS of its own: consider dropping fix 4.
    assert not hasattr(upstream.IMAP4ClientProtocol, "starttls")
    assert not hasattr(upstream.IMAP4, "starttls")


def _fetch_commands() -> tuple[Any, Any]:
    upstream_command = upstream.FetchCommand("A1")
    linear = upstream.FetchCommand("A1")
    linear.__class__ = aioimaplib_fixes.LinearFetchCommand
    return upstream_command, linear


async def test_linear_fetch_wait_data_answers_as_upstream_does_line_by_line() -> None:
    lines: list[bytes | bytearray] = [
        b"1 FETCH (UID 5 RFC822.SIZE 10 BODY[HEADER] {4}", bytearray(b"abcd"), b")",
        b"2 FETCH (UID 6 BODY[HEADER] {3}", bytearray(b"(x("), b" FLAGS (\\Seen))",
        b"3 FETCH (UID 7 FLAGS (\\Seen)", b")",
    ]
    upstream_command, linear = _fetch_commands()
    for line in lines:
        upstream_command.append_to_resp(line)
        linear.append_to_resp(line)
        assert linear.wait_data() == upstream_command.wait_data()


async def test_upstream_fetch_wait_data_still_rescans_every_line() -> None:
    """When this fails, upstream's wait_data no longer rescans and fix 6 can go."""

    class Counting(list[Any]):
        reads = 0

        def __iter__(self) -> Any:
            Counting.reads += len(self)
            return super().__iter__()

    upstream_command, _ = _fetch_commands()
    upstream_command._resp_lines = Counting()
    for number in range(200):
        upstream_command.append_to_resp(f"{number} FETCH (UID {number})".encode())
        upstream_command.wait_data()
    assert Counting.reads >= 200 * 199 // 2
