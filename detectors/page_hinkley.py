"""Page-Hinkley test: a two-sided change detector on the running mean."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vigil.detectors.base import Explanation


@dataclass(frozen=True, slots=True)
class PageHinkleyState:
    n: int = 0
    mean: float = 0.0
    sum_increase: float = 0.0
    sum_decrease: float = 0.0
    min_increase: float = math.inf
    max_decrease: float = -math.inf


class PageHinkley:
    """Page-Hinkley test for a change of the mean, up or down, as in river's ``PageHinkley``.

    With ``m`` the running mean (including the value), two fading cumulative sums of
    deviations are kept::

        U = alpha * U + (x - m) - delta        L = alpha * L + (x - m) + delta

    The statistic is ``max(U - min U, max L - L)``. A change is signalled when it exceeds
    ``threshold``; the detector then resets to its empty state (and warms up again), as
    river's does.

    Score range: ``[0, inf)``; the statistic divided by ``threshold`` after taking the value
    into account, so a score above 1 means a change is signalled. ``0.0`` during warm-up.
    The sums are in the value's units, so ``threshold`` is too.

    Parameters
    ----------
    delta
        Magnitude of changes to tolerate, in the value's units.
    threshold
        Change-detection threshold (lambda), in the value's units; > 0.
    alpha
        Forgetting factor of the cumulative sums, in (0, 1].
    grace_period
        Number of values to learn before any non-zero score. river's ``min_instances`` is
        ``grace_period + 1``: river tests the value that completes ``min_instances``.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(4)
    >>> det = PageHinkley()
    >>> stream = [rng.gauss(10.0, 1.0) for _ in range(1000)]
    >>> stream += [rng.gauss(13.0, 1.0) for _ in range(100)]  # the mean moves up at 1000
    >>> for i, x in enumerate(stream):
    ...     if det.score_one(x) > 1:
    ...         print(f"change signalled at index {i}")
    ...     det.learn_one(x)
    change signalled at index 1016

    References
    ----------
    .. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika, 41(1/2), 100-115.
    .. [2] Hinkley, D. V. (1971). Inference about the change-point from cumulative sum
       tests. Biometrika, 58(3), 509-523.
    .. [3] river, ``river.drift.PageHinkley`` (mode ``"both"``).
    """

    def __init__(
        self,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 0.9999,
        grace_period: int = 30,
    ) -> None:
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.grace_period = grace_period
        self._state = PageHinkleyState()

    def _step(self, x: float) -> tuple[PageHinkleyState, float]:
        """The state after learning ``x``, and the statistic then."""
        s = self._state
        n = s.n + 1
        mean = s.mean + (x - s.mean) / n
        dev = x - mean
        up = self.alpha * s.sum_increase + dev - self.delta
        down = self.alpha * s.sum_decrease + dev + self.delta
        low, high = min(s.min_increase, up), max(s.max_decrease, down)
        return PageHinkleyState(n, mean, up, down, low, high), max(up - low, high - down)

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        s = self._state
        if s.n < self.grace_period:
            return Explanation.warming(x)
        stat = self._step(x)[1]
        if s.n == 0:  # grace_period 0: the first value is its own mean and cannot signal
            return Explanation(stat / self.threshold, x, -math.inf, math.inf)
        # x - m = (x - mean) * n / (n + 1): solve U - min U > threshold (and likewise for
        # L) for x.
        f = (s.n + 1) / s.n
        a, d, thr = self.alpha, self.delta, self.threshold
        upper = s.mean + f * (s.min_increase + thr + d - a * s.sum_increase)
        lower = s.mean + f * (s.max_decrease - thr - d - a * s.sum_decrease)
        return Explanation(stat / self.threshold, s.mean, lower, upper)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self.explain_one(x, ts).score

    def learn_one(self, x: float, ts: float | None = None) -> None:
        tested = self._state.n >= self.grace_period
        state, stat = self._step(x)
        self._state = PageHinkleyState() if tested and stat > self.threshold else state

    def snapshot(self) -> PageHinkleyState:
        return self._state

    def restore(self, state: PageHinkleyState) -> None:
        self._state = state
