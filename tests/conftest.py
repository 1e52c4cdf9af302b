"""Fixtures for the whole suite: real servers on loopback, one fresh set per test.

Dovecot starts in about 20 ms and pymap in about 0.25 s, so each test gets its own IMAP server
(and so its own empty mailboxes); nothing carries over from one test to the next.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from mailer.inbox.imap import ImapClient, ImapConfig
from tests.servers import ImapTestServer, RawImap, SmtpSink, imap_server_class

# CI explores the same examples on every run, so a red build is never a roll of the dice;
# developers' runs stay random and keep finding new cases.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture
def imap_server() -> Iterator[ImapTestServer]:
    """A running IMAP server (Dovecot, else pymap; see tests.servers.imap_server_class)."""
    server = imap_server_class()()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_config(imap_server: ImapTestServer) -> ImapConfig:
    """Plaintext on loopback, with a command timeout short enough for a hung test to show."""
    return ImapConfig(
        host=imap_server.host,
        port=imap_server.port,
        security="none",
        username=imap_server.username,
        password=imap_server.password,
        timeout_s=10.0,
    )


@pytest.fixture
async def imap_client(imap_config: ImapConfig) -> AsyncIterator[ImapClient]:
    """A logged-in client, closed afterwards."""
    client = await ImapClient.connect(imap_config)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def raw_imap(imap_server: ImapTestServer) -> Iterator[RawImap]:
    """An independent blocking IMAP session on the same account, to seed and inspect."""
    raw = RawImap.for_server(imap_server)
    try:
        yield raw
    finally:
        raw.close()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A running SMTP sink recording what it receives; see SmtpSink for the fault knobs."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
