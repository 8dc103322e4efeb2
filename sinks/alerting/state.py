"""The alerting engine's state records: observations, groups, notification log, snapshots.

Their own module so the store (:mod:`vigil.sinks.alerting.store`) loads and saves them
without the engine's logic. :class:`Snapshot` and what it holds are pickled (bytewax
recovery) and written to Redis: :mod:`vigil.sinks.alerting.engine` re-exports them under
their old path, which older snapshots name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vigil.sinks.alerting.model import Alert

_INF = math.inf


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation of an episode (see :meth:`AlertEngine.observe`)."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ts: float
    start: float | None = None
    hold_s: float = 0.0
    domain: str = ""
    detected_wall: float = 0.0


# ---------------------------------------------------------------------------- state
@dataclass(slots=True)
class Group:
    """One aggregation group: a route, the values of its ``group_by`` labels, its alerts.

    Its timers run on the event time of its domain (``clock``).
    """

    key: str
    route: str
    receiver: str
    labels: dict[str, str]
    fingerprints: set[str]
    next_flush: float
    created_clock: float
    has_flushed: bool = False
    clock: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "route": self.route,
            "receiver": self.receiver,
            "labels": self.labels,
            "fingerprints": sorted(self.fingerprints),
            "next_flush": self.next_flush,
            "created_clock": self.created_clock,
            "has_flushed": self.has_flushed,
            "clock": self.clock,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Group:
        return cls(
            key=d["key"],
            route=d["route"],
            receiver=d["receiver"],
            labels=dict(d["labels"]),
            fingerprints=set(d["fingerprints"]),
            next_flush=float(d["next_flush"]),
            created_clock=float(d["created_clock"]),
            has_flushed=bool(d["has_flushed"]),
            clock=str(d.get("clock", "")),
        )


@dataclass(slots=True)
class LogEntry:
    """Notification log entry: what a receiver was last told about a group."""

    firing: list[str]
    resolved: list[str]
    clock: float
    seq: int
    epoch: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "firing": self.firing,
            "resolved": self.resolved,
            "clock": self.clock,
            "seq": self.seq,
            "epoch": self.epoch,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogEntry:
        return cls(
            list(d["firing"]),
            list(d["resolved"]),
            float(d["clock"]),
            int(d["seq"]),
            float(d.get("epoch", 0.0)),
        )


def merge_clocks(*clocks: Mapping[str, float] | None) -> dict[str, float]:
    """The newest time of each domain over several saved clocks (several processes)."""
    out: dict[str, float] = {}
    for c in clocks:
        for k, v in (c or {}).items():
            if v > out.get(k, -_INF):
                out[k] = v
    return out


def clocks_from_raw(raw: Any) -> dict[str, float]:
    """Saved clocks from what a store holds: a JSON object, or one number (older stores)."""
    if raw in (None, b"", ""):
        return {}
    if isinstance(raw, Mapping):
        return {str(k): float(v) for k, v in raw.items()}
    if isinstance(raw, bytes | str):
        import orjson

        try:
            val = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
        return clocks_from_raw(val) if isinstance(val, Mapping) else {"": float(val)}
    return {"": float(raw)}


@dataclass(slots=True)
class Snapshot:
    """Everything the engine needs to resume: what a store loads and saves.

    ``clock`` maps each domain to the event time up to which it was processed.
    """

    alerts: dict[str, Alert] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    nflog: dict[str, LogEntry] = field(default_factory=dict)
    clock: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Changes:
    """What changed since the last :meth:`AlertEngine.drain_changes` (for the store)."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    alerts_deleted: set[str] = field(default_factory=set)
    groups: dict[str, Group] = field(default_factory=dict)
    groups_deleted: set[str] = field(default_factory=set)
    nflog: dict[str, LogEntry] = field(default_factory=dict)
    nflog_deleted: set[str] = field(default_factory=set)
    clock: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.alerts
            or self.alerts_deleted
            or self.groups
            or self.groups_deleted
            or self.nflog
            or self.nflog_deleted
        )


class _Domain:
    """Timers and waiting observations of one event-time domain."""

    __slots__ = (
        "alerts",
        "anchor",
        "anchor_wall",
        "data",
        "done",
        "expected",
        "groups",
        "known",
        "newest",
        "obs",
        "progress",
        "seq",
    )

    def __init__(self) -> None:
        self.obs: list[tuple[float, int, Observation]] = []  # waiting for the watermark
        self.alerts: list[tuple[float, str]] = []  # (deadline, fingerprint)
        self.groups: list[tuple[float, str]] = []  # (next flush, group key)
        self.progress: dict[str, float] = {}  # producer -> promise
        self.expected = 0  # producers that must have promised before the clock moves
        self.newest = -_INF  # newest observation (domains without producers)
        self.done = -_INF  # processed up to here
        self.data = -_INF  # ...of which the data itself vouches for (no wall clock)
        self.known = -_INF  # processed before a restart: observations up to here are repeats
        self.seq = 0
        # A live engine's time runs on with the wall clock from here: the newest event
        # time its data (or a restored clock) showed, and the wall time it did so.
        self.anchor = -_INF
        self.anchor_wall = 0.0
