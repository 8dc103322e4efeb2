"""The per-agency detectors of the queue rules, each with its explain-then-learn in one call.

Every closed window of every agency asks its calendar baselines for an explanation and
then teaches them the window's value, and feeds the CUSUM a score-then-learn: about 26,000
windows on a quarter of Boston 311. Calling ``explain_one`` and ``learn_one`` separately
computes the standard deviation (and the CUSUM sums) twice and builds an
:class:`~vigil.detectors.base.Explanation` that the rules mostly discard. These
subclasses do both in one call with the parent's arithmetic, operation for operation, so
scores and learned state are bit-identical (``tests/test_queues_baselines.py`` checks
them against the parent's methods). Their state and snapshots are the parent's.
"""

from __future__ import annotations

import math

from vigil.detectors.calendar import CalendarBaseline
from vigil.detectors.cusum import CUSUM, CUSUMState

__all__ = ["SlotBaseline", "StepCUSUM"]

_INF = math.inf


class SlotBaseline(CalendarBaseline):
    """A :class:`~vigil.detectors.calendar.CalendarBaseline` with :meth:`explain_learn`.

    Examples
    --------
    >>> b = SlotBaseline(slots=1, grace_period=2)
    >>> for x in (100.0, 110.0, 90.0):
    ...     _ = b.explain_learn(0, x, None, True)
    >>> score, expected, _lo, _hi = b.explain_learn(0, 200.0, None, False)
    >>> round(expected), score > 4
    (100, True)
    """

    def explain_learn(
        self, slot: int, x: float, clip_z: float | None, learn: bool
    ) -> tuple[float, float, float, float]:
        """``explain_one(slot, x)`` as ``(score, expected, lower, upper)``; then, if
        ``learn``, ``learn_one(slot, x, clip_z)``."""
        n = self._n[slot]
        if n < self.grace_period:
            out = (0.0, x, -_INF, _INF)
            if not learn:
                return out
            mean = self._mean[slot]
        else:
            mean = self._mean[slot]
            std = max(math.sqrt(self._var[slot]), math.sqrt(max(mean, 0.0)), self.min_std)
            w = self.band_z * std
            out = ((x - mean) / std, mean, mean - w, mean + w)
            if not learn:
                return out
            if clip_z is not None:
                w = clip_z * std
                x = min(max(x, mean - w), mean + w)
        if n == 0:
            self._mean[slot], self._var[slot] = x, 0.0
        else:
            a = max(self.alpha, 1.0 / (n + 1))
            diff = x - mean
            incr = a * diff
            self._mean[slot] = mean + incr
            self._var[slot] = (1 - a) * (self._var[slot] + diff * incr)
        self._n[slot] = n + 1
        return out


class StepCUSUM(CUSUM):
    """A :class:`~vigil.detectors.cusum.CUSUM` with :meth:`score_learn`.

    Examples
    --------
    >>> fused, plain = StepCUSUM(k=0.5, h=5.0, grace_period=3), CUSUM(k=0.5, h=5.0, grace_period=3)
    >>> xs = (0.0, 1.0, 0.0, 1.0, 9.0, 9.5)
    >>> scores = [fused.score_learn(x) for x in xs]
    >>> scores == [(plain.score_one(x), plain.learn_one(x))[0] for x in xs]
    True
    >>> scores[4] >= 1.0, fused.snapshot() == plain.snapshot()
    (True, True)
    """

    def score_learn(self, x: float) -> float:
        """``score_one(x)``, then ``learn_one(x)``; the sums are computed once."""
        s = self.snapshot()  # the state itself (frozen), typed
        if s.n < self.grace_period:
            score = 0.0
            if s.n == 0:
                self._state = CUSUMState(1, x, 0.0)
                return score
            s_pos = s_neg = 0.0
        else:
            z = (x - s.mean) / max(math.sqrt(s.var), self.min_std)
            s_pos = max(0.0, s.s_pos + z - self.k)
            s_neg = max(0.0, s.s_neg - z - self.k)
            top = max(s_pos, s_neg)
            score = top / self.h
            if s.n == 0:  # grace_period 0: learn_one's first value
                self._state = CUSUMState(1, x, 0.0)
                return score
            if top >= self.h:
                self._state = CUSUMState()  # signalled: restart (see CUSUM.learn_one)
                return score
        a = max(self.alpha, 1.0 / (s.n + 1))
        diff = x - s.mean
        incr = a * diff
        self._state = CUSUMState(
            s.n + 1, s.mean + incr, (1 - a) * (s.var + diff * incr), s_pos, s_neg
        )
        return score
