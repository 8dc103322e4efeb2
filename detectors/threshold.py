"""Fixed rules: a static band on the value, and a maximum rate over event time.

Both score how far a value (or the windowed rate) lies outside its allowed band, relative to
the band's scale, so ``0.0`` means "within the rule" and any positive score breaks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vigil.detectors.base import Explanation

# Below this a band has no usable scale (a zero-width band, or a one-sided band at 0): the
# excess is then reported in the value's own units instead of dividing by ~0.
_MIN_SCALE = 1e-9

# RateThreshold splits its window into this many buckets: memory per detector is bounded by
# it, and the window slides in steps of window_s / _BUCKETS.
_BUCKETS = 60


def _band_scale(lower: float, upper: float) -> float:
    """The unit in which excess over ``[lower, upper]`` is measured."""
    if math.isfinite(lower) and math.isfinite(upper) and upper - lower >= _MIN_SCALE:
        return upper - lower
    scale = max((abs(b) for b in (lower, upper) if math.isfinite(b)), default=0.0)
    return scale if scale >= _MIN_SCALE else 1.0


def _excess(x: float, lower: float, upper: float) -> float:
    """Distance of ``x`` outside ``[lower, upper]`` in units of the band's scale; 0 inside."""
    if x > upper:
        return (x - upper) / _band_scale(lower, upper)
    if x < lower:
        return (lower - x) / _band_scale(lower, upper)
    return 0.0


@dataclass(frozen=True, slots=True)
class StaticThresholdState:
    """A static band learns nothing; the empty state keeps the interface uniform."""


class StaticThreshold:
    """A fixed band ``[lower, upper]``: how far a value lies outside it.

    Score range: ``[0, inf)``. ``0.0`` inside the band; outside, the distance to the nearest
    bound divided by the band's width (or, for a one-sided band, by ``|bound|``; in the
    value's own units when that is 0). There is no warm-up and nothing is learned.

    Parameters
    ----------
    lower
        Smallest allowed value. ``-inf`` for no lower bound.
    upper
        Largest allowed value. ``inf`` for no upper bound.

    Examples
    --------
    >>> det = StaticThreshold(lower=0.0, upper=100.0)
    >>> det.score_one(50.0)
    0.0
    >>> det.score_one(150.0)  # 50 above the band, which is 100 wide
    0.5
    >>> det.explain_one(150.0)
    Explanation(score=0.5, expected=50.0, lower=0.0, upper=100.0)
    >>> StaticThreshold(upper=80.0).score_one(100.0)  # one-sided: relative to the bound
    0.25
    """

    def __init__(self, lower: float = -math.inf, upper: float = math.inf) -> None:
        self.lower = lower
        self.upper = upper
        self._state = StaticThresholdState()

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        lo, hi = self.lower, self.upper
        if math.isfinite(lo) and math.isfinite(hi):
            expected = (lo + hi) / 2
        elif math.isfinite(lo):
            expected = lo
        elif math.isfinite(hi):
            expected = hi
        else:
            expected = x
        return Explanation(_excess(x, lo, hi), expected, lo, hi)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return _excess(x, self.lower, self.upper)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        return None

    def snapshot(self) -> StaticThresholdState:
        return self._state

    def restore(self, state: StaticThresholdState) -> None:
        self._state = state


@dataclass(frozen=True, slots=True)
class RateThresholdState:
    #: ``(bucket index, sum of values)`` for the non-empty buckets of the window, oldest
    #: first; bucket ``i`` covers event times ``[i * width, (i + 1) * width)``.
    buckets: tuple[tuple[int, float], ...] = ()


class RateThreshold:
    """A maximum rate: the sum of values over the last ``window_s`` of event time, per second.

    Each value counts towards the rate at its event time ``ts`` (pass ``x=1.0`` per event
    to limit events per second, or a byte count to limit bytes per second). The value being
    scored is included, so the event that pushes the rate over the limit is the one flagged.
    The window slides in steps of ``window_s / 60``: it holds 60 buckets of summed values,
    and an event older than the window neither counts nor scores.

    Score range: ``[0, inf)``. ``0.0`` while the rate is at most ``max_per_s``; above it,
    ``(rate - max_per_s) / max_per_s``. The explanation's ``upper`` (and ``expected``) is
    the largest value that would keep the rate within the limit. There is no warm-up.

    Parameters
    ----------
    max_per_s
        Largest allowed rate, in units of the value per second.
    window_s
        Length of the sliding window of event time, in seconds.

    Raises
    ------
    ValueError
        If ``ts`` is not given: a rate needs event time.

    Examples
    --------
    >>> det = RateThreshold(max_per_s=0.1, window_s=60.0)  # at most 6 events a minute
    >>> scores = []
    >>> for ts in range(1_700_000_000, 1_700_000_080, 10):  # one event every 10 s: fine
    ...     scores.append(det.score_one(1.0, ts))
    ...     det.learn_one(1.0, ts)
    >>> max(scores)
    0.0
    >>> det.score_one(7.0, 1_700_000_080)  # a burst of 7 more events at once
    1.0
    >>> det.explain_one(7.0, 1_700_000_080).upper  # room left in the window
    1.0
    """

    def __init__(self, max_per_s: float, window_s: float = 60.0) -> None:
        self.max_per_s = max_per_s
        self.window_s = window_s
        self._state = RateThresholdState()

    def _index(self, ts: float | None) -> int:
        if ts is None:
            msg = "RateThreshold needs the event time: pass ts (epoch seconds)"
            raise ValueError(msg)
        return math.floor(ts * _BUCKETS / self.window_s)

    def _window(self, idx: int) -> tuple[int, float] | None:
        """``(newest bucket index, sum in window)`` as seen at bucket ``idx``.

        ``None`` if ``idx`` is already outside the window (a late event).
        """
        buckets = self._state.buckets
        end = max(idx, buckets[-1][0]) if buckets else idx
        if idx <= end - _BUCKETS:
            return None
        return end, sum(v for i, v in buckets if i > end - _BUCKETS)

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        seen = self._window(self._index(ts))
        if seen is None:
            return Explanation.warming(x)
        budget = self.max_per_s * self.window_s - seen[1]
        score = _excess((seen[1] + x) / self.window_s, -math.inf, self.max_per_s)
        return Explanation(score, budget, -math.inf, budget)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self.explain_one(x, ts).score

    def learn_one(self, x: float, ts: float | None = None) -> None:
        idx = self._index(ts)
        seen = self._window(idx)
        if seen is None:
            return
        sums = dict(self._state.buckets)
        sums[idx] = sums.get(idx, 0.0) + float(x)
        oldest = seen[0] - _BUCKETS
        kept = tuple(sorted((i, v) for i, v in sums.items() if i > oldest))
        self._state = RateThresholdState(kept)

    def snapshot(self) -> RateThresholdState:
        return self._state

    def restore(self, state: RateThresholdState) -> None:
        self._state = state
