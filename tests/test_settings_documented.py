"""`settings.toml`, the documented example `mailer init` copies, names every key mailer reads.

The file's convention (its header says so): `key = value` sets a key; `# key = value` documents
a key left at its default, or an example of an optional one; a section header may be commented
the same way (`# [bounces.imap]`). Any other comment is prose and never reads `# word = `.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib

from mailer.settings import SECTIONS, ImapSettings
from tests.helpers import ROOT

_HEADER = re.compile(r"^(?:# )?\[([a-z_.]+)\]")
_KEY = re.compile(r"^(?:# )?([a-z_]+) = (.*)$")
# A dataclass field that is a nested table is documented by that table's header.
_NESTED = {("bounces", "imap"): "bounces.imap"}
_NESTED_FIELDS = {"bounces.imap": ImapSettings}


def documented(text: str) -> dict[str, dict[str, str]]:
    """Each section's keys, set or commented, with the value written for each."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            current = sections.setdefault(header.group(1), {})
        elif key := _KEY.match(line):
            assert current is not None, f"settings.toml line {number}: a key before any section"
            current[key.group(1)] = key.group(2)
    return sections


def test_the_convention_reads_set_and_commented_keys_and_headers() -> None:
    text = ('[imap]\nhost = "x"   # required\n# port = 993\n# a note: no = here\n'
            "#port = 1\n# [bounces.imap]\n# folder = \"INBOX\"\n")
    assert documented(text) == {"imap": {"host": '"x"   # required', "port": "993"},
                                "bounces.imap": {"folder": '"INBOX"'}}


def test_every_key_of_every_settings_section_is_in_the_example_file() -> None:
    sections = documented((ROOT / "settings.toml").read_text(encoding="utf-8"))
    missing = [
        f"[{name}] {spec.name}"
        for name, cls in SECTIONS.items()
        for spec in dataclasses.fields(cls)
        if spec.name not in sections.get(name, {})
        and _NESTED.get((name, spec.name)) not in sections
    ]
    assert missing == []


def test_the_example_file_documents_no_key_that_mailer_does_not_read() -> None:
    sections = documented((ROOT / "settings.toml").read_text(encoding="utf-8"))
    known = {name: {spec.name for spec in dataclasses.fields(cls)}
             for name, cls in {**SECTIONS, **_NESTED_FIELDS}.items()}
    unknown = [f"[{name}] {key}" for name, keys in sections.items() for key in keys
               if key not in known.get(name, set())]
    assert unknown == []


def test_every_documented_value_is_valid_toml() -> None:
    sections = documented((ROOT / "settings.toml").read_text(encoding="utf-8"))
    for name, keys in sections.items():
        for key, value in keys.items():
            parsed = tomllib.loads(f"{key} = {value}")  # an inline comment is fine in TOML
            assert set(parsed) == {key}, f"[{name}] {key}"

