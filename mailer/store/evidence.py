"""What proves a consent event, as the columns written with it (`EventEvidence`).

Each consent event has its source, time, reference and actor; these columns say what proves
it, by the way it came in:

    email         message_id, message_from, message_date and our server's dkim/spf/dmarc verdicts
    web           client_address and user_agent (cleared after `[retention] web_evidence_days`,
                  see `store.retention`), wording: a hash of the choices text the page showed
    console, CLI  the actor and note (the words staff wrote down); review_item when from review
    import        import_file, import_line and the actor

Written in the same INSERT as the event (`store.customers`); a row is never updated afterwards,
except that the personal columns may be blanked (the table's triggers allow exactly that):
the web ones after `[retention] web_evidence_days`, all of them when the person is erased.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any

# The columns a person can be told apart by on the web: cleared by retention and erasure.
WEB_COLUMNS = ("client_address", "user_agent")
# Every column of personal data (the request's From names its sender): cleared by erasure.
# These alone may be updated, and only to '' (migration 13's triggers).
PERSONAL_COLUMNS = (*WEB_COLUMNS, "message_from")


@dataclass(frozen=True)
class EventEvidence:
    message_id: str = ""
    message_from: str = ""
    message_date: str = ""
    dkim: str = ""
    spf: str = ""
    dmarc: str = ""
    client_address: str = ""
    user_agent: str = ""
    wording: str = ""
    note: str = ""
    review_item: int | None = None
    import_file: str = ""
    import_line: int | None = None

    def values(self) -> tuple[Any, ...]:
        """In the order of `COLUMNS`."""
        return astuple(self)

    def shown(self) -> list[tuple[str, str]]:
        """(label, value) for each column that holds something, for people to read."""
        return [(_LABELS[f.name], str(getattr(self, f.name))) for f in fields(self)
                if getattr(self, f.name) not in ("", None)]


NO_EVIDENCE = EventEvidence()

COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EventEvidence))

_LABELS = {
    "message_id": "Message-ID", "message_from": "From", "message_date": "Date",
    "dkim": "DKIM", "spf": "SPF", "dmarc": "DMARC", "client_address": "client address",
    "user_agent": "user agent", "wording": "wording", "note": "evidence",
    "review_item": "review item", "import_file": "import file", "import_line": "import line",
}


def from_row(row: Any) -> EventEvidence:
    """The evidence of a consent_events row (a mapping with every column of `COLUMNS`)."""
    return EventEvidence(**{c: row[c] for c in COLUMNS})
