"""Clocks an :class:`~vigil.sinks.alerting.engine.AlertEngine` can take as ``clock``.

The engine's timers run on each domain's event time; these are the optional outside clocks
(wall time, the newest event, both, or one that tests move by hand) that floor every
domain's watermark. Their own module: they hold no alerting logic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...
    def observe(self, ts: float) -> None: ...


class WallClock:
    """Wall time; observations do not move it."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def now(self) -> float:
        return self._wall()

    def observe(self, ts: float) -> None:
        pass


class EventClock:
    """The newest event time observed (stands still between observations)."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def observe(self, ts: float) -> None:
        if ts > self._t:
            self._t = ts


class HybridClock:
    """Newest event time observed plus the wall time elapsed since; never goes back.

    Given to an engine as ``clock``, it is a floor under every domain's watermark (the
    engine's older, single-clock model; flows use per-domain watermarks instead).

    Parameters
    ----------
    start
        Engine time to start from (a restored clock); ``None`` waits for an observation.
    monotonic, wall
        Sources of elapsed and current time (injectable for tests).
    """

    def __init__(
        self,
        start: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._mono = monotonic
        self._wall = wall
        self._base = start
        self._base_mono = monotonic()
        self._last = start if start is not None else float("-inf")
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            if self._base is None:
                return self._wall()
            t = self._base + (self._mono() - self._base_mono)
            if t > self._last:
                self._last = t
            return self._last

    def observe(self, ts: float) -> None:
        with self._lock:
            if self._base is None or ts > self._last:
                self._base, self._base_mono, self._last = ts, self._mono(), ts


class ManualClock:
    """A clock tests move by hand (observations move it forward, like :class:`EventClock`).

    Given to an engine as ``clock``, it is a floor under every domain's watermark.
    """

    def __init__(self, start: float = 0.0, *, follow_events: bool = False) -> None:
        self.t = start
        self.follow_events = follow_events

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def observe(self, ts: float) -> None:
        if self.follow_events and ts > self.t:
            self.t = ts
