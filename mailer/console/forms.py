"""Reading console forms: plain functions on plain values, tested on data alone.

Schedule times are typed in a person's local time (a zone chosen on the form, Europe/London
by default) and stored in UTC. A wall-clock time that does not exist in that zone (the hour
the clocks go forward) is refused with a line that says so; one that occurs twice (the hour
they go back) is taken as the first of the two.

`datetime` stops at the end of year 9999: a time near it cannot always be moved to another
zone (OverflowError). Typed in, it is refused with a line; stored (the CLI takes any ISO time),
it is shown in UTC rather than breaking the page that lists it.
"""

from __future__ import annotations

import zoneinfo
from datetime import MAXYEAR, UTC, datetime

# Zones offered first on the form; every IANA zone is accepted.
COMMON_ZONES: tuple[str, ...] = (
    "Europe/London", "Europe/Dublin", "Europe/Paris", "Europe/Berlin", "UTC",
    "America/New_York", "Asia/Kolkata",
)


def zone_names() -> list[str]:
    rest = sorted(zoneinfo.available_timezones() - set(COMMON_ZONES))
    return [*COMMON_ZONES, *rest]


def local_to_utc(text: str, zone_name: str, *, now: datetime) -> tuple[datetime | None, str]:
    """The UTC time for a local `YYYY-MM-DDTHH:MM` in `zone_name`, or None and one line
    saying what is wrong (for the error next to the field)."""
    text = text.strip().replace(" ", "T")
    if not text:
        return None, "Enter the date and time to send the campaign"
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None, "Choose a time zone from the list"
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        return None, "Enter the date and time like 2026-12-24T09:30"
    if naive.tzinfo is not None:
        return None, "Enter the time without a zone, and choose the zone from the list"
    local = naive.replace(tzinfo=zone, fold=0)
    try:
        as_utc = local.astimezone(UTC)
        round_trip = as_utc.astimezone(zone).replace(tzinfo=None)
    except OverflowError:
        return None, f"Enter a time before the year {MAXYEAR} ends in {zone_name}"
    if round_trip != naive:
        return None, (f"{naive:%H:%M} on {naive:%d %B %Y} does not exist in {zone_name} "
                      "(the clocks go forward); choose another time")
    if as_utc <= now:
        return None, "The send time must be in the future"
    return as_utc, ""


def utc_to_local(value: str | None, zone_name: str) -> str:
    """A stored UTC time shown in the zone, e.g. `24 Dec 2026 09:30 GMT`."""
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    local = _in_zone(when, zone_name)
    return f"{local:%d %b %Y %H:%M} {local.tzname()}"


def utc_to_input(value: str | None, zone_name: str) -> str:
    """A stored UTC time as a `datetime-local` field's value in the zone (`2026-12-24T09:30`);
    empty when there is none."""
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return ""
    return f"{_in_zone(when, zone_name):%Y-%m-%dT%H:%M}"


def _in_zone(when: datetime, zone_name: str) -> datetime:
    """`when` (naive: UTC) in the zone; in UTC when the zone's time would be past year 9999
    or before year 1, or the zone is unknown."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.astimezone(zoneinfo.ZoneInfo(zone_name))
    except (OverflowError, zoneinfo.ZoneInfoNotFoundError, ValueError):
        return when


def page_number(text: str | None, *, largest: int) -> int | None:
    """The id a page starts after, from a query string value: 0 when absent, None when it is
    not a whole number from 0 to `largest` (the store's largest integer)."""
    text = (text or "0").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(largest)):
        return None
    value = int(text)
    return value if value <= largest else None
