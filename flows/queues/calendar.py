"""Working calendar of the public-service queue flow.

Demand on a public service follows the office calendar: weekdays are busy, weekends quiet,
public holidays like a Sunday. :class:`WorkCalendar` tells the day type of an instant
(``workday``, ``saturday``, ``sunday_or_holiday``) and whether it falls in office hours;
the detector :class:`vigil.detectors.calendar.CalendarBaseline` keeps an EWMA mean and
variance per (day type, time of day) slot.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

WORKDAY, SATURDAY, HOLIDAY = 0, 1, 2
DAY_TYPES = ("workday", "saturday", "sunday_or_holiday")
#: Names an older configuration used for the bundled tables, now countries of `holidays`.
LEGACY_CALENDARS = {"us": "US", "vn": "VN"}


def country_holidays(country: str, subdivision: str | None = None) -> Container[date]:
    """Public holidays of ``country`` (ISO 3166 code; ``subdivision`` a state or province)
    from the ``holidays`` package: any year, computed when first asked (lunar and
    observed days included).

    >>> vn = country_holidays("VN")
    >>> date(2026, 2, 17) in vn, date(2031, 9, 2) in vn   # Lunar New Year, National Day
    (True, True)

    Raises
    ------
    ValueError
        For a country or subdivision the package does not know.
    """
    import holidays

    try:
        return holidays.country_holidays(country.upper(), subdiv=subdivision)
    except NotImplementedError as ex:
        msg = f"no public holidays for country {country!r}"
        msg += f" subdivision {subdivision!r}" if subdivision else ""
        msg += " (ISO 3166 codes such as VN, US)"
        raise ValueError(msg) from ex


def read_holidays(path: str) -> dict[date, str]:
    """Dates of a holidays file: ``YYYY-MM-DD name`` lines, ``#`` comments."""
    out: dict[date, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        day, _, name = line.partition(" ")
        out[date.fromisoformat(day)] = name.strip()
    return out


class WorkCalendar:
    """Day types and office hours in one time zone.

    Parameters
    ----------
    tz
        IANA time zone of the offices.
    holidays
        Public holidays (treated like a Sunday): any container of dates, such as
        :func:`country_holidays` (which covers every year).
    working_days
        Dates worked although weekend or holiday (compensatory working days).
    weekend
        Weekday numbers of the weekend, Monday = 0; the first is "saturday"-like, any
        other like a Sunday.
    office_hours
        ``(start, end)`` local hours of a working day.

    Examples
    --------
    >>> cal = WorkCalendar("America/New_York", holidays=[date(2015, 1, 19)])
    >>> ts = 1421679600.0  # 2015-01-19 10:00 local, MLK Day (a Monday)
    >>> DAY_TYPES[cal.day_type(ts)], cal.in_office_hours(ts)
    ('sunday_or_holiday', False)
    >>> DAY_TYPES[cal.day_type(ts + 86400)], cal.in_office_hours(ts + 86400)
    ('workday', True)
    """

    def __init__(
        self,
        tz: str = "UTC",
        holidays: Container[date] = frozenset(),
        weekend: tuple[int, ...] = (5, 6),
        office_hours: tuple[int, int] = (8, 17),
        working_days: Iterable[date] = (),
    ) -> None:
        self.tz = tz
        self.zone = ZoneInfo(tz)
        self.holidays = holidays
        self.working_days = frozenset(working_days)
        self.weekend = weekend
        self.office_hours = office_hours
        self._cache: dict[int, tuple[date, int, int]] = {}
        self._types: dict[date, int] = {}
        self._windows: dict[float, tuple[date, str, int, int, bool]] = {}
        self._clocks: dict[float, str] = {}

    def local(self, ts: float) -> tuple[date, int, int]:
        """``(local date, hour, seconds since local midnight)``; cached per hour."""
        h = int(ts // 3600)
        hit = self._cache.get(h)
        if hit is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            dt = datetime.fromtimestamp(h * 3600, tz=self.zone)
            hit = self._cache[h] = (dt.date(), dt.hour, dt.hour * 3600 + dt.minute * 60)
        d, hour, sec = hit
        return d, hour, sec + int(ts - h * 3600)

    def window(self, start: float) -> tuple[date, str, int, int, bool]:
        """``(local date, its ISO form, day type, seconds since local midnight, in office
        hours)`` of the instant ``start``; cached, as every shard asks for each window."""
        hit = self._windows.get(start)
        if hit is None:
            if len(self._windows) > 100_000:
                self._windows.clear()
            d, _hour, sec = self.local(start)
            hit = (d, d.isoformat(), self.day_type_of(d), sec, self.in_office_hours(start))
            self._windows[start] = hit
        return hit

    def clock(self, ts: float) -> str:
        """Local wall-clock time of ``ts``, e.g. ``"10:00 EST"``; cached (every agency of
        every shard describes its detections at the same window ends)."""
        hit = self._clocks.get(ts)
        if hit is None:
            if len(self._clocks) > 100_000:
                self._clocks.clear()
            hit = datetime.fromtimestamp(ts, tz=self.zone).strftime("%H:%M %Z")
            self._clocks[ts] = hit
        return hit

    def day_type_of(self, d: date) -> int:
        t = self._types.get(d)
        if t is None:
            if len(self._types) > 100_000:
                self._types.clear()
            t = self._types[d] = self._day_type_of(d)
        return t

    def _day_type_of(self, d: date) -> int:
        if d in self.working_days:
            return WORKDAY
        if d in self.holidays:
            return HOLIDAY
        wd = d.weekday()
        if wd in self.weekend:
            return SATURDAY if wd == self.weekend[0] else HOLIDAY
        return WORKDAY

    def day_type(self, ts: float) -> int:
        return self.day_type_of(self.local(ts)[0])

    def in_office_hours(self, ts: float) -> bool:
        d, hour, _ = self.local(ts)
        a, b = self.office_hours
        return self.day_type_of(d) == WORKDAY and a <= hour < b
