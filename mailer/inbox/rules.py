"""What the inbox pipeline needs to know from the settings, as plain values.

Shared by the processor (automatic passes) and review resolution (a person decides), so
neither reaches into the other; `worker.inbox_rules` builds it from `Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InboxRules:
    folder: str
    processed_folder: str
    review_folder: str
    subject: str
    categories: tuple[str, ...]
    own_addresses: frozenset[str]
    max_message_bytes: int
    fetch_batch: int
    confirmation_interval_h: float
