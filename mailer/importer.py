"""Reading a customers CSV: pure validation of each row, streaming, one problem per bad line.

The file has a header row naming `name` and `email` and optionally `company`, `phone`,
`announcements`, `offers`. Preference values are true/false/yes/no/1/0 (any case).

Consent is never assumed: a file without a column for each category is refused
(`ConsentNotNamed`) unless the import names the default (`consent_default`, from
`customers import --consent opted-in|opted-out` or the console's upload form), which then
fills the missing column and every empty cell. Without a default an empty cell leaves a known
customer's choice unchanged and a new customer opted out (no answer is no consent). Each row
says which categories took the default (`defaulted`), so the import's summary can say why.
Rows stream: a million-row file never sits in memory.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from mailer.categories import CATEGORIES
from mailer.errors import ConsentNotNamed, CsvError
from mailer.names import normalise_company, normalise_name

REQUIRED_COLUMNS = ("name", "email")
OPTIONAL_COLUMNS = ("company", "phone", "announcements", "offers")
_TRUE = frozenset({"true", "yes", "1", "y"})
_FALSE = frozenset({"false", "no", "0", "n"})
# A practical addr-spec check: one @, no spaces or controls, a dotted domain.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s<>(),;:\"\[\]\\]+@{_LABEL}(?:\.{_LABEL})+$")


class HeaderError(CsvError):
    """The CSV header cannot be used; the message is one line."""


@dataclass(frozen=True)
class CustomerRow:
    line: int
    email: str
    name: str
    company: str
    phone: str
    name_key: str
    company_key: str
    announcements: bool | None
    offers: bool | None
    defaulted: tuple[str, ...] = ()  # categories whose value is the import's named default


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def is_valid_email(value: str) -> bool:
    return len(value) <= 254 and _EMAIL.match(value) is not None


def parse_flag(value: str) -> bool | None:
    """true/false/yes/no/1/0 -> bool; empty -> None; anything else -> ValueError."""
    text = value.strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def read_rows(stream: IO[str], *,
              consent_default: bool | None = None) -> Iterator[CustomerRow | BadRow]:
    """Yield a CustomerRow or a BadRow for each data line; raise HeaderError for a bad header,
    ConsentNotNamed for a header missing a consent column when `consent_default` is None."""
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise HeaderError("the file is empty (expected a header row with name,email)") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise HeaderError(f"line 1: unreadable header: {exc}") from exc
    columns = [h.strip().lower() for h in header]
    if any(";" in column for column in columns):
        # No column name holds a ";": this is the semicolon-separated CSV that spreadsheets
        # write where the decimal separator is a comma; say so rather than "no 'email' column".
        raise HeaderError("line 1: the header looks `;`-separated; mailer reads comma-separated "
                          "CSV (name,email,...)")
    for required in REQUIRED_COLUMNS:
        if required not in columns:
            raise HeaderError(f"line 1: header has no '{required}' column")
    for column in columns:
        if column not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise HeaderError(
                f"line 1: unknown column '{column}' (expected name, email, company, phone, "
                "announcements, offers)"
            )
    if len(set(columns)) != len(columns):
        raise HeaderError("line 1: a column is named twice")
    missing = [c for c in CATEGORIES if c not in columns]
    if missing and consent_default is None:
        raise ConsentNotNamed(
            f"line 1: no {' or '.join(repr(c) for c in missing)} column, so the file does "
            "not say what these customers agreed to")
    index = {name: i for i, name in enumerate(columns)}
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield BadRow(line, f"malformed CSV: {exc}")
            continue
        except UnicodeDecodeError:
            yield BadRow(reader.line_num + 1, "not valid UTF-8; stopped reading here")
            return
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        yield _row(line, cells, index, len(columns), consent_default)


def _row(line: int, cells: list[str], index: dict[str, int], width: int,
         consent_default: bool | None) -> CustomerRow | BadRow:
    if len(cells) != width:
        return BadRow(line, f"expected {width} columns, found {len(cells)}")

    def cell(name: str) -> str:
        i = index.get(name)
        return cells[i].strip() if i is not None else ""

    email = cell("email")
    if not email:
        return BadRow(line, "missing email")
    if not is_valid_email(email):
        return BadRow(line, f"malformed email '{email}'")
    name = cell("name")
    if any(ord(c) < 32 for c in name + cell("company") + cell("phone")):
        return BadRow(line, "control character in a field")
    flags: dict[str, bool | None] = {}
    defaulted: list[str] = []
    for category in ("announcements", "offers"):
        try:
            flags[category] = parse_flag(cell(category))
        except ValueError:
            return BadRow(
                line,
                f"unknown {category} value '{cell(category)}' (expected true/false/yes/no/1/0)",
            )
        if flags[category] is None and consent_default is not None:
            flags[category] = consent_default
            defaulted.append(category)
    company = cell("company")
    return CustomerRow(
        line=line,
        email=email,
        name=name,
        company=company,
        phone=cell("phone"),
        name_key=normalise_name(name),
        company_key=normalise_company(company),
        announcements=flags["announcements"],
        offers=flags["offers"],
        defaulted=tuple(defaulted),
    )
