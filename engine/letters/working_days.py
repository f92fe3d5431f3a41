"""Working days in each UK nation: weekends and that nation's bank holidays do not count.

A target's reply window is counted in them, both when `chase` marks a letter
overdue and when an escalation wave asks which letters went unanswered.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

import holidays

# holidays' codes for the UK's nations, by the country postcodes.io names.
SUBDIVISIONS = {"England": "ENG", "Wales": "WLS", "Scotland": "SCT", "Northern Ireland": "NIR"}


@lru_cache(maxsize=64)
def _bank_holidays(subdivision: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("GB", subdiv=subdivision, years=year).keys())


def working_days_after(start: date, days: int, country: str | None) -> date:
    """The date `days` working days after `start`, skipping weekends and the nation's bank holidays."""
    subdivision = SUBDIVISIONS.get(country or "", "ENG")
    current = start
    counted = 0
    while counted < days:
        current += timedelta(days=1)
        if current.weekday() < 5 and current not in _bank_holidays(subdivision, current.year):
            counted += 1
    return current


def working_days_between(start: date, end: date, country: str | None = None) -> int:
    """The working days after `start` up to and including `end` (0 when `end` is not later):
    how long a target took to answer, in the same days the reply window counts."""
    if end <= start:
        return 0
    subdivision = SUBDIVISIONS.get(country or "", "ENG")
    days = (end - start).days
    weeks, rest = divmod(days, 7)
    count = weeks * 5 + sum(
        1 for n in range(1, rest + 1) if (start + timedelta(days=weeks * 7 + n)).weekday() < 5
    )
    for year in range(start.year, end.year + 1):
        count -= sum(
            1 for day in _bank_holidays(subdivision, year) if start < day <= end and day.weekday() < 5
        )
    return count


def working_days_before(end: date, days: int, country: str | None) -> date:
    """The date `days` working days before `end`, skipping weekends and the nation's bank holidays."""
    subdivision = SUBDIVISIONS.get(country or "", "ENG")
    current = end
    counted = 0
    while counted < days:
        current -= timedelta(days=1)
        if current.weekday() < 5 and current not in _bank_holidays(subdivision, current.year):
            counted += 1
    return current


def latest_start_due_by(today: date, days: int, country: str | None) -> date:
    """The last day a window of `days` working days could start and have ended by `today`.

    A letter sent on or before it is past its window; one sent later is not.
    """
    start = today - timedelta(days=days)
    while working_days_after(start, days, country) > today:
        start -= timedelta(days=1)
    # Later starts may still be due (a window starting on a Saturday ends with Friday's).
    while working_days_after(start + timedelta(days=1), days, country) <= today:
        start += timedelta(days=1)
    return start
