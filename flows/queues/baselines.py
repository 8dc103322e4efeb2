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
        ``learn``, ``learn_one(slot, x, clip_z)``.

        ``max``/``min`` of a few floats are written out as the comparisons the builtins
        make (``max`` keeps the first value unless a later one is greater), which is
        the same result for every input, NaN included, at a fraction of the cost.
        """
        n = self._n[slot]
        mean = self._mean[slot]
        if n < self.grace_period:
            out = (0.0, x, -_INF, _INF)
            if not learn:
                return out
        else:
            std = math.sqrt(self._var[slot])
            r = math.sqrt(0.0 if mean < 0.0 else mean)
            if r > std:
                std = r
            if self.min_std > std:
                std = self.min_std
            w = self.band_z * std
            out = ((x - mean) / std, mean, mean - w, mean + w)
            if not learn:
                return out
            if clip_z is not None:
                w = clip_z * std
                lo = mean - w
                if lo > x:
                    x = lo
                hi = mean + w
                if hi < x:
                    x = hi
        if n == 0:
            self._mean[slot], self._var[slot] = x, 0.0
        else:
            a = 1.0 / (n + 1)
            if self.alpha >= a:  # max(alpha, 1 / (n + 1)): alpha unless the other is greater
                a = self.alpha
            diff = x - mean
            incr = a * diff
            self._mean[slot] = mean + incr
            self._var[slot] = (1 - a) * (self._var[slot] + diff * incr)
        self._n[slot] = n + 1
        return out


class StepCUSUM(CUSUM):
    """A :class:`~vigil.detectors.cusum.CUSUM` with :meth:`score_learn`.

    The state is kept as five plain fields rather than a frozen ``CUSUMState`` rebuilt at
    every value (a frozen dataclass costs about a microsecond to build, and this runs for
    every window of every agency); ``_state`` and :meth:`snapshot` give the parent's form.

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

    _n: int
    _mean: float
    _var: float
    _pos: float
    _neg: float

    @property  # type: ignore[override]
    def _state(self) -> CUSUMState:
        return CUSUMState(self._n, self._mean, self._var, self._pos, self._neg)

    @_state.setter
    def _state(self, s: CUSUMState) -> None:
        self._n, self._mean, self._var, self._pos, self._neg = (
            s.n,
            s.mean,
            s.var,
            s.s_pos,
            s.s_neg,
        )

    def score_learn(self, x: float) -> float:
        """``score_one(x)``, then ``learn_one(x)``; the sums are computed once.

        The same operations as :class:`~vigil.detectors.cusum.CUSUM`, with ``max`` of
        two values written out (``b if b > a else a`` is what ``max(a, b)`` returns).
        """
        n, mean = self._n, self._mean
        if n < self.grace_period:
            score = 0.0
            if n == 0:
                self._n, self._mean, self._var, self._pos, self._neg = 1, x, 0.0, 0.0, 0.0
                return score
            s_pos = s_neg = 0.0
        else:
            sd = math.sqrt(self._var)
            ms = self.min_std
            z = (x - mean) / (ms if ms > sd else sd)
            k = self.k
            s_pos = self._pos + z - k
            s_pos = s_pos if s_pos > 0.0 else 0.0
            s_neg = self._neg - z - k
            s_neg = s_neg if s_neg > 0.0 else 0.0
            top = s_neg if s_neg > s_pos else s_pos
            score = top / self.h
            if n == 0:  # grace_period 0: learn_one's first value
                self._n, self._mean, self._var, self._pos, self._neg = 1, x, 0.0, 0.0, 0.0
                return score
            if top >= self.h:
                # signalled: restart (see CUSUM.learn_one)
                self._n, self._mean, self._var, self._pos, self._neg = 0, 0.0, 0.0, 0.0, 0.0
                return score
        b = 1.0 / (n + 1)
        a = b if b > self.alpha else self.alpha
        diff = x - mean
        incr = a * diff
        self._n = n + 1
        self._mean = mean + incr
        self._var = (1 - a) * (self._var + diff * incr)
        self._pos, self._neg = s_pos, s_neg
        return score
