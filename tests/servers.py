"""Real mail servers on loopback for tests, benchmarks and the demo; plain classes, no pytest.

    DovecotServer   Dovecot 2.3 as a plain foreground process, config and Maildir in a temp dir
    PymapServer     pymap's in-memory backend, the fallback where Dovecot is not installed
    imap_server_class()  picks one of them (env MAILER_TEST_IMAP=dovecot|pymap overrides)
    RawImap         a few blocking IMAP commands, independent of mailer's own client: seeds
                    mailboxes fast and checks what the client did
    SmtpSink        aiosmtpd on loopback recording every message, with fault knobs
    PostfixSink     Postfix's smtp-sink: replies to pipelined commands in one write, as Postfix
                    does; keeps each message in a file, can refuse or hang up on a command

Both IMAP servers have one user (`username`/`password`), listen on 127.0.0.1 on a free port and
offer IDLE, MOVE and UIDPLUS. `stop()` is a graceful shutdown (a BYE from pymap, Dovecot just
closes; `DovecotServer.kick_clients()` sends the BYE), `kill()` is
SIGKILL (clients see the connection drop), `restart()` comes back on the same port, `pause()`
and `resume()` freeze and thaw it (connections stay open, nothing answers).

    with DovecotServer() as imap:
        RawImap.for_server(imap).append_many("INBOX", [sample_message(subject="hi")])
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.ports import (
    HOST,
    PORT_ATTEMPTS,
    ProcessExited,
    accepts,
    free_port,
    port_taken,
    until_listening,
)
from tests.waiting import WaitTimeout

__all__ = [
    "DovecotServer",
    "ImapTestServer",
    "LoopbackController",
    "PymapServer",
    "RawImap",
    "Received",
    "SmtpSink",
    "accepts",
    "free_port",
    "imap_server_class",
    "sample_message",
]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
# Dovecot takes ~1.1 s to stop, but ~6 s when stopped within milliseconds of starting.
_GRACEFUL_STOP_S = 2.0
# -- IMAP servers -------------------------------------------------------------------------------


class ImapTestServer:
    """A mail server run as a child process: the part Dovecot and pymap share."""

    name: ClassVar[str]
    #: False where a restart loses the mailboxes (pymap's in-memory backend).
    persistent: ClassVar[bool]
    host = HOST
    username = "mailer"
    password = "secret"

    def __init__(self) -> None:
        self.port = free_port()
        self._started = False  # once started, a restart keeps the port clients know
        self.dir = Path(tempfile.mkdtemp(prefix=f"mailer-{self.name}-"))
        self._process: subprocess.Popen[bytes] | None = None
        # Should a script forget close(), the server and its files still go when it exits.
        self._remove_dir = weakref.finalize(self, shutil.rmtree, self.dir, ignore_errors=True)
        self._reaper: weakref.finalize[Any, Any] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ports(self) -> list[int]:
        return [self.port]

    def _log_tail(self) -> str:
        return ""

    def _new_ports(self) -> None:
        self.port = free_port()

    def start(self) -> None:
        """Start the server and return once its own process listens on its ports.

        Should its port be taken after all on the first start, it starts on fresh ports (up
        to three tries); a restart keeps its port, so there a taken port is the error.
        """
        if self._process is not None:
            raise RuntimeError(f"{self.name} is already running")
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_once()
            except _PortTaken as exc:
                if self._started or attempt == PORT_ATTEMPTS:
                    raise RuntimeError(str(exc)) from None
                self._new_ports()
            else:
                self._started = True
                return

    def _start_once(self) -> None:
        stderr_path = self.dir / "stderr.log"
        stderr = stderr_path.open("ab")
        earlier = stderr.tell()  # what earlier starts wrote
        with stderr:
            # A session of its own, so kill() can take every child process with it.
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self._reaper = weakref.finalize(self, _kill_group, self._process)
        ports = self._ports()
        try:
            until_listening(self._process, ports, f"{self.name} to listen on {HOST}:{self.port}",
                            timeout_s=_START_TIMEOUT_S)
        except (ProcessExited, WaitTimeout):
            self.kill()
            with stderr_path.open("rb") as written:
                written.seek(earlier)
                log = written.read().decode(errors="replace")[-2000:] + self._log_tail()
            if port_taken(log):
                taken = (f"port {ports[0]} is" if len(ports) == 1 else
                         f"one of ports {', '.join(map(str, ports))} is")
                raise _PortTaken(f"{self.name} did not start: {HOST} {taken} in use by another "
                                 "program") from None
            raise RuntimeError(f"{self.name} did not start on {HOST}:{self.port}: {log}") from None

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL after 2 s; takes Dovecot about a second."""
        process = self._process
        if process is None:
            return
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_GRACEFUL_STOP_S)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its children: connected clients see the connection drop."""
        process = self._process
        if process is None:
            return
        self._process = None
        if self._reaper is not None:
            self._reaper.detach()
        _kill_group(process)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing answers (for timeout tests)."""
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGCONT)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port with the same data directory."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        """Kill the server and remove its temp dir."""
        self.kill()
        self._remove_dir()

    def __enter__(self) -> ImapTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port}>"


class _PortTaken(RuntimeError):
    pass


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(_STOP_TIMEOUT_S)


# What Dovecot 2.3 announces after LOGIN; `imap_capability` replaces the whole list, so a
# server without one capability announces this list less that one.
_DOVECOT_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE LITERAL+"
)


class DovecotServer(ImapTestServer):
    """Dovecot as `dovecot -F -c <tmp>/dovecot.conf`; touches nothing outside its temp dir.

    Run as root, mail is stored as the `nobody` user (Dovecot refuses root as a mail user);
    otherwise as the current user. `tls=True` adds an implicit-TLS port (`tls_port`) and
    STARTTLS on `port`, with a fresh self-signed certificate for 127.0.0.1 (`ca_file`).
    `without_move=True` announces every capability but MOVE; `without_idle=True` every one
    but IDLE.
    """

    name = "dovecot"
    persistent = True

    def __init__(
        self, *, tls: bool = False, without_move: bool = False, without_idle: bool = False
    ) -> None:
        super().__init__()
        binary = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/bin")
        if binary is None:
            raise RuntimeError("dovecot is not installed")
        self._binary = binary
        self.tls_port = free_port() if tls else None
        self.ca_file: str | None = None
        self.maildir = self.dir / "Maildir"
        self._without = {name for name, off in (("MOVE", without_move),
                                                ("IDLE", without_idle)) if off}
        self._write_config(self._without)

    def _new_ports(self) -> None:
        super()._new_ports()
        if self.tls_port is not None:
            self.tls_port = free_port()
        self._write_config(self._without)

    def _write_config(self, without: set[str]) -> None:
        base = self.dir
        account = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        uid, gid = account.pw_uid, account.pw_gid
        group = grp.getgrgid(gid).gr_name
        for sub in ("run", "state"):
            (base / sub).mkdir(exist_ok=True)
        self.maildir.mkdir(exist_ok=True)
        os.chown(self.maildir, uid, gid)
        base.chmod(0o755)  # the mail user must reach the Maildir
        passwd = base / "passwd"
        passwd.write_text(
            f"{self.username}:{{PLAIN}}{self.password}:{uid}:{gid}::{self.maildir}::\n"
        )
        ssl_lines = "ssl = no"
        imaps_port = 0
        if self.tls_port is not None:
            cert, key = base / "cert.pem", base / "key.pem"
            if self.ca_file is None:
                cert, key = _self_signed_certificate(base)
                self.ca_file = str(cert)
            ssl_lines = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"
            imaps_port = self.tls_port
        announced = " ".join(c for c in _DOVECOT_CAPABILITIES.split() if c not in without)
        capability = f"imap_capability = {announced}" if without else ""
        (base / "dovecot.conf").write_text(
            f"""\
