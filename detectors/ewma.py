"""EWMA z-score: distance from an exponentially weighted mean, in standard deviations."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vigil.detectors.base import Explanation


@dataclass(frozen=True, slots=True)
class EWMAZScoreState:
    n: int = 0
    mean: float = 0.0
    var: float = 0.0


class EWMAZScore:
    """Distance from an exponentially weighted mean, in standard deviations.

    Score range: ``[0, inf)``; ``0.0`` during warm-up.

    Parameters
    ----------
    alpha
        Weight of the newest value, in (0, 1]. Larger adapts faster.
    grace_period
        Number of values to learn before any non-zero score.
    band_z
        Width of the reported band, in standard deviations.
    min_std
        Floor on the standard deviation, so a flat series does not make every change
        infinitely anomalous.

    Examples
    --------
    >>> det = EWMAZScore(alpha=0.1, grace_period=5)
    >>> for x in [10.0, 10.5, 9.5, 10.2, 9.8, 10.1]:
    ...     det.learn_one(x)
    >>> det.score_one(14.0) > 3
    True
    >>> e = det.explain_one(14.0)
    >>> e.lower < e.expected < e.upper < 14.0
    True
    """

    def __init__(
        self,
        alpha: float = 0.05,
        grace_period: int = 30,
        band_z: float = 4.0,
        min_std: float = 1e-9,
    ) -> None:
        self.alpha = alpha
        self.grace_period = grace_period
        self.band_z = band_z
        self.min_std = min_std
        self._state = EWMAZScoreState()

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        s = self._state
        if s.n < self.grace_period:
            return Explanation.warming(x)
        std = max(math.sqrt(s.var), self.min_std)
        score = abs(x - s.mean) / std
        return Explanation(score, s.mean, s.mean - self.band_z * std, s.mean + self.band_z * std)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self.explain_one(x, ts).score

    def learn_one(self, x: float, ts: float | None = None) -> None:
        s = self._state
        if s.n == 0:
            self._state = EWMAZScoreState(1, x, 0.0)
            return
        a = self.alpha
        diff = x - s.mean
        incr = a * diff
        mean = s.mean + incr
        # West's incremental EW variance: keeps var >= 0 and needs no stored window.
        var = (1 - a) * (s.var + diff * incr)
        self._state = EWMAZScoreState(s.n + 1, mean, var)

    def snapshot(self) -> EWMAZScoreState:
        return self._state

    def restore(self, state: EWMAZScoreState) -> None:
        self._state = state
