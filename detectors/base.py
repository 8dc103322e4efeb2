"""The detector interface every Vigil detector implements.

A detector sees one numeric series. It is scored before it learns (prequential, as in
river), and all its learned state can be snapshot into plain values and restored, so it
survives bytewax recovery. Hyperparameters are keyword constructor arguments stored
unchanged (scikit-learn's rule); learned state lives in private attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a value got its score: the expectation and band it was judged against.

    ``score`` is the detector's score (higher = more anomalous, ``0.0`` during warm-up);
    ``expected`` is what the detector predicted, and ``lower``/``upper`` the band outside
    which the value would count as anomalous at the detector's reference threshold.
    During warm-up, ``expected`` is the value itself and the band is infinite.
    """

    score: float
    expected: float
    lower: float
    upper: float

    @staticmethod
    def warming(x: float) -> Explanation:
        return Explanation(0.0, x, -math.inf, math.inf)


@runtime_checkable
class Detector(Protocol[S]):
    """What a detector must offer. ``ts`` is the event time (float epoch seconds)."""

    def score_one(self, x: float, ts: float | None = None) -> float:
        """Pure: how anomalous ``x`` is now. Higher is more anomalous; never NaN."""
        ...

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        """Pure: the score together with the expected value and band."""
        ...

    def learn_one(self, x: float, ts: float | None = None) -> None:
        """The only method that changes state."""
        ...

    def snapshot(self) -> S:
        """Frozen, picklable plain values holding everything that affects future scores."""
        ...

    def restore(self, state: S) -> None:
        """Replace the learned state by a snapshot."""
        ...