# Written by tests/servers.py: a throwaway Dovecot on loopback.
instance_name = mailer-test-{self.port}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
listen = {HOST}
protocols = imap
{ssl_lines}
auth_mechanisms = plain
disable_plaintext_auth = no
auth_failure_delay = 0
default_login_user = {account.pw_name}
default_internal_user = {account.pw_name}
default_internal_group = {group}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{self.maildir}
mailbox_idle_check_interval = 1 secs
mail_fsync = never
{capability}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {imaps_port}
  }}
}}
"""
        )

    def _command(self) -> list[str]:
        return [self._binary, "-F", "-c", str(self.dir / "dovecot.conf")]

    def kick_clients(self) -> None:
        """Disconnect every client with "* BYE Server shutting down."; the server keeps running.

        (A graceful `stop()` of Dovecot 2.3 closes connections without a BYE.)
        """
        doveadm = shutil.which("doveadm") or shutil.which("doveadm", path="/usr/bin:/usr/sbin")
        if doveadm is None:
            raise RuntimeError("doveadm is not installed")
        config = str(self.dir / "dovecot.conf")
        subprocess.run(
            [doveadm, "-c", config, "kick", self.username], check=True, capture_output=True
        )

    def _ports(self) -> list[int]:
        return [self.port] if self.tls_port is None else [self.port, self.tls_port]

    def _log_tail(self) -> str:
        log = self.dir / "dovecot.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, valid two days, made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class PymapServer(ImapTestServer):
    """pymap's `dict` backend: everything in memory, so a restart starts from empty mailboxes."""

    name = "pymap"
    persistent = False

    def _command(self) -> list[str]:
        # pymap has no `python -m pymap`; call its console-script entry point directly.
        return [
            sys.executable, "-c", "import sys; from pymap.main import main; sys.exit(main())",
            "--host", HOST, "--port", str(self.port), "--no-tls",
            "dict", "--demo-user", self.username, "--demo-password", self.password,
        ]  # fmt: skip


