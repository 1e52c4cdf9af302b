"""Settings: `settings.toml` read into frozen dataclasses, one per section.

    sections  the dataclasses (each key, its type and default), `Settings`, `SECTIONS`
    loading   reading the file and the environment, type checks: `load`, `from_mapping`
    checks    ranges, formats and relations between keys

Everything a caller needs is re-exported here (`from mailer.settings import Settings, load`).
"""

from mailer.settings.loading import default_path, from_mapping, load
from mailer.settings.sections import (
    SECTIONS,
    BouncesSettings,
    CampaignsSettings,
    ConsoleSettings,
    DatabaseSettings,
    DkimAlgorithm,
    DkimSettings,
    DoctorSettings,
    HttpSettings,
    ImapSettings,
    LogSettings,
    Security,
    Settings,
    SmtpSettings,
    TemplatesSettings,
    UnsubscribeSettings,
    address_of,
    loopback_http_url,
)

__all__ = [
    "SECTIONS",
    "BouncesSettings",
    "CampaignsSettings",
    "ConsoleSettings",
    "DatabaseSettings",
    "DkimAlgorithm",
    "DkimSettings",
    "DoctorSettings",
    "HttpSettings",
    "ImapSettings",
    "LogSettings",
    "Security",
    "Settings",
    "SmtpSettings",
    "TemplatesSettings",
    "UnsubscribeSettings",
    "address_of",
    "default_path",
    "from_mapping",
    "load",
    "loopback_http_url",
]
