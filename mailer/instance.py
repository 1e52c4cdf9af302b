"""This host's name among the instances sharing one database.

Heartbeats, leases and confirmation claims record which instance wrote them. The name is the
hostname, as one host runs one daemon; `MAILER_INSTANCE` overrides it so that several instances
can run on one machine (tests, a second daemon on a spare host's name) and still tell themselves
apart in `mailer status`.
"""

from __future__ import annotations

import os
import socket

INSTANCE_ENV = "MAILER_INSTANCE"


def instance_name() -> str:
    """`MAILER_INSTANCE` when it is set and not blank, else the hostname."""
    chosen = os.environ.get(INSTANCE_ENV, "").strip()
    return chosen or socket.gethostname()
