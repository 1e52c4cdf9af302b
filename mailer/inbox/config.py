"""What the inbox pipeline needs to know from the settings, as plain values.

Shared by the processor (automatic passes) and review resolution (a person decides), so
neither reaches into the other; `worker.inbox_config` builds it from `Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailer.bounces.config import ReportConfig


@dataclass(frozen=True)
class InboxConfig:
    folder: str
    processed_folder: str
    review_folder: str
    subject: str
    categories: tuple[str, ...]
    own_addresses: frozenset[str]
    max_message_bytes: int
    fetch_batch: int
    confirmation_interval_h: float
    # None: reports are not read (no `[bounces] address`); they stay in the folder untouched.
    reports: ReportConfig | None = None
    # False for the `[bounces.imap]` mailbox: only reports are read there, never requests.
    requests: bool = True
    # Names this mailbox in the database when it is not the `[imap]` one (`[bounces.imap]`
    # may watch a folder of the same name on another account).
    account: str = ""
    # Only the Authentication-Results headers of this authserv-id are evidence (RFC 8601).
    authserv_id: str = ""

    @property
    def state_key(self) -> str:
        """The folder as the database knows it (mailbox state, decided moves)."""
        return f"{self.account}:{self.folder}" if self.account else self.folder
