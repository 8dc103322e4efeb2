"""Plain data of the alerting pipeline: matchers, alerts, silences, windows, notifications.

Everything here is pure Python with no I/O, so the engine can be tested with a fake clock
and stored as JSON. Times are float epoch seconds, all of them *event time* of the alert's
domain (``Alert.clock``: the feed and log source that raised it): ``active_at`` (the
episode's start, ``startsAt``), ``last_seen``, ``valid_until`` (when the episode ends
without new evidence), ``fired_at``, ``ends_at``, and the ``*_clock`` fields, which say at
which point of that domain's event time a transition was made. Only silences (set by an
operator "from now for two hours") are read on the wall clock; see
:mod:`vigil.sinks.alerting.engine`.

Examples
--------
>>> m = Matcher.parse('severity=~"high|critical"')
>>> m.matches({"severity": "high"}), m.matches({"severity": "warning"})
(True, False)
>>> Matcher.parse("team!=net").matches({})   # a missing label is the empty string
True
>>> parse_duration("1h30m"), parse_duration("90"), parse_duration(2.5)
(5400.0, 90.0, 2.5)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

AlertState = Literal["pending", "firing", "resolved"]
STATES: tuple[str, ...] = ("pending", "firing", "resolved")

#: Reasons a notification is sent (a bounded set: safe as a metric label).
REASONS: tuple[str, ...] = (
    "first_notification",
    "new_alerts",
    "some_resolved",
    "all_resolved",
    "repeat",
)

_DURATION = re.compile(
    r"^(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+)ms)?$"
)
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: str | float | int) -> float:
    """Seconds from a number or a Prometheus-style duration (``"30s"``, ``"5m"``, ``"1h30m"``).

    Raises
    ------
    ValueError
        For anything else, or a negative or non-finite number.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        f = float(value)
    else:
        text = str(value).strip()
        try:
            f = float(text)
        except ValueError:
            m = _DURATION.match(text)
            if not text or m is None or not any(m.groupdict().values()):
                msg = f"not a duration: {value!r} (use e.g. 30s, 5m, 4h, 1d)"
                raise ValueError(msg) from None
            f = sum(float(v) * _UNITS[k] for k, v in m.groupdict().items() if v)
    if not math.isfinite(f) or f < 0:
        msg = f"duration must be finite and >= 0, got {value!r}"
        raise ValueError(msg)
    return f


# ---------------------------------------------------------------------------- matchers
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher, as in Alertmanager: ``=``, ``!=``, ``=~``, ``!~``.

    Regular expressions are anchored at both ends (``=~"high"`` does not match
    ``"highest"``). A label the alert does not have matches as the empty string.
    """

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as ex:
                msg = f"bad regular expression in matcher {self.name}{self.op}{self.value!r}: {ex}"
                raise ValueError(msg) from ex

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value``, ``name!="value"``, ``name=~"re"`` or ``name!~re``."""
        m = _MATCHER.match(text)
        if m is None:
            msg = f"not a matcher: {text!r} (expected name=value, name!=value, name=~re, name!~re)"
            raise ValueError(msg)
        name, op, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        return cls(name, op, value)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher."""
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = _regex(self.value).fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(pattern)
    return rx


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """All matchers match (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


def parse_matchers(items: Iterable[str | Matcher]) -> tuple[Matcher, ...]:
    """Matchers from strings (or matchers, passed through)."""
    return tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in items)