def imap_server_class() -> type[ImapTestServer]:
    """Dovecot when installed, else pymap; env MAILER_TEST_IMAP=dovecot|pymap decides first."""
    choice = os.environ.get("MAILER_TEST_IMAP", "").strip().lower()
    if choice == "dovecot":
        return DovecotServer
    if choice == "pymap":
        return PymapServer
    if choice:
        raise RuntimeError(f"MAILER_TEST_IMAP: expected dovecot or pymap, got {choice!r}")
    dovecot = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/bin")
    return DovecotServer if dovecot else PymapServer


# -- a raw IMAP client to seed and inspect mailboxes --------------------------------------------


class RawImapError(Exception):
    pass


class RawImap:
    """Blocking, minimal IMAP over a plain socket: deliberately not mailer's client."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self._sock = socket.create_connection((host, port), timeout=30)
        self._reader = self._sock.makefile("rb")
        self._tag = 0
        self._read_line()  # greeting
        self.command(f"LOGIN {_quote(username)} {_quote(password)}")

    @classmethod
    def for_server(cls, server: ImapTestServer) -> RawImap:
        return cls(server.host, server.port, server.username, server.password)

    def _read_line(self) -> bytes:
        """One response line, literals inlined."""
        line = self._reader.readline()
        if not line:
            raise RawImapError("connection closed")
        literal = re.search(rb"\{(\d+)\}\r\n$", line)
        if literal:
            return line + self._reader.read(int(literal.group(1))) + self._read_line()
        return line

    def _next_tag(self) -> str:
        self._tag += 1
        return f"R{self._tag:05d}"

    def _read_until(self, tag: str) -> list[bytes]:
        untagged: list[bytes] = []
        while True:
            line = self._read_line()
            if line.startswith(tag.encode() + b" "):
                if not line[len(tag) + 1 :].upper().startswith(b"OK"):
                    raise RawImapError(line.decode(errors="replace").strip())
                return untagged
            untagged.append(line)

    def command(self, command: str) -> list[bytes]:
        """Send one command; the untagged lines of its OK response, else RawImapError."""
        tag = self._next_tag()
        self._sock.sendall(f"{tag} {command}\r\n".encode())
        return self._read_until(tag)

    def append_many(self, folder: str, messages: Iterable[bytes], *, chunk: int = 200) -> None:
        """APPEND `chunk` messages per command: MULTIAPPEND (RFC 3502) with LITERAL+ (RFC 7888),
        one mailbox transaction each, so seeding thousands of messages takes well under a second.
        """
        batch: list[bytes] = []
        for message in messages:
            batch.append(message)
            if len(batch) == chunk:
                self._multiappend(folder, batch)
                batch = []
        if batch:
            self._multiappend(folder, batch)

    def _multiappend(self, folder: str, messages: Sequence[bytes]) -> None:
        tag = self._next_tag()
        parts = [f"{tag} APPEND {_quote(folder)}".encode()]
        for message in messages:
            parts.append(f" {{{len(message)}+}}\r\n".encode() + message)
        self._sock.sendall(b"".join(parts) + b"\r\n")
        self._read_until(tag)

    def uids(self, folder: str) -> list[int]:
        """UIDs in `folder` (read-only EXAMINE; the \\Recent flag is left alone)."""
        self.command(f"EXAMINE {_quote(folder)}")
        found: list[int] = []
        for line in self.command("UID SEARCH ALL"):
            if line.upper().startswith(b"* SEARCH"):
                found.extend(int(token) for token in line.split()[2:])
        return sorted(found)

    def flags(self, folder: str) -> dict[int, set[str]]:
        """Flags by UID for every message in `folder`."""
        self.command(f"EXAMINE {_quote(folder)}")
        result: dict[int, set[str]] = {}
        for line in self.command("UID FETCH 1:* (UID FLAGS)"):
            uid = re.search(rb"UID (\d+)", line)
            flags = re.search(rb"FLAGS \(([^)]*)\)", line)
            if uid and flags:
                result[int(uid.group(1))] = set(flags.group(1).decode().split())
        return result

    def subjects(self, folder: str) -> list[str]:
        """The Subject header of each message in `folder`, by ascending UID."""
        self.command(f"EXAMINE {_quote(folder)}")
        lines = self.command("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects: list[tuple[int, str]] = []
        for line in lines:
            uid = re.search(rb"UID (\d+)", line)
            subject = re.search(rb"Subject: ?([^\r\n]*)", line, re.IGNORECASE)
            if uid:
                subjects.append((int(uid.group(1)), subject.group(1).decode() if subject else ""))
        return [subject for _, subject in sorted(subjects)]

    def close(self) -> None:
        with contextlib.suppress(OSError, RawImapError):
            self.command("LOGOUT")
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> RawImap:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sample_message(
    *,
    subject: str = "Hello",
    sender: str = "alice@example.com",
    to: str = "inbox@example.com",
    body: str = "Hello there.\n",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A small, valid RFC 5322 message with CRLF line ends."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="example.com")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


# -- SMTP sink ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One accepted message as the sink saw it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # raw, exactly as received after DATA
    received_at: float = field(default_factory=time.time)  # when the sink accepted it


@dataclass
class _Faults:
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail: list[int] = field(default_factory=list)  # codes for the next transactions
    drops: int = 0

    def take_fail(self) -> int | None:
        with self.lock:
            return self.fail.pop(0) if self.fail else None

    def take_drop(self) -> bool:
        with self.lock:
            if self.drops:
                self.drops -= 1
                return True
            return False


_FAILURE_TEXT = {
    421: "421 4.3.2 Service shutting down, closing transmission channel",
    451: "451 4.3.0 Temporary failure, try again later",
}


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP with the two faults a handler hook cannot produce."""

    def __init__(self, handler: Any, faults: _Faults, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._faults = faults

    async def push(self, status: Any) -> None:
        await super().push(status)
        # RFC 5321 3.8: after a 421 reply the server closes the channel.
        text = status.decode() if isinstance(status, bytes) else status
        if text.startswith("421") and self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if envelope is not None and envelope.rcpt_tos and not arg and self._faults.take_drop():
            # Invite the message, then vanish while the client is sending it.
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            if self.transport is not None:
                self.transport.close()
            return
        await super().smtp_DATA(arg)


class LoopbackController(Controller):
    """aiosmtpd's threaded Controller on 127.0.0.1: by default on the port the kernel picks as
    it starts (read back into `port`, so nothing can take it between choosing and binding),
    else on `port` (one from `free_port()`). Like any Controller, it starts once: `stop()`
    closes its event loop."""

    def __init__(self, handler: Any, *, port: int = 0, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, port=port, **kwargs)

    def _create_server(self) -> Coroutine[Any, Any, asyncio.AbstractServer]:
        return self._listen()

    async def _listen(self) -> asyncio.AbstractServer:
        # Runs on the controller's thread before `start()` connects to `port` to see it ready.
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context)
        self.port = int(server.sockets[0].getsockname()[1])
        return server


