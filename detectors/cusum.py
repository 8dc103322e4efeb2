"""CUSUM: two-sided tabular cumulative sums of standardized values, for mean shifts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vigil.detectors.base import Explanation


@dataclass(frozen=True, slots=True)
class CUSUMState:
    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    #: Upper and lower cumulative sums, in standard deviations.
    s_pos: float = 0.0
    s_neg: float = 0.0


class CUSUM:
    """Two-sided tabular CUSUM: finds small, persistent shifts of the mean.

    Each value is standardized, ``z = (x - mean) / std``, against a slow EWMA of the mean and
    variance, and two sums accumulate evidence of a shift up or down::

        S+ = max(0, S+ + z - k)        S- = max(0, S- - z - k)

    A shift of ``k`` standard deviations or less is ignored; a larger one makes a sum grow
    until it reaches ``h``. The detector then signals and resets to its empty state, like
    river's drift detectors: it warms up again and learns the new level as its baseline,
    so one shift signals once rather than until the slow EWMA has caught up with it.

    Score range: ``[0, inf)``; ``max(S+, S-) / h`` after taking the value into account, so a
    score of 1 or more means a change is signalled. ``0.0`` during warm-up. The explained
    band is the range of values that would not signal now.

    Parameters
    ----------
    k
        Allowance (slack), in standard deviations: about half the shift to detect.
    h
        Decision interval, in standard deviations; > 0. Larger means fewer false alarms
        and slower detection (``k=0.5, h=5`` gives an in-control average run length of
        about 465 values for a two-sided chart on normal data).
    alpha
        Weight of the newest value in the EWMA of the mean and variance, in (0, 1]. Small,
        so a shift is not absorbed before it is detected. The first ``1 / alpha`` values
        are weighted equally.
    grace_period
        Number of values to learn before any non-zero score.
    min_std
        Floor on the standard deviation, so a flat series does not make every change
        infinitely anomalous.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(42)
    >>> det = CUSUM(k=0.5, h=5.0, grace_period=30)
    >>> for _ in range(200):
    ...     det.learn_one(rng.gauss(10.0, 1.0))
    >>> for i in range(10):  # the mean moves up by 2 standard deviations
    ...     x = rng.gauss(12.0, 1.0)
    ...     if det.score_one(x) >= 1:
    ...         break
    ...     det.learn_one(x)
    >>> i < 10
    True

    References
    ----------
    .. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika, 41(1/2), 100-115.
    .. [2] Montgomery, D. C. (2019). Introduction to Statistical Quality Control, 8th ed.,
       section 9.1 (the tabular CUSUM). Wiley.
    """

    def __init__(
        self,
        k: float = 0.5,
        h: float = 5.0,
        alpha: float = 0.01,
        grace_period: int = 30,
        min_std: float = 1e-9,
    ) -> None:
        self.k = k
        self.h = h
        self.alpha = alpha
        self.grace_period = grace_period
        self.min_std = min_std
        self._state = CUSUMState()

    def _std(self) -> float:
        return max(math.sqrt(self._state.var), self.min_std)

    def _sums(self, x: float) -> tuple[float, float]:
        """``(S+, S-)`` after taking ``x`` into account."""
        s = self._state
        z = (x - s.mean) / self._std()
        return max(0.0, s.s_pos + z - self.k), max(0.0, s.s_neg - z - self.k)

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        s = self._state
        if s.n < self.grace_period:
            return Explanation.warming(x)
        s_pos, s_neg = self._sums(x)
        std = self._std()
        # S+ reaches h exactly when z >= h + k - S+ (before x); likewise for S-.
        upper = s.mean + std * (self.h + self.k - s.s_pos)
        lower = s.mean - std * (self.h + self.k - s.s_neg)
        return Explanation(max(s_pos, s_neg) / self.h, s.mean, lower, upper)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self.explain_one(x, ts).score

    def learn_one(self, x: float, ts: float | None = None) -> None:
        s = self._state
        if s.n == 0:
            self._state = CUSUMState(1, x, 0.0)
            return
        s_pos, s_neg = 0.0, 0.0
        if s.n >= self.grace_period:
            s_pos, s_neg = self._sums(x)
            if max(s_pos, s_neg) >= self.h:
                # Signalled: the old baseline no longer holds. Restarting (rather than
                # only zeroing the sums) keeps a persistent shift from signalling again
                # every few values while the slow EWMA catches up.
                self._state = CUSUMState()
                return
        a = max(self.alpha, 1.0 / (s.n + 1))
        diff = x - s.mean
        incr = a * diff
        # West's incremental weighted variance: stays >= 0 and needs no stored window.
        var = (1 - a) * (s.var + diff * incr)
        self._state = CUSUMState(s.n + 1, s.mean + incr, var, s_pos, s_neg)

    def snapshot(self) -> CUSUMState:
        return self._state

    def restore(self, state: CUSUMState) -> None:
        self._state = state
