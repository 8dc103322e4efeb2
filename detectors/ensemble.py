"""Ensemble for NAB-style streams: shape novelty gated by size, plus range novelty."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from vigil.detectors.base import Explanation
from vigil.detectors.resonance import AdaptiveResonance, AdaptiveResonanceState


@dataclass(frozen=True, slots=True)
class ResonanceEnsembleState:
    """Everything that affects :class:`ResonanceEnsemble`'s future scores, as plain values."""

    resonance: AdaptiveResonanceState = field(default_factory=AdaptiveResonanceState)
    n: int = 0
    recent: tuple[float, ...] = ()
    lo: float = math.inf
    hi: float = -math.inf
    rest: int = 0


class ResonanceEnsemble:
    """Adaptive-resonance alarms weighted by how far the value strays, or range breaks.

    Score range: ``[0, 1]``; ``0.0`` except at an alarm. Two members vote and the larger
    score wins:

    - *Shape novelty*: an :class:`~vigil.detectors.resonance.AdaptiveResonance` alarm, multiplied
      by a gate ``gate_floor + (1 - gate_floor) * min(1, z / gate_z)``, where ``z`` is the
      value's distance from the median of the last ``gate_window`` values in their standard
      deviations. A novel shape at an ordinary level is kept but ranked lower than one
      that also moves the value.
    - *Range novelty* (as in Numenta's NAB detector): a value beyond the minimum or maximum
      seen so far by more than ``range_tolerance`` of that range scores ``range_score``;
      then this member rests for ``range_rest`` values.

    Parameters
    ----------
    input_min, input_max
        Passed to the resonance member (NAB lets detectors know each file's range).
    probationary_period
        Passed to the resonance member: values to learn from before alarms.
    gate_floor
        Weight of a shape alarm whose value is at the recent median.
    gate_z
        Deviation (in standard deviations) at which a shape alarm keeps its full score.
    gate_window
        Recent values the deviation is measured against.
    range_tolerance
        How far beyond the seen range (as a fraction of it) a value must be.
    range_score
        Score of a range break.
    range_rest
        Values after a range break during which range breaks are not reported.

    Examples
    --------
    >>> import math
    >>> det = ResonanceEnsemble(input_min=-1.5, input_max=3.0, probationary_period=150)
    >>> xs = [math.sin(i / 4) for i in range(600)] + [2.5] * 20
    >>> scores = []
    >>> for x in xs:
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> max(scores[:600]) < max(scores[600:])
    True
    """

    _n: int
    _recent: deque[float]
    _lo: float
    _hi: float
    _rest: int

    def __init__(
        self,
        input_min: float | None = None,
        input_max: float | None = None,
        probationary_period: int = 750,
        gate_floor: float = 0.3,
        gate_z: float = 2.0,
        gate_window: int = 500,
        range_tolerance: float = 0.05,
        range_score: float = 0.5,
        range_rest: int = 100,
    ) -> None:
        self.input_min = input_min
        self.input_max = input_max
        self.probationary_period = probationary_period
        self.gate_floor = gate_floor
        self.gate_z = gate_z
        self.gate_window = gate_window
        self.range_tolerance = range_tolerance
        self.range_score = range_score
        self.range_rest = range_rest
        self._resonance = AdaptiveResonance(
            input_min=input_min, input_max=input_max, probationary_period=probationary_period
        )
        self.restore(ResonanceEnsembleState())

    def _gate(self, x: float) -> float:
        if not self._recent:
            return self.gate_floor
        hist = np.fromiter(self._recent, dtype=np.float64, count=len(self._recent))
        z = abs(x - float(np.median(hist))) / (float(hist.std()) + 1e-9)
        return self.gate_floor + (1.0 - self.gate_floor) * min(1.0, z / self.gate_z)

    def _range_break(self, x: float) -> bool:
        span = self._hi - self._lo
        if not span > 0.0 or self._rest > 0 or self._n < self.probationary_period:
            return False
        tol = self.range_tolerance * span
        return bool(x > self._hi + tol or x < self._lo - tol)

    def score_one(self, x: float, ts: float | None = None) -> float:
        shape = self._resonance.score_one(x, ts)
        if shape > 0.0:
            shape *= self._gate(x)
        spatial = self.range_score if self._range_break(x) else 0.0
        return max(shape, spatial)

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        if self._n < self.probationary_period or not self._hi >= self._lo:
            return Explanation.warming(x)
        score = self.score_one(x, ts)
        tol = self.range_tolerance * (self._hi - self._lo)
        return Explanation(score, (self._lo + self._hi) / 2.0, self._lo - tol, self._hi + tol)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        x = float(x)
        broke = self._range_break(x)
        self._resonance.learn_one(x, ts)
        self._rest = self.range_rest if broke else max(0, self._rest - 1)
        self._recent.append(x)
        self._lo = min(self._lo, x)
        self._hi = max(self._hi, x)
        self._n += 1

    def snapshot(self) -> ResonanceEnsembleState:
        if self._n == 0:
            return ResonanceEnsembleState()
        return ResonanceEnsembleState(
            resonance=self._resonance.snapshot(),
            n=self._n,
            recent=tuple(self._recent),
            lo=self._lo,
            hi=self._hi,
            rest=self._rest,
        )

    def restore(self, state: ResonanceEnsembleState) -> None:
        self._resonance.restore(state.resonance)
        self._n = state.n
        self._recent = deque(state.recent, maxlen=self.gate_window)
        self._lo = state.lo
        self._hi = state.hi
        self._rest = state.rest