class _SinkController(LoopbackController):
    def __init__(self, handler: Any, faults: _Faults, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._faults = faults

    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, self._faults, **self.SMTP_kwargs)


class SmtpSink:
    """aiosmtpd on 127.0.0.1:<free port> keeping every accepted message in `messages`. The
    port is known before it starts (settings are often written first), and held in TIME-WAIT
    by `free_port()` until the sink binds it, so nothing takes it meanwhile.

    Fault knobs, all off by default and safe to change while the sink runs:

    - `reject_recipients`: addresses (any case) whose RCPT TO gets `550 5.1.1`; the others in
      the same transaction are still accepted.
    - `fail_next(count, code=451)`: the next `count` transactions get `code` (421 or 451) in
      reply to the end of DATA and are not recorded; after a 421 the sink closes the connection.
    - `delay_s`: seconds the sink waits before replying to the end of DATA.
    - `drop_next(count=1)`: for the next `count` transactions the sink answers DATA with 354
      and then drops the connection, so the client loses it mid-message.
    - `on_rcpt`: called with each RCPT TO address (on the sink's thread) before the sink
      answers it: what happens elsewhere while a client waits for its envelope's replies.

    `transactions` counts every DATA the sink saw, failed or not. It announces PIPELINING (RFC
    2920) as production servers do, so clients send MAIL, RCPT and DATA in one write; aiosmtpd
    reads commands one at a time off its stream whatever the announcement, so that works.
    `pipelining=False` leaves the announcement out, for the client's one-command-at-a-time path.
    """

    host = HOST

    def __init__(self, *, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.port = free_port()
        self.messages: list[Received] = []
        self.reject_recipients: set[str] = set()
        self.delay_s = 0.0
        self.on_rcpt: Callable[[str], None] | None = None
        self.transactions = 0
        self._faults = _Faults()
        self._controller = _SinkController(self, self._faults, port=self.port)

    def fail_next(self, count: int, code: int = 451) -> None:
        if code not in _FAILURE_TEXT:
            raise ValueError(f"code must be one of {sorted(_FAILURE_TEXT)}")
        with self._faults.lock:
            self._faults.fail.extend([code] * count)

    def drop_next(self, count: int = 1) -> None:
        with self._faults.lock:
            self._faults.drops += count

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # aiosmtpd handler hooks; they run on the controller's thread.
    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.on_rcpt is not None:
            self.on_rcpt(address)
        if address.lower() in {a.lower() for a in self.reject_recipients}:
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.transactions += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        code = self._faults.take_fail()
        if code is not None:
            return _FAILURE_TEXT[code]
        content = envelope.original_content or b""
        self.messages.append(
            Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), bytes(content))
        )
        return "250 OK"


