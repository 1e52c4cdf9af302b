"""A throwaway PostgreSQL server for tests: its own cluster in a temporary folder, on loopback.

    unavailable_reason()   None when initdb is found and psycopg imports, else why not (one line);
                           MAILER_TEST_POSTGRES=off says no on purpose (a quick SQLite-only run)
    PostgresServer         initdb + pg_ctl into a temp dir, 127.0.0.1 on a free port, trust auth
      .url(dbname)         postgresql://mailer@127.0.0.1:PORT/dbname
      .create_database()   a fresh empty database with a unique name; its URL
      .drop_database(dbname)      drop it, ending any session still on it
      .kill_connections(dbname)   end every session on that database (what a restart looks like)
    stop_orphans(bindir)   stop clusters that killed sessions left running (start() calls it)

    with PostgresServer() as server:
        url = server.create_database()

The system cluster Debian's package may have created is never used. `pg_ctl` and `postgres`
refuse to run as root, so as root the cluster belongs to the `postgres` system user (else
`nobody`), and every program touching it runs as that user. Durability is switched off: a test
database that a power cut loses is no loss, and fsync on a shared CI disk is where the time goes.

No pytest here: bench/ and scripts can use it too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.ports import HOST, PORT_ATTEMPTS, free_port, port_taken

__all__ = ["SUPERUSER", "PostgresServer", "PostgresStartFailed", "find_bindir", "stop_orphans",
           "unavailable_reason"]

SUPERUSER = "mailer"
_PREFIX = "mailer-pg-"
# The pid of the process that started the cluster, so a later session can tell an orphan.
_SESSION_FILE = "session.pid"
# Waiting for the server to accept connections: generous, a loaded two-core CI box is slow.
_START_TIMEOUT_S = 120
# Settings for a server nobody relies on after the test: no durability (fsync, the WAL flush at
# commit, full-page images after a checkpoint), room for every test's pool at once.
_TEST_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "log_min_messages": "warning",
}


class PostgresStartFailed(RuntimeError):
    """initdb or pg_ctl failed; the message is one line with the program's last words."""


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: from PATH, else Debian's newest
    /usr/lib/postgresql/N/bin (Debian keeps them off PATH; only wrappers are there)."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        folder = Path(initdb).resolve().parent
        if (folder / "pg_ctl").exists() and (folder / "postgres").exists():
            return folder
    installed = [folder for folder in Path("/usr/lib/postgresql").glob("*/bin")
                 if (folder / "initdb").exists()]
    versions = sorted(installed, key=lambda folder: int(folder.parent.name)
                      if folder.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def unavailable_reason() -> str | None:
    """Why the PostgreSQL half of the suite cannot run here, or None when it can."""
    if os.environ.get("MAILER_TEST_POSTGRES") == "off":
        return "MAILER_TEST_POSTGRES=off"
    if find_bindir() is None:
        return "no initdb found (apt-get install postgresql-15)"
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg does not import ({exc}; pip install 'psycopg[binary]')"
    return None


def _owner() -> pwd.struct_passwd | None:
    """Who the cluster belongs to: None for ourselves, unless we are root (pg_ctl refuses)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresStartFailed("running as root and neither a postgres nor a nobody user exists")


def _run(bindir: Path, owner: pwd.struct_passwd | None, cwd: Path | None,
         *command: str) -> subprocess.CompletedProcess[str]:
    """Run one of PostgreSQL's programs, as the cluster's owner when we are root."""
    return subprocess.run(
        [str(bindir / command[0]), *command[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        user=owner.pw_uid if owner else None,
        group=owner.pw_gid if owner else None,
        extra_groups=[] if owner else None,
        env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_orphans(bindir: Path) -> None:
    """Stop and remove the clusters of test sessions that died without stopping theirs (killed
    by a timeout or Ctrl-C twice): pg_ctl detaches the server, so nothing else would end it.
    A cluster whose session still runs (another worktree's, another user's) is left alone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            session = int((folder / _SESSION_FILE).read_text())
            stat = folder.stat()
        except (OSError, ValueError):
            continue  # being set up right now, or not ours to judge
        if _alive(session):
            continue
        owner = None
        if os.geteuid() == 0 and stat.st_uid != 0:
            owner = pwd.getpwuid(stat.st_uid)
        elif stat.st_uid != os.geteuid():
            continue
        if (folder / "data" / "postmaster.pid").exists():
            _run(bindir, owner, folder, "pg_ctl", "stop", "-D", str(folder / "data"),
                 "-m", "immediate", "-w")
        shutil.rmtree(folder, ignore_errors=True)


def _last_words(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-3:]) if lines else "(no output)"


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresStartFailed(unavailable_reason() or "no initdb found")
        self.bindir = found
        self.host = HOST
        self.port = 0
        self.user = SUPERUSER
        self.folder: Path | None = None
        self._owner = _owner()
        self._names = itertools.count(1)

    @property
    def data(self) -> Path:
        assert self.folder is not None, "the server is not started"
        return self.folder / "data"

    @property
    def log(self) -> Path:
        assert self.folder is not None, "the server is not started"
        return self.folder / "server.log"

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return _run(self.bindir, self._owner, self.folder, *command)

    def start(self) -> None:
        """initdb into a fresh temp folder and start the server; PostgresStartFailed if not."""
        stop_orphans(self.bindir)
        self.folder = Path(tempfile.mkdtemp(prefix=_PREFIX))
        try:
            (self.folder / _SESSION_FILE).write_text(str(os.getpid()))
            if self._owner is not None:
                # The data dir, and the socket dir beside it, must belong to the server's user.
                os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)
            done = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
                             "--encoding=UTF8", "--locale=C", "--no-sync")
            if done.returncode != 0:
                raise PostgresStartFailed(f"initdb failed: {_last_words(done.stderr)}")
            settings = "".join(f"{key} = '{value}'\n" for key, value in _TEST_SETTINGS.items())
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(f"\n# mailer tests\n{settings}"
                           f"unix_socket_directories = '{self.folder}'\n")
            self._start_on_free_port()
        except BaseException:
            self.stop()  # pg_ctl may give up waiting on a server that then runs on
            raise

    def _start_on_free_port(self) -> None:
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            done = self._run("pg_ctl", "start", "-w", "-t", str(_START_TIMEOUT_S),
                             "-D", str(self.data), "-l", str(self.log), "-o", f"-p {self.port}")
            if done.returncode == 0:
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if not port_taken(log):
                raise PostgresStartFailed(
                    f"pg_ctl start failed: {_last_words(done.stderr + log)}")
            self.log.unlink()
        raise PostgresStartFailed(f"pg_ctl start failed: port taken {PORT_ATTEMPTS} times")

    def stop(self) -> None:
        """Stop at once (no checkpoint: nothing is kept) and remove the folder."""
        if self.folder is None:
            return
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        self._remove()

    def _remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    @property
    def pid(self) -> int:
        """The postmaster's process id (the first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, template: str = "template0") -> str:
        """A fresh database with a unique name, copied from `template` (empty by default);
        its URL."""
        import psycopg
        from psycopg import sql

        name = f"test_{os.getpid()}_{next(self._names)}"
        # Autocommit: CREATE DATABASE cannot run inside a transaction block.
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        return self.url(name)

    def drop_database(self, dbname: str) -> None:
        """Drop a test's database, ending any session still on it (a pool the test left open).
        Each is about 3 MB on disk, so a whole suite's worth would otherwise fill /tmp."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))

    def kill_connections(self, dbname: str) -> int:
        """End every other session on `dbname` as a server restart or a DBA would; how many."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)).fetchone()
        return int(row[0]) if row else 0

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresServer({self.host}:{self.port}, {self.folder})"
