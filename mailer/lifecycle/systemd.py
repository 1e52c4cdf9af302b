"""systemd's notify protocol (sd_notify(3)) in a few lines, without a dependency.

With `Type=notify` systemd waits for READY=1 before it calls the service started, and with
`WatchdogSec=` it restarts the service unless WATCHDOG=1 arrives in time. Both go as a
datagram to the socket in $NOTIFY_SOCKET; outside systemd (no $NOTIFY_SOCKET) they do nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to systemd; False when not run under Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket (sd_notify(3))
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("systemd notify %s: %s", message.split("=")[0], exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """How often to send WATCHDOG=1 (half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises), or None when no watchdog is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2
