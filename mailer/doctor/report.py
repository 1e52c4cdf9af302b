"""The doctor's findings: one `Check` per thing looked at, the `Report` that holds them, its
exit code, and its two forms (a text table for a person, JSON for a script).

A check says what was found and, when it is not a pass, the exact fix: the record to publish
or the setting to change, on a line of its own so it can be copied whole. `info` is for what
is worth knowing but decides nothing (MTA-STS, BIMI, what the doctor cannot see).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

Result = Literal["pass", "info", "warn", "fail"]
Area = Literal["dns", "servers", "messages", "reputation"]

EXIT_PASS = 0
EXIT_WARN = 1
EXIT_FAIL = 2


@dataclass(frozen=True)
class Check:
    area: Area
    name: str
    result: Result
    found: str
    fix: str = ""


def passed(area: Area, name: str, found: str) -> Check:
    return Check(area, name, "pass", found)


def info(area: Area, name: str, found: str, fix: str = "") -> Check:
    return Check(area, name, "info", found, fix)


def warn(area: Area, name: str, found: str, fix: str) -> Check:
    return Check(area, name, "warn", found, fix)


def failed(area: Area, name: str, found: str, fix: str) -> Check:
    return Check(area, name, "fail", found, fix)


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @classmethod
    def of(cls, *groups: Iterable[Check]) -> Report:
        return cls(tuple(check for group in groups for check in group))

    @property
    def exit_code(self) -> int:
        """0 when everything passes, 1 with warnings, 2 with a failure."""
        results = {check.result for check in self.checks}
        if "fail" in results:
            return EXIT_FAIL
        return EXIT_WARN if "warn" in results else EXIT_PASS

    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.result == "fail")

    def named(self, name: str) -> Check:
        """The check called `name` (tests and the daemon look one up)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)


_TITLES: dict[Area, str] = {"dns": "DNS", "servers": "Servers", "messages": "Messages",
                            "reputation": "Reputation"}


def table(report: Report) -> str:
    """The report as a table, one row per check, grouped by area; a fix goes on its own
    line under its row (`see:` for an info), unwrapped, so a DNS record can be copied as it is."""
    width = max((len(c.name) for c in report.checks), default=5)
    lines: list[str] = []
    for area, title in _TITLES.items():
        rows = [c for c in report.checks if c.area == area]
        if not rows:
            continue
        lines.append(f"{title}")
        for check in rows:
            lines.append(f"  {check.result:<4}  {check.name:<{width}}  {check.found}")
            if check.fix:
                label = "see" if check.result == "info" else "fix"
                lines.append(f"  {'':<4}  {'':<{width}}  {label}: {check.fix}")
    counts = {r: sum(c.result == r for c in report.checks) for r in ("pass", "warn", "fail")}
    lines.append(f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")
    return "\n".join(lines)


def as_json(report: Report) -> str:
    return json.dumps({"exit_code": report.exit_code,
                       "checks": [asdict(c) for c in report.checks]},
                      indent=2, ensure_ascii=False)
