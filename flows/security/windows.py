"""Event-time sliding-window counters with bounded memory.

Detection rules ask "has this source made at least N failures / touched at least N distinct
ports within the last T seconds?". These structures answer that exactly up to a cap and
never grow past it: one source touching 65k ports costs ``cap`` entries, after which
distinct values are counted by an Apache DataSketches HLL sketch (fixed size), so the
reported figure stays meaningful while memory stays bounded.
"""

from __future__ import annotations

from collections import deque

from datasketches import hll_sketch

_HLL_LG_K = 10  # 1,024 registers: ~3% relative error, ~1 KiB


class SlidingCount:
    """Number of events in the last ``window_s`` seconds of event time, saturating at ``cap``.

    >>> c = SlidingCount(window_s=60, cap=100)
    >>> for t in (0, 10, 20, 70):
    ...     c.add(t)
    >>> c.count(70)  # 10, 20 and 70 are within 60 s of 70
    3
    """

    __slots__ = ("_ts", "cap", "window_s")

    def __init__(self, window_s: float, cap: int) -> None:
        self.window_s = window_s
        self.cap = cap
        self._ts: deque[float] = deque(maxlen=cap)

    def add(self, ts: float) -> None:
        self._ts.append(ts)

    def count(self, now: float) -> int:
        q = self._ts
        lo = now - self.window_s
        while q and q[0] < lo:
            q.popleft()
        return len(q)

    def count_since(self, lo: float) -> int:
        """Events at or after ``lo`` (which must lie within the window)."""
        n = 0
        for t in reversed(self._ts):
            if t < lo:
                break
            n += 1
        return n

    def last(self) -> float | None:
        return self._ts[-1] if self._ts else None

    def __getstate__(self) -> tuple[float, int, tuple[float, ...]]:
        return (self.window_s, self.cap, tuple(self._ts))

    def __setstate__(self, st: tuple[float, int, tuple[float, ...]]) -> None:
        self.window_s, self.cap = st[0], st[1]
        self._ts = deque(st[2], maxlen=self.cap)


class SlidingDistinct:
    """Distinct values seen in the last ``window_s`` seconds of event time.

    Exact while fewer than ``cap`` distinct values are live; past that, further new values
    go to an HLL sketch, so :meth:`count` stays an estimate and memory stays bounded. The
    sketch is dropped once the exact part has expired.

    >>> d = SlidingDistinct(window_s=60, cap=3)
    >>> for t, port in [(0, 22), (1, 23), (2, 22), (3, 80), (4, 443), (5, 8080)]:
    ...     d.add(port, t)
    >>> d.count(5)
    5
    >>> d.count(200)
    0
    """

    __slots__ = ("_hll", "_last", "cap", "window_s")

    def __init__(self, window_s: float, cap: int) -> None:
        self.window_s = window_s
        self.cap = cap
        self._last: dict[object, float] = {}  # insertion order = oldest first
        self._hll: hll_sketch | None = None

    def add(self, key: object, ts: float) -> None:
        last = self._last
        if key in last:
            # Move to the end so the dict stays ordered by last sighting.
            del last[key]
            last[key] = ts
            return
        if len(last) < self.cap:
            last[key] = ts
            return
        self._add_at_cap(key, ts)

    def _add_at_cap(self, key: object, ts: float) -> None:
        """A new value while ``cap`` values are live: expire, then keep it exactly if that
        made room, else count it in the sketch."""
        last = self._last
        self._expire(ts)
        if len(last) < self.cap:
            last[key] = ts
            return
        if self._hll is None:
            self._hll = hll_sketch(_HLL_LG_K)
        self._hll.update(str(key))

    def add_count(self, key: object, ts: float) -> int:
        """:meth:`add` then :meth:`count` at ``ts``, in one call (the rules' hot path).

        >>> d = SlidingDistinct(window_s=60, cap=3)
        >>> [d.add_count(p, t) for t, p in [(0, 22), (1, 23), (2, 22), (70, 80)]]
        [1, 2, 2, 1]
        >>> d = SlidingDistinct(window_s=60, cap=2)  # past the cap: the sketch counts
        >>> [d.add_count(p, t) for t, p in [(0, 1), (1, 2), (2, 3), (3, 1), (100, 4)]]
        [1, 2, 3, 3, 1]
        """
        last = self._last
        # Seen before (popped, to move to the end), or room for it: the common case.
        if last.pop(key, None) is not None or len(last) < self.cap:
            last[key] = ts
            # count(ts), with the common case (nothing to expire) checked first
            if last[next(iter(last))] < ts - self.window_s:
                self._expire(ts)
        else:
            self._add_at_cap(key, ts)
        hll = self._hll
        return len(last) if hll is None else len(last) + round(hll.get_estimate())

    def _expire(self, now: float) -> None:
        last = self._last
        lo = now - self.window_s
        while last:
            k = next(iter(last))
            if last[k] >= lo:
                break
            del last[k]
        if not last:
            self._hll = None

    def count(self, now: float) -> int:
        self._expire(now)
        n = len(self._last)
        if self._hll is not None:
            n += round(self._hll.get_estimate())
        return n

    def __len__(self) -> int:
        return len(self._last)

    def exact_values(self) -> list[object]:
        """The values counted exactly (the newest ``cap`` of the window), oldest first."""
        return list(self._last)

    def __getstate__(self) -> tuple[float, int, tuple[tuple[object, float], ...], bytes | None]:
        hll = self._hll.serialize_compact() if self._hll is not None else None
        return (self.window_s, self.cap, tuple(self._last.items()), hll)

    def __setstate__(
        self, st: tuple[float, int, tuple[tuple[object, float], ...], bytes | None]
    ) -> None:
        self.window_s, self.cap = st[0], st[1]
        self._last = dict(st[2])
        self._hll = hll_sketch.deserialize(st[3]) if st[3] is not None else None
