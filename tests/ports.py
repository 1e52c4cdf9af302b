"""Ports for the servers tests start, chosen so that nothing can take them between choosing
and listening, and knowing when a server process really listens on its port.

    free_port()          a port for a program that must be told one (Dovecot, smtp-sink,
                         `mailer web`); servers started in-process bind port 0 instead
    accepts(port)        something accepts connections there now
    until_listening(process, ports, what, timeout_s=...)
                         wait until that process itself listens on them
    port_taken(log)      the program said its port was in use: start it on a fresh one

No pytest here: tests.servers, bench/ and scripts/demo.py use it too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Sequence

from tests.waiting import wait_for_sync

__all__ = ["HOST", "PORT_ATTEMPTS", "ProcessExited", "accepts", "free_port", "listens",
           "port_taken", "until_listening"]

HOST = "127.0.0.1"
# Fresh ports a first start tries when the one it was given is taken after all.
PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 for a server that must be told its port before it starts
    (Dovecot, smtp-sink, `mailer web`); servers started in-process bind port 0 instead.

    The port is handed back in TCP's TIME-WAIT state (RFC 9293 3.3.2): for about a minute the
    kernel gives it to no other bind to port 0 and no outgoing connection, so nothing steals it
    between here and the server's bind, while a server binding it with SO_REUSEADDR (Dovecot,
    Postfix, asyncio and aiohttp all do) takes it at once. A plain bind without SO_REUSEADDR
    is refused until the minute is up.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(1)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=5):
            accepted, _ = listener.accept()
            # The side that closes first is the one left in TIME-WAIT: ours, on the port.
            accepted.close()
        return int(address[1])


def accepts(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on host:port now (for a server of mailer's own,
    started in the test, whose port the test chose)."""
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


class ProcessExited(Exception):
    """The server process ended while it was being waited for."""


def until_listening(process: subprocess.Popen[bytes], ports: Sequence[int], what: str, *,
                    timeout_s: float) -> None:
    """Return once `process` itself listens on every port; ProcessExited if it ends first,
    WaitTimeout (naming `what`) after `timeout_s`."""

    def listening() -> bool:
        if process.poll() is not None:
            raise ProcessExited
        return listens(process.pid, ports)

    wait_for_sync(listening, what=what, timeout_s=timeout_s, interval_s=0.005)


def port_taken(log: str) -> bool:
    # Dovecot: "listen(127.0.0.1, N) failed: Address already in use"; smtp-sink: "bind ...:
    # Address already in use"; pymap: "[Errno 98] ... address already in use".
    return "address already in use" in log.lower()


def listens(pid: int, ports: Sequence[int]) -> bool:
    """Whether process `pid` itself holds a listening socket on 127.0.0.1 on every port (read
    from /proc): a port that accepts connections may be another program's, one that took the
    port first, while this process is failing to bind it."""
    # /proc/net/tcp writes 127.0.0.1:port as little-endian hex address, big-endian hex port.
    wanted = {f"0100007F:{port:04X}" for port in ports}
    inodes: dict[str, set[str]] = {address: set() for address in wanted}
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] in wanted and fields[3] == "0A":  # 0A: LISTEN
                inodes[fields[1]].add(f"socket:[{fields[9]}]")
    if not all(inodes.values()):
        return False
    held = set()
    with contextlib.suppress(FileNotFoundError):  # an fd closed while we look
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return all(sockets & held for sockets in inodes.values())