# ---------------------------------------------------------------------------- alerts
@dataclass(slots=True)
class Alert:
    """One alert (an identity seen by the engine) and where it is in its lifecycle.

    ``labels`` are fixed for the alert's lifetime (identity plus routing labels taken
    from its first observation); ``annotations`` follow the newest observation.
    """

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    active_at: float
    last_seen: float
    active_clock: float
    seen_clock: float
    fired_at: float | None = None
    fired_clock: float | None = None
    ends_at: float | None = None
    resolved_clock: float | None = None
    observations: int = 1
    detected_wall: float = 0.0
    valid_until: float = 0.0
    clock: str = ""

    def to_dict(self) -> dict[str, Any]:
        # Shallow (labels and annotations copied): asdict's deep copy was most of a commit.
        d = {f: getattr(self, f) for f in _ALERT_FIELDS}
        d["labels"] = dict(self.labels)
        d["annotations"] = dict(self.annotations)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        a = cls(**dict(d))
        if not a.valid_until:  # stored before episodes had an end of their own
            a.valid_until = a.last_seen
        return a


_ALERT_FIELDS = tuple(f.name for f in fields(Alert))


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changed state (the audit log records every one)."""

    fingerprint: str
    old: str
    new: str  # pending, firing, resolved, or "inactive" (a pending alert that went away)
    clock: float
    labels: dict[str, str]
    annotations: dict[str, str]
    alert: dict[str, Any]


# ---------------------------------------------------------------------------- silences
@dataclass(frozen=True, slots=True)
class Silence:
    """Mute alerts matching every matcher between ``starts_at`` and ``ends_at``."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""
    created_at: float = 0.0

    def state(self, now: float) -> str:
        """``"pending"``, ``"active"`` or ``"expired"`` at ``now``."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.starts_at <= now < self.ends_at and matches_all(self.matchers, labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(d["id"]),
            matchers=parse_matchers(d.get("matchers", ())),
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            created_by=str(d.get("created_by", "")),
            comment=str(d.get("comment", "")),
            created_at=float(d.get("created_at", 0.0)),
        )


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A recurring mute: on ``weekdays`` from ``start`` to ``end`` (local time in ``timezone``).

    ``end`` before ``start`` means the window runs past midnight (and belongs to the day it
    starts on).

    Examples
    --------
    >>> from datetime import datetime
    >>> w = MaintenanceWindow("nightly", (), ("sat",), "22:00", "02:00", "Asia/Ho_Chi_Minh")
    >>> sat_23h = datetime(2024, 6, 1, 23, 0, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh")).timestamp()
    >>> sun_01h = sat_23h + 2 * 3600
    >>> sun_03h = sat_23h + 4 * 3600
    >>> w.active(sat_23h), w.active(sun_01h), w.active(sun_03h)
    (True, True, False)
    """

    name: str
    matchers: tuple[Matcher, ...]
    weekdays: tuple[str, ...]
    start: str
    end: str
    timezone: str = "UTC"

    def active(self, now: float) -> bool:
        tz = ZoneInfo(self.timezone)
        local = datetime.fromtimestamp(now, tz)
        start, end = _hhmm(self.start), _hhmm(self.end)
        days = set(self.weekdays) if self.weekdays else set(WEEKDAYS)
        t = local.time()
        if start <= end:
            return WEEKDAYS[local.weekday()] in days and start <= t < end
        # Overnight: today after start, or yesterday's window still running.
        if WEEKDAYS[local.weekday()] in days and t >= start:
            return True
        yesterday = (local - timedelta(days=1)).weekday()
        return WEEKDAYS[yesterday] in days and t < end

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return matches_all(self.matchers, labels) and self.active(now)


def _hhmm(text: str) -> time:
    if text in ("24:00", "24:00:00"):
        return time(23, 59, 59, 999999)
    return time.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """While a *source* alert fires, mute *target* alerts that share the ``equal`` labels."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- notifications
@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one receiver about one group, decided by the engine.

    ``id`` is the idempotency key: a hash of receiver, group key and the group's
    notification sequence number, so deciding the same notification again (after a crash
    between the outbox write and the state commit) yields the same key.
    """

    id: str
    receiver: str
    group_key: str
    seq: int
    reason: str
    status: str
    group_labels: dict[str, str]
    alerts: tuple[dict[str, Any], ...]
    clock: float
    detected_wall: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
