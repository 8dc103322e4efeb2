"""Shared pieces of the line parsers: a fast event constructor, calendar arithmetic, ISO 8601.

Everything here is on the per-line hot path, so it avoids ``datetime``: an epoch is a cached
midnight of the day plus ``h * 3600 + m * 60 + s``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, fields
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from vigil.flows.errors import ParseError

from vigil.records import SecurityEvent

# Dead-letter reasons: stable, low-cardinality strings (they become metric labels).
LINE_TOO_LONG = "line too long"
UNKNOWN_FORMAT = "unknown format"
BAD_SYSLOG_HEADER = "bad syslog header"
BAD_JSON = "bad json"
BAD_NUMBER = "bad number"
BAD_ZEEK_ROW = "bad zeek row"
BAD_TIMESTAMP = "bad timestamp"
NO_TIME_ZONE = "timestamp without time zone"
BAD_ACCESS_LINE = "bad access line"


def missing_field(name: str) -> str:
    """Reason for a required field that is absent or unset: ``"missing field: <name>"``."""
    return f"missing field: {name}"


def bad_field(name: str) -> str:
    """Reason for a field of the wrong JSON type: ``"bad field: <name>"``."""
    return f"bad field: {name}"


MONTHS: dict[str, int] = {
    name: i
    for i, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Bound for the per-parser caches: they hold only valid keys, but years are attacker-influenced
# (syslog rollover), so a cache is dropped when it grows past this.
CACHE_MAX = 20_000


def _build_event_maker() -> Callable[..., SecurityEvent]:
    """Return a constructor for :class:`SecurityEvent` that is about three times as fast.

    A frozen dataclass ``__init__`` sets each of the 21 fields through
    ``object.__setattr__``, about 1 µs per event: a third of the budget for an sshd line.
    The maker fills an instance of a plain slotted twin class (same slots in the same order,
    so the same memory layout), where each store is a fast specialised slot write, then
    switches the instance's ``__class__`` to ``SecurityEvent``, which CPython allows between
    layout-compatible classes. The result is an ordinary ``SecurityEvent``: equal, hashable,
    picklable and frozen like any other.

    The code is generated from ``dataclasses.fields`` (as ``dataclasses`` generates
    ``__init__``), so it follows the record when fields are added. If the record gains a
    ``__post_init__``, a default factory, or a layout the twin cannot share, the real
    constructor is returned instead; a self-check at import compares both.
    """
    flds = fields(SecurityEvent)
    names = tuple(f.name for f in flds)
    if (
        hasattr(SecurityEvent, "__post_init__")
        or getattr(SecurityEvent, "__slots__", None) != names
        or any(f.default_factory is not MISSING for f in flds)
    ):
        return SecurityEvent
    twin = type("_SecurityEventTwin", (), {"__slots__": names})
    params = ", ".join(
        n if f.default is MISSING else f"{n}={f.default!r}"
        for n, f in zip(names, flds, strict=True)
    )
    body = "".join(f"    o.{n} = {n}\n" for n in names)
    src = (
        f"def make_event({params}):\n    o = _new(_twin)\n{body}"
        "    o.__class__ = _cls\n    return o\n"
    )
    namespace: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": SecurityEvent}
    try:
        exec(src, namespace)  # same technique as dataclasses' generated __init__
        maker: Callable[..., SecurityEvent] = namespace["make_event"]
        probe: dict[str, Any] = {
            n: (i if f.default is MISSING else f.default)
            for i, (n, f) in enumerate(zip(names, flds, strict=True))
        }
        fast, slow = maker(**probe), SecurityEvent(**probe)
        if type(fast) is not SecurityEvent or fast != slow or repr(fast) != repr(slow):
            return SecurityEvent
    except Exception:  # e.g. TypeError "object layout differs": use the real constructor
        return SecurityEvent
    maker.__doc__ = "Build a SecurityEvent: same signature and result as its constructor."
    return maker


make_event: Callable[..., SecurityEvent] = _build_event_maker()


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, no range limit).

    Parameters
    ----------
    y, m, d
        Year, month (1-12) and day of month; not validated.

    Examples
    --------
    >>> days_from_civil(1970, 1, 1), days_from_civil(2000, 3, 1), days_from_civil(1969, 12, 31)
    (0, 11017, -1)

    References
    ----------
    H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", ``days_from_civil``.
    """
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def year_of_epoch(t: float) -> tuple[int, float, float]:
    """The UTC year containing epoch ``t``, with the epochs of its first and next first second.

    Examples
    --------
    >>> year_of_epoch(0.0)
    (1970, 0, 31536000)
    >>> year_of_epoch(1491000000.0)[0]
    2017
    """
    z = int(t // 86400) + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    y = yoe + era * 400 + (mp >= 10)
    return y, days_from_civil(y, 1, 1) * 86400, days_from_civil(y + 1, 1, 1) * 86400


def local_zone(name: str) -> ZoneInfo | None:
    """The :class:`~zoneinfo.ZoneInfo` of an IANA name, or ``None`` for ``"UTC"`` (no shift).

    Raises
    ------
    zoneinfo.ZoneInfoNotFoundError, ValueError
        For a name that is not a known zone.
    """
    return None if name == "UTC" else ZoneInfo(name)


def local_to_utc(zone: ZoneInfo | None, t: float) -> float:
    """Epoch seconds of the wall time ``t`` (seconds since 1970-01-01 00:00 *local*) in ``zone``.

    A wall time that happens twice (the hour after DST ends) is its first occurrence; one
    that never happens (the hour skipped when DST starts) gets the offset before the change.
    A year outside 1-9999 uses the offset of the nearest year datetime can hold.

    Examples
    --------
    >>> z = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7 since 1975
    >>> wall = 1490889259.0  # 2017-03-30 15:54:19 on the site's clock
    >>> (wall - local_to_utc(z, wall)) / 3600, local_to_utc(None, wall) == wall
    (7.0, True)
    """
    if zone is None:
        return t
    clamped = min(max(t, -62_135_596_800.0), 253_402_214_400.0)  # 0001-01-01 to 9999-12-31
    # The wall time's fields, read as UTC, then taken as the zone's: datetime finds the offset.
    off = datetime.fromtimestamp(clamped, UTC).replace(tzinfo=zone).utcoffset()
    return t - (off.total_seconds() if off is not None else 0.0)


def utc_to_local(zone: ZoneInfo | None, t: float) -> float:
    """The wall time in ``zone`` of epoch ``t``, as seconds since 1970-01-01 00:00 local."""
    if zone is None:
        return t
    clamped = min(max(t, -62_135_596_800.0), 253_402_214_400.0)
    off = datetime.fromtimestamp(clamped, UTC).astimezone(zone).utcoffset()
    return t + (off.total_seconds() if off is not None else 0.0)


def days_in_month(y: int, m: int) -> int:
    """Number of days in month ``m`` of year ``y`` (Gregorian)."""
    if m == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[m]


def check_port(v: object) -> int | None:
    """A port from a JSON value: ``None`` stays ``None``; anything but an int in 0-65535 fails.

    Examples
    --------
    >>> check_port(22), check_port(None)
    (22, None)
    """
    if v is None:
        return None
    if type(v) is not int or not 0 <= v <= 65535:
        raise ParseError(BAD_NUMBER, repr(v))
    return v


def check_count(v: object) -> int | None:
    """A non-negative integer count from a JSON value (bytes, packets); ``None`` stays ``None``."""
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise ParseError(BAD_NUMBER, repr(v))
    return v


def opt_str(d: dict[str, Any], key: str, path: str = "") -> str | None:
    """``d[key]`` if it is a string, ``None`` if absent or null; anything else fails.

    ``path`` prefixes the field name in the failure reason (``"flow."``).
    """
    v = d.get(key)
    if v is None or type(v) is str:
        return v
    raise ParseError(bad_field(path + key), repr(v)[:64])


_ISO = re.compile(
    r"\s*(\d{4}-\d\d-\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d{1,9})?"
    r"(?:(Z|z)|([+-]\d\d)(?::?(\d\d))?)?\s*",
    re.A,
)
_date_base: dict[str, float] = {}


def iso_to_epoch(s: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp that carries a UTC offset or ``Z``.

    Accepts ``2024-01-02T03:04:05.123456+0000`` (Suricata), ``+00:00``, ``Z`` and ``+01``.

    Raises
    ------
    ParseError
        ``"timestamp without time zone"`` for a valid local time, else ``"bad timestamp"``.

    Examples
    --------
    >>> iso_to_epoch("2024-01-02T03:04:05.5+0100")
    1704161045.5
    >>> iso_to_epoch("2003-10-11T22:14:15.003Z")
    1065910455.003
    """
    m = _ISO.fullmatch(s)
    if m is None:
        raise ParseError(BAD_TIMESTAMP, s[:64])
    date, hh, mm, ss, frac, zulu, off_h, off_m = m.groups()
    base = _date_base.get(date)
    if base is None:
        y, mo, d = int(date[:4]), int(date[5:7]), int(date[8:10])
        if not (1 <= mo <= 12 and 1 <= d <= days_in_month(y, mo)):
            raise ParseError(BAD_TIMESTAMP, s[:64])
        base = days_from_civil(y, mo, d) * 86400.0
        if len(_date_base) > CACHE_MAX:
            _date_base.clear()
        _date_base[date] = base
    h, mi, sec = int(hh), int(mm), int(ss)
    if h > 23 or mi > 59 or sec > 60:
        raise ParseError(BAD_TIMESTAMP, s[:64])
    t = base + h * 3600 + mi * 60 + sec
    if frac is not None:
        t += float(frac)
    if zulu is None:
        if off_h is None:
            raise ParseError(NO_TIME_ZONE, s[:64])
        t -= offset_seconds(off_h, off_m)
    return t


_offsets: dict[tuple[str, str | None], int] = {}


def offset_seconds(hours: str, minutes: str | None) -> int:
    """Seconds east of UTC of an offset given as ``"+05"``/``"-00"`` and ``"30"`` (or ``None``).

    Examples
    --------
    >>> offset_seconds("-05", "30"), offset_seconds("+01", None), offset_seconds("-00", "30")
    (-19800, 3600, -1800)
    """
    key = (hours, minutes)
    off = _offsets.get(key)
    if off is None:
        oh, om = int(hours[1:]), int(minutes) if minutes else 0
        if oh > 23 or om > 59:
            raise ParseError(BAD_TIMESTAMP, f"{hours}{minutes or ''}")
        off = (oh * 3600 + om * 60) * (-1 if hours[0] == "-" else 1)
        _offsets[key] = off  # at most 24 * 60 * 2 valid keys
    return off
