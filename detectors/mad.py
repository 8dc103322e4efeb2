"""Rolling MAD: a robust z-score against the median of a sliding window."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from vigil.detectors.base import Explanation

# 1 / Phi^-1(3/4): makes the MAD a consistent estimator of the standard deviation of
# normal data.
_MAD_TO_STD = 1.4826
# sqrt(pi / 2): the same for the mean absolute deviation, used when the MAD is 0.
_MEANAD_TO_STD = 1.2533


@dataclass(frozen=True, slots=True)
class RollingMADState:
    n: int = 0
    values: tuple[float, ...] = ()


class RollingMAD:
    """Robust z-score: distance from the window's median, in scaled MADs.

    The score is ``|x - median| / (1.4826 * MAD)`` over the last ``window`` values, so a
    few outliers in the window move neither the centre nor the scale much. When more than
    half the window is one value the MAD is 0; the scale then falls back to the mean
    absolute deviation (times 1.2533), and finally to ``min_std``.

    Score range: ``[0, inf)``; ``0.0`` during warm-up. For normal data the score is on the
    scale of a z-score.

    Parameters
    ----------
    window
        Number of most recent values the median and MAD are computed over.
    grace_period
        Number of values to learn before any non-zero score.
    band_z
        Width of the reported band, in scaled MADs.
    min_std
        Floor on the scale, so a flat series does not make every change infinitely
        anomalous.

    Examples
    --------
    >>> det = RollingMAD(window=10, grace_period=5)
    >>> for x in [10.0, 11.0, 9.0, 10.5, 9.5, 250.0, 10.0]:  # one outlier
    ...     det.learn_one(x)
    >>> e = det.explain_one(14.0)
    >>> e.expected, round(e.score, 2)
    (10.0, 5.4)
    >>> e.lower < e.expected < e.upper < 14.0
    True

    References
    ----------
    .. [1] Rousseeuw, P. J. and Croux, C. (1993). Alternatives to the median absolute
       deviation. Journal of the American Statistical Association, 88(424), 1273-1283.
    .. [2] Iglewicz, B. and Hoaglin, D. C. (1993). How to Detect and Handle Outliers. ASQC.
    """

    def __init__(
        self,
        window: int = 100,
        grace_period: int = 30,
        band_z: float = 4.0,
        min_std: float = 1e-9,
    ) -> None:
        self.window = window
        self.grace_period = grace_period
        self.band_z = band_z
        self.min_std = min_std
        self._state = RollingMADState()

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        s = self._state
        if s.n < self.grace_period or not s.values:
            return Explanation.warming(x)
        med = statistics.median(s.values)
        dev = [abs(v - med) for v in s.values]
        scale = _MAD_TO_STD * statistics.median(dev)
        if scale == 0.0:
            scale = _MEANAD_TO_STD * math.fsum(dev) / len(dev)
        scale = max(scale, self.min_std)
        width = self.band_z * scale
        return Explanation(abs(x - med) / scale, med, med - width, med + width)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self.explain_one(x, ts).score

    def learn_one(self, x: float, ts: float | None = None) -> None:
        s = self._state
        values = (*s.values, float(x))[-self.window :] if self.window > 0 else ()
        self._state = RollingMADState(s.n + 1, values)

    def snapshot(self) -> RollingMADState:
        return self._state

    def restore(self, state: RollingMADState) -> None:
        # A smaller window in today's config than in the snapshot keeps the newest values.
        if len(state.values) > self.window:
            kept = state.values[-self.window :] if self.window > 0 else ()
            state = RollingMADState(state.n, kept)
        self._state = state
