"""Deadlines in working days, working hours or calendar time, and the service-level table.

Vietnamese administrative procedures state their deadlines in working days ("05 ngày làm
việc kể từ ngày nhận đủ hồ sơ"): the day of receipt is not counted, weekends, public
holidays (Tết, 30/4-1/5, 2/9 ...) and a district's own days off are skipped, and a
compensatory working day (a Saturday worked in exchange for a bridge day) counts.
:func:`add_deadline` does that arithmetic on a :class:`~vigil.flows.queues.calendar.WorkCalendar`;
:class:`DeadlineTable` applies the configured service-level table
(``service_queues.service_levels``) to records that carry no deadline of their own.

Units:

- ``working_days``: the end of office hours of the N-th working day after the day of
  receipt (a fraction rounds up to a whole day);
- ``working_hours``: N hours of office time on working days, from the receipt (a request
  received outside office hours starts at the next opening);
- ``hours``: N hours of elapsed time;
- ``days``: N calendar days later, same local time of day.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

from vigil.flows.queues.calendar import WORKDAY, WorkCalendar

if TYPE_CHECKING:
    from vigil.flows.queues.config import DeadlineSpec, ServiceLevels

UNITS = ("working_days", "working_hours", "hours", "days")
_MAX_DAYS = 3660  # a deadline search never walks more than ten years of calendar


def _at(cal: WorkCalendar, d: date, hour: int) -> float:
    if hour >= 24:
        return datetime.combine(d + timedelta(days=1), time(0), tzinfo=cal.zone).timestamp()
    return datetime.combine(d, time(hour), tzinfo=cal.zone).timestamp()


def _working(cal: WorkCalendar, d: date) -> bool:
    return cal.day_type_of(d) == WORKDAY


def add_deadline(
    cal: WorkCalendar,
    start: float,
    amount: float,
    unit: str,
    working: Callable[[WorkCalendar, date], bool] = _working,
) -> float:
    """The deadline of a request received at ``start`` (epoch s) given ``amount`` ``unit``.

    Examples
    --------
    Five working days from Friday 2026-02-13 in Hanoi skip the weekend and Tết (16-20 Feb):

    >>> from vigil.flows.queues.calendar import country_holidays
    >>> cal = WorkCalendar("Asia/Ho_Chi_Minh", holidays=country_holidays("VN"))
    >>> start = datetime(2026, 2, 13, 9, 30, tzinfo=cal.zone).timestamp()
    >>> def local(ts): return datetime.fromtimestamp(ts, cal.zone).strftime("%a %d %b %H:%M")
    >>> local(add_deadline(cal, start, 5, "working_days"))
    'Fri 27 Feb 17:00'
    >>> local(add_deadline(cal, start, 16, "working_hours"))  # 7.5 h on Friday, 8.5 on Monday
    'Mon 23 Feb 16:30'
    >>> add_deadline(cal, start, 2, "hours") - start, add_deadline(cal, start, 1, "days") - start
    (7200.0, 86400.0)
    """
    if unit == "hours":
        return start + amount * 3600.0
    if unit == "days":
        local = datetime.fromtimestamp(start, tz=cal.zone)
        whole = int(amount)
        later = (local.replace(tzinfo=None) + timedelta(days=whole)).replace(tzinfo=cal.zone)
        return later.timestamp() + (amount - whole) * 86400.0
    a, b = cal.office_hours
    d = cal.local(start)[0]
    if unit == "working_days":
        left = max(1, math.ceil(amount))
        for _ in range(_MAX_DAYS):
            d += timedelta(days=1)
            if working(cal, d):
                left -= 1
                if left == 0:
                    return _at(cal, d, b)
        msg = f"no {amount:g} working days within ten years of the receipt"
        raise ValueError(msg)
    if unit == "working_hours":
        left_s = amount * 3600.0
        for i in range(_MAX_DAYS):
            if working(cal, d):
                open_ts, close_ts = _at(cal, d, a), _at(cal, d, b)
                begin = max(open_ts, start) if i == 0 else open_ts
                if begin < close_ts:
                    avail = close_ts - begin
                    if left_s <= avail:
                        return begin + left_s
                    left_s -= avail
            d += timedelta(days=1)
        msg = f"no {amount:g} working hours within ten years of the receipt"
        raise ValueError(msg)
    msg = f"unknown deadline unit {unit!r} (one of {', '.join(UNITS)})"
    raise ValueError(msg)


class DeadlineTable:
    """The configured service-level table: a deadline for a record that has none.

    A service's own line wins, then its agency's default, then the table's ``default``.

    Examples
    --------
    >>> from vigil.flows.queues.config import ServiceLevels
    >>> t = DeadlineTable(ServiceLevels(default="10 working_days",
    ...                                 agencies={"PWD": "2 days"},
    ...                                 services={"Pothole": "48 hours"}), WorkCalendar())
    >>> t.due("PWD", "Pothole", 0.0), t.due("PWD", "Lights", 0.0) / 86400
    (172800.0, 2.0)
    >>> t.rule("ISD", "Permit").unit
    'working_days'
    """

    def __init__(self, levels: ServiceLevels, cal: WorkCalendar) -> None:
        self.levels = levels
        self.cal = cal
        self._days: dict[tuple[date, float], float] = {}  # working days depend on the date only
        self._work: dict[date, bool] = {}

    def _working(self, cal: WorkCalendar, d: date) -> bool:
        hit = self._work.get(d)
        if hit is None:
            hit = self._work[d] = _working(cal, d)
        return hit

    def rule(self, agency: str, service: str | None) -> DeadlineSpec | None:
        lv = self.levels
        if service:
            spec = lv.services.get(f"{agency}/{service}") or lv.services.get(service)
            if spec is not None:
                return spec
        return lv.agencies.get(agency) or lv.default

    def due(self, agency: str, service: str | None, received: float) -> float | None:
        spec = self.rule(agency, service)
        if spec is None:
            return None
        if spec.unit != "working_days":
            return add_deadline(self.cal, received, spec.amount, spec.unit, self._working)
        key = (self.cal.local(received)[0], spec.amount)
        hit = self._days.get(key)
        if hit is None:
            if len(self._days) > 100_000:
                self._days.clear()
            hit = self._days[key] = add_deadline(
                self.cal, received, spec.amount, spec.unit, self._working
            )
        return hit

    def __bool__(self) -> bool:
        lv = self.levels
        return bool(lv.default or lv.agencies or lv.services)
