"""Fixtures for the whole suite: real servers on loopback, one fresh set per test.

Dovecot starts in about 20 ms and pymap in about 0.25 s, so each test gets its own IMAP server
(and so its own empty mailboxes); nothing carries over from one test to the next.

The store runs on two engines. A test taking the `database` fixture runs once per engine
(`test_x[sqlite]`, `test_x[postgresql]`; `-k postgresql` or `-m postgresql` picks the second),
each time on a fresh empty database: a SQLite file in tmp_path, or a new database on one
PostgreSQL server the session starts on first use (`postgres_server`, tests/postgres.py, about
0.6 s; a database about 20 ms). Without PostgreSQL here the postgresql half is left out (not
skipped) and the summary says so in one line; with MAILER_TEST_POSTGRES=required (CI) it is
never left out and the session stops at once, in one line, if PostgreSQL is missing or fails;
MAILER_TEST_POSTGRES=off leaves it out on purpose.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from mailer.inbox.imap import ImapClient, ImapConfig
from tests.postgres import PostgresServer, PostgresStartFailed, unavailable_reason
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


# --- The two store engines ----------------------------------------------------------------------

POSTGRES_REQUIRED = os.environ.get("MAILER_TEST_POSTGRES") == "required"
_left_out = pytest.StashKey[int]()


@functools.cache
def postgres_missing() -> str | None:
    """Why this session runs without PostgreSQL, or None; decided once per session."""
    return unavailable_reason()


def database_engines() -> list[str]:
    """The engines a `database` test runs on here."""
    return ["sqlite"] if postgres_missing() else ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: runs against the PostgreSQL store engine")
    config.stash[_left_out] = 0
    reason = postgres_missing()
    if POSTGRES_REQUIRED and reason:
        raise pytest.UsageError(f"MAILER_TEST_POSTGRES=required but PostgreSQL is missing: "
                                f"{reason}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" not in metafunc.fixturenames:
        return
    params = [pytest.param(engine, id=engine,
                           marks=[pytest.mark.postgresql] if engine == "postgresql" else [])
              for engine in database_engines()]
    metafunc.parametrize("database", params, indirect=True)
    if postgres_missing():
        metafunc.config.stash[_left_out] += 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of the PostgreSQL server itself are left out (deselected) where there is none."""
    if not postgres_missing():
        return
    needing = [item for item in items if "postgres_server" in getattr(item, "fixturenames", ())]
    if needing:
        config.hook.pytest_deselected(items=needing)
        items[:] = [item for item in items if item not in needing]
        config.stash[_left_out] += len(needing)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    reason = postgres_missing()
    # Under pytest-xdist the workers collect (and count); the controller says it once.
    distributed = bool(getattr(config.option, "numprocesses", None))
    if reason and (distributed or config.stash.get(_left_out, 0)):
        terminalreporter.write_line(f"PostgreSQL half skipped: {reason}; CI runs it")


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, started on first use; tests each take a fresh
    database from it (`create_database()`), so they never see one another's rows."""
    server = PostgresServer()
    failure = ""
    try:
        server.start()
    except PostgresStartFailed as exc:
        failure = f"PostgreSQL for the tests did not start: {exc}"
    if failure:
        # One line, and the session stops after this test instead of repeating the error on
        # every PostgreSQL test (pytest.exit from a fixture breaks pytest's own teardown).
        request.session.shouldfail = failure
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """A fresh empty store location for mailer.store.db.open_db: a SQLite file path, or a
    postgresql:// URL of a new database, dropped afterwards (parametrized over both engines by
    pytest_generate_tests)."""
    if request.param == "sqlite":
        yield tmp_path / "mailer.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url.rsplit("/", 1)[1])