class PostfixSink:
    """Postfix's `smtp-sink` on 127.0.0.1:<free port>, as a plain process. It announces
    PIPELINING and answers a pipelined group in one write (aiosmtpd answers command by
    command). Each accepted message is kept in a file of `directory`, with smtp-sink's few
    headers (X-Rcpt-Args and the like) above it. `flags` are smtp-sink's own: `-Q rcpt` sends
    421 and hangs up on RCPT, `-q .` hangs up without a word at the end of a message.
    smtp-sink must be told its port: should it be taken after all, it starts on a fresh one
    (up to three tries)."""

    host = HOST

    def __init__(self, *flags: str) -> None:
        self.port = free_port()
        # Its own folder under /tmp: as root, smtp-sink writes as `nobody`, who cannot reach
        # into pytest's private temporary folders.
        self._tmp = tempfile.TemporaryDirectory(prefix="mailer-smtp-sink-")
        self.directory = Path(self._tmp.name)
        self.directory.chmod(0o777)
        binary = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin")
        if binary is None:
            raise RuntimeError("smtp-sink not found: install Postfix (scripts/setup-system.sh)")
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self._command = [binary, *user, *flags, "-d", f"{self.directory}/%H%M%S."]
        self._process: subprocess.Popen[bytes] | None = None

    def messages(self) -> list[bytes]:
        """The messages accepted so far, each as smtp-sink wrote it. smtp-sink opens a
        transaction's file before the transaction ends and removes it if the transaction is
        aborted, a moment after the client has seen the connection go; wait for that with
        tests.waiting rather than asking at once."""
        found = []
        for path in sorted(self.directory.iterdir()):
            with contextlib.suppress(FileNotFoundError):  # an aborted transaction's, removed
                found.append(path.read_bytes())
        return found

    def __enter__(self) -> PostfixSink:
        attempt = 1
        while (failure := self._start()) is not None:
            if not port_taken(failure) or attempt == PORT_ATTEMPTS:
                raise RuntimeError(f"smtp-sink did not start on {HOST}:{self.port}: {failure}")
            attempt += 1
            self.port = free_port()
        return self

    def _start(self) -> str | None:
        """Start smtp-sink on `port`: None once it listens, else what it said."""
        command = [*self._command, f"{HOST}:{self.port}", "100"]
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                until_listening(process, [self.port], f"smtp-sink on {HOST}:{self.port}",
                                timeout_s=_START_TIMEOUT_S)
            except (ProcessExited, WaitTimeout):
                process.kill()
                process.wait(_STOP_TIMEOUT_S)
                stderr.seek(0)
                said = stderr.read().decode(errors="replace")[-2000:].strip()
                return f"{' '.join(command)}: {said or 'no word'}"
        self._process = process
        return None

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._tmp.cleanup()
