"""One baseline per entity (source IP, agency, series), in bounded memory."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from vigil.detectors.base import Detector, Explanation

_FALLBACKS = ("none", "group")


@dataclass(frozen=True, slots=True)
class KeyedDetectorsState:
    #: ``(key, last seen event time, values learned, detector snapshot)``, least recently
    #: seen first (the order of eviction).
    keys: tuple[tuple[str, float, int, Any], ...] = ()
    #: Snapshot of the group detector (``fallback="group"``), else ``None``.
    group: Any = None
    #: Newest event time seen: the time of values learned without one.
    clock: float = -math.inf


class _Entry:
    __slots__ = ("detector", "last_seen", "n")

    def __init__(self, detector: Detector[Any], last_seen: float, n: int) -> None:
        self.detector = detector
        self.last_seen = last_seen
        self.n = n


class KeyedDetectors:
    """A detector per key, created on first sight, forgotten when idle or least recent.

    Each key (a source IP, an agency, a series) gets its own detector from ``factory``. A
    key is judged by its own detector once that has learned ``warmup`` values; before
    that, by the group detector, which learns from every key (``fallback="group"``), or
    not at all, with a score of ``0.0`` (``fallback="none"``).

    Memory is bounded: at most ``max_keys`` keys are kept, and adding one more forgets the
    key least recently learned from. ``expire(now_ts)`` forgets keys not seen for more than
    ``idle_ttl_s`` seconds of event time; call it now and then (it scans every key).

    Score range: that of the detectors ``factory`` makes.

    Parameters
    ----------
    factory
        Makes a new, empty detector: one per key, and the group detector.
    idle_ttl_s
        Seconds of event time after which an idle key is forgotten by ``expire``.
    max_keys
        Most keys kept at once (>= 1).
    warmup
        Values a key's own detector must learn before it judges that key.
    fallback
        Who judges a key that is still warming up: ``"group"`` or ``"none"``.

    Raises
    ------
    ValueError
        If ``fallback`` is neither ``"none"`` nor ``"group"``.

    Examples
    --------
    >>> from vigil.detectors.ewma import EWMAZScore
    >>> keyed = KeyedDetectors(
    ...     lambda: EWMAZScore(alpha=0.1, grace_period=5), warmup=5, fallback="group"
    ... )
    >>> for t in range(20):
    ...     keyed.learn_one("10.0.0.1", 100.0 + t % 3, ts=60.0 * t)  # a busy host
    ...     keyed.learn_one("10.0.0.2", 5.0 + t % 2, ts=60.0 * t)  # a quiet one
    >>> keyed.score_one("10.0.0.1", 101.0) < 2  # usual for the busy host
    True
    >>> keyed.score_one("10.0.0.2", 101.0) > 10  # not for the quiet one
    True
    >>> round(keyed.explain_one("10.0.0.3", 101.0).expected, 1)  # a new host: the group's
    51.5
    >>> len(keyed)
    2
    """

    def __init__(
        self,
        factory: Callable[[], Detector[Any]],
        *,
        idle_ttl_s: float = 86400.0,
        max_keys: int = 100_000,
        warmup: int = 30,
        fallback: Literal["none", "group"] = "none",
    ) -> None:
        if fallback not in _FALLBACKS:
            msg = f"fallback must be one of {_FALLBACKS}, got {fallback!r}"
            raise ValueError(msg)
        self.factory = factory
        self.idle_ttl_s = idle_ttl_s
        self.max_keys = max_keys
        self.warmup = warmup
        self.fallback = fallback
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently seen first
        self._group: Detector[Any] | None = factory() if fallback == "group" else None
        self._clock = -math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def explain_one(self, key: str, x: float, ts: float | None = None) -> Explanation:
        """Pure: the explanation from the key's own detector, or the fallback's."""
        entry = self._entries.get(key)
        if entry is not None and entry.n >= self.warmup:
            return entry.detector.explain_one(x, ts)
        if self._group is not None:
            return self._group.explain_one(x, ts)
        return Explanation.warming(x)

    def score_one(self, key: str, x: float, ts: float | None = None) -> float:
        return self.explain_one(key, x, ts).score

    def learn_one(self, key: str, x: float, ts: float | None = None) -> None:
        """Learn ``x`` for ``key`` (creating its detector) and, if any, for the group."""
        if ts is not None:
            self._clock = max(self._clock, ts)
        seen = ts if ts is not None else self._clock
        entry = self._entries.get(key)
        if entry is None:
            while len(self._entries) >= max(self.max_keys, 1):
                self._entries.popitem(last=False)
            entry = self._entries[key] = _Entry(self.factory(), seen, 0)
        else:
            self._entries.move_to_end(key)
            entry.last_seen = max(entry.last_seen, seen)
        entry.detector.learn_one(x, ts)
        entry.n += 1
        if self._group is not None:
            self._group.learn_one(x, ts)

    def expire(self, now_ts: float) -> int:
        """Forget keys last seen more than ``idle_ttl_s`` before ``now_ts``; how many."""
        idle = [k for k, e in self._entries.items() if now_ts - e.last_seen > self.idle_ttl_s]
        for k in idle:
            del self._entries[k]
        return len(idle)

    def snapshot(self) -> KeyedDetectorsState:
        return KeyedDetectorsState(
            tuple((k, e.last_seen, e.n, e.detector.snapshot()) for k, e in self._entries.items()),
            None if self._group is None else self._group.snapshot(),
            self._clock,
        )

    def restore(self, state: KeyedDetectorsState) -> None:
        self._entries.clear()
        # If today's max_keys is smaller than when saved, keep the most recently seen.
        kept = state.keys[max(len(state.keys) - max(self.max_keys, 1), 0) :]
        for key, last_seen, n, snap in kept:
            det = self.factory()
            det.restore(snap)
            self._entries[key] = _Entry(det, last_seen, n)
        if self._group is not None:
            self._group = self.factory()
            if state.group is not None:
                self._group.restore(state.group)
        self._clock = state.clock
