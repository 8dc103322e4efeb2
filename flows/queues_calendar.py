"""Working calendar and calendar-aware baseline of the public-service queue flow.

Demand on a public service follows the office calendar: weekdays are busy, weekends quiet,
public holidays like a Sunday. :class:`WorkCalendar` tells the day type of an instant
(``workday``, ``saturday``, ``sunday_or_holiday``) and whether it falls in office hours;
:class:`CalendarBaseline` keeps an EWMA mean and variance per (day type, time of day) slot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from vigil.detectors.base import Explanation

WORKDAY, SATURDAY, HOLIDAY = 0, 1, 2
DAY_TYPES = ("workday", "saturday", "sunday_or_holiday")
BUILTIN_CALENDARS = ("us", "vn")


def read_holidays(spec: str) -> dict[date, str]:
    """Dates of a holidays file (``YYYY-MM-DD name`` lines) or a bundled one (``us``, ``vn``).

    >>> hol = read_holidays("us")
    >>> hol[date(2015, 1, 19)]
    'Birthday of Martin Luther King, Jr.'
    >>> len(read_holidays("vn")) > 20
    True
    """
    if spec in BUILTIN_CALENDARS:
        text = (
            resources.files("vigil.flows") / "demo_data" / "queues" / f"holidays_{spec}.txt"
        ).read_text(encoding="utf-8")
    else:
        text = Path(spec).read_text(encoding="utf-8")
    out: dict[date, str] = {}
    for line in text.splitlines():
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
        Public holidays (treated like a Sunday).
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
        holidays: Iterable[date] = (),
        weekend: tuple[int, ...] = (5, 6),
        office_hours: tuple[int, int] = (8, 17),
    ) -> None:
        self.tz = tz
        self.zone = ZoneInfo(tz)
        self.holidays = frozenset(holidays)
        self.weekend = weekend
        self.office_hours = office_hours
        self._cache: dict[int, tuple[date, int, int]] = {}

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

    def day_type_of(self, d: date) -> int:
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


@dataclass(frozen=True, slots=True)
class CalendarBaselineState:
    n: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    var: tuple[float, ...] = ()


class CalendarBaseline:
    """Signed distance from the usual level of a slot, in standard deviations.

    Counts are the intended input, so the standard deviation is floored at the Poisson
    noise ``sqrt(mean)``: a quiet slot whose few values happened to agree is not made
    over-confident. A slot scores once it has learned ``grace_period`` values; before
    that the explanation is "warming" (score 0, infinite band).

    Score range: ``(-inf, inf)``, positive above the expected level (unlike most
    detectors: the flow needs the direction to tell a surge from a drop).

    Parameters
    ----------
    slots
        Number of slots.
    alpha
        Weight of the newest value in a slot's EWMA, in (0, 1]; the first ``1 / alpha``
        values of a slot are weighted equally.
    grace_period
        Values a slot learns before it scores.
    band_z
        Half-width of the reported band, in standard deviations.
    min_std
        Floor on the standard deviation.

    Examples
    --------
    >>> b = CalendarBaseline(slots=2, grace_period=2)
    >>> for x in (100.0, 110.0, 90.0):
    ...     b.learn_one(0, x)
    >>> e = b.explain_one(0, 200.0)
    >>> round(e.expected), e.score > 4
    (100, True)
    >>> b.explain_one(1, 5.0).score  # slot 1 has learned nothing
    0.0
    """

    def __init__(
        self,
        slots: int,
        alpha: float = 0.2,
        grace_period: int = 2,
        band_z: float = 4.0,
        min_std: float = 1.0,
    ) -> None:
        self.slots = slots
        self.alpha = alpha
        self.grace_period = grace_period
        self.band_z = band_z
        self.min_std = min_std
        self._n = [0] * slots
        self._mean = [0.0] * slots
        self._var = [0.0] * slots

    def std(self, slot: int) -> float:
        return max(math.sqrt(self._var[slot]), math.sqrt(max(self._mean[slot], 0.0)), self.min_std)

    def explain_one(self, slot: int, x: float) -> Explanation:
        if self._n[slot] < self.grace_period:
            return Explanation.warming(x)
        mean, std = self._mean[slot], self.std(slot)
        w = self.band_z * std
        return Explanation((x - mean) / std, mean, mean - w, mean + w)

    def learn_one(self, slot: int, x: float, clip_z: float | None = None) -> None:
        """Learn ``x`` for ``slot``; a warm slot learns it clipped to ``clip_z`` std devs.

        Clipping keeps one storm from inflating the variance for weeks (a winsorized
        EWMA), so the next storm still stands out.
        """
        n = self._n[slot]
        if clip_z is not None and n >= self.grace_period:
            w = clip_z * self.std(slot)
            x = min(max(x, self._mean[slot] - w), self._mean[slot] + w)
        if n == 0:
            self._mean[slot], self._var[slot] = x, 0.0
        else:
            a = max(self.alpha, 1.0 / (n + 1))
            diff = x - self._mean[slot]
            incr = a * diff
            self._mean[slot] += incr
            self._var[slot] = (1 - a) * (self._var[slot] + diff * incr)
        self._n[slot] = n + 1

    def count(self, slot: int) -> int:
        return self._n[slot]

    def snapshot(self) -> CalendarBaselineState:
        return CalendarBaselineState(tuple(self._n), tuple(self._mean), tuple(self._var))

    def restore(self, state: CalendarBaselineState) -> None:
        if len(state.n) == self.slots:
            self._n, self._mean, self._var = list(state.n), list(state.mean), list(state.var)
