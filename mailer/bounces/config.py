"""What the report pipeline needs to know from the settings, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.mail.verp import Verifier
from mailer.settings import BouncesSettings


@dataclass(frozen=True)
class ReportConfig:
    """Reading delivery reports and complaints : whose tags are ours, what they do,
    and where a report tied to one of our messages is moved."""

    verifier: Verifier
    bounces: BouncesSettings

    @property
    def folder(self) -> str:
        return self.bounces.folder
