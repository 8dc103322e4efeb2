"""Anomaly likelihood: how unusual a detector's recent raw scores are, as a probability.

A post-processor in the manner of Numenta's anomaly likelihood. It wraps any detector,
keeps a sliding history of that detector's raw scores, models the moving average of those
scores as a normal distribution (re-estimated periodically), and reports how far in the
upper tail the current moving average lies.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from vigil.detectors.base import Detector, Explanation


@dataclass(frozen=True, slots=True)
class AnomalyLikelihoodState:
    """The wrapped detector's snapshot plus the likelihood estimator's own state.

    ``history`` holds ``(value, raw score)`` pairs; ``mean``/``std`` the fitted normal
    (``std == 0`` means not fitted yet); ``window``/``total`` the moving average of raw
    scores; ``recent_tails`` the last unfiltered tail probabilities.
    """

    inner: Any = None
    iteration: int = 0
    history: tuple[tuple[float, float], ...] = ()
    mean: float = 0.0
    std: float = 0.0
    window: tuple[float, ...] = ()
    total: float = 0.0
    recent_tails: tuple[float, ...] = ()


# Numenta's constants: a raw-score mean or variance below these is raised to them, so a
# detector that is almost always 0 does not turn its first blip into a certainty.
_MIN_MEAN = 0.03
_MIN_VARIANCE = 0.0003
# Values whose spread is below this are "flat": every score counts as unremarkable.
_FLAT_VARIANCE = 1.5e-5
# Tail probabilities: a second consecutive "red" value (< 1e-5) is reported as "yellow".
_RED = 1.0 - 0.99999
_YELLOW = 1.0 - 0.999
# Numenta's log scale: log(1 - L) / log(1e-10), so L = 1 - 1e-10 maps to 1.0.
_LOG_FLOOR = 1.0000000001
_LOG_SCALE = -23.02585084720009


def _tail(x: float, mean: float, std: float) -> float:
    """Normal tail probability beyond ``x`` on its side of the mean (Numenta's Q)."""
    if x < mean:
        x = 2.0 * mean - x
    # 1.4142 (not sqrt(2)) is the constant of the reference implementation.
    return 0.5 * math.erfc((x - mean) / std / 1.4142)


class _Ring:
    """The last ``size`` floats appended, oldest first, readable as one numpy array.

    A refit reads the whole history; a ring of float64 gives it without converting
    thousands of Python floats each time.
    """

    __slots__ = ("_buf", "_n", "_pos", "size")

    def __init__(self, size: int, values: Iterable[float] = ()) -> None:
        if size < 0:
            msg = "historic_window must be >= 0"
            raise ValueError(msg)
        self.size = size
        self._buf = np.empty(min(size, 256), dtype=np.float64)
        self._n = 0  # values held (at most size)
        self._pos = 0  # where the next value goes once full
        for v in values:
            self.append(v)

    def __len__(self) -> int:
        return self._n

    def append(self, v: float) -> None:
        n = self._n
        if n < self.size:
            if n == len(self._buf):
                grown = np.empty(min(self.size, 2 * n), dtype=np.float64)
                grown[:n] = self._buf
                self._buf = grown
            self._buf[n] = v
            self._n = n + 1
        elif self.size:
            self._buf[self._pos] = v
            self._pos = (self._pos + 1) % self.size

    def array(self) -> np.ndarray:
        """The values, oldest first (a view: do not modify)."""
        if self._n < self.size or not self._pos:
            return self._buf[: self._n]
        p = self._pos
        return np.concatenate((self._buf[p:], self._buf[:p]))


def log_likelihood(likelihood: float) -> float:
    """Numenta's log scale of a likelihood, in ``[0, 1]``.

    Parameters
    ----------
    likelihood
        A probability in ``[0, 1]``.

    Examples
    --------
    >>> round(log_likelihood(0.5), 4), round(log_likelihood(0.99999), 2)
    (0.0301, 0.5)
    """
    return min(1.0, max(0.0, math.log(_LOG_FLOOR - likelihood) / _LOG_SCALE))


class AnomalyLikelihood:
    """Probability that the recent average of a detector's raw scores is this high.

    Score range: ``[0, 1]``; ``0.5`` (or its log, ``0.0301``) until the detector has seen
    ``learning_period + estimation_samples`` values. Wraps ``detector``: each value is
    scored by the inner detector, the moving average of its last ``averaging_window``
    raw scores is compared with a normal fitted to the moving averages of the recent
    history (the last ``historic_window`` values, without the first ``learning_period``
    while they are still in the history; refitted every ``reestimation_period`` values),
    and the score is ``1 - tail probability``. A run of extreme values is reported at
    full strength only at its start. If the input values themselves are flat, every
    score is unremarkable.

    Unlike other detectors, this one takes a detector as a constructor parameter (as a
    scikit-learn meta-estimator does). The wrapper owns it: it scores and trains it, and
    its snapshot contains the inner detector's snapshot, so restoring restores both.

    Parameters
    ----------
    detector
        The detector whose raw scores are post-processed; higher = more anomalous.
    learning_period
        Values during which the inner detector is still settling; its scores then are
        left out of the first fits.
    estimation_samples
        Values after the learning period before the first fit.
    historic_window
        Length of the sliding history used for fitting.
    reestimation_period
        Refit every this many values.
    averaging_window
        Length of the moving average of raw scores.
    log_scale
        Report Numenta's log likelihood (``log(1 - L) / log(1e-10)``) instead of ``L``;
        it spreads the interesting range ``0.999...`` over ``[0, 1]``.

    Examples
    --------
    >>> from vigil.detectors.ewma import EWMAZScore
    >>> det = AnomalyLikelihood(EWMAZScore(alpha=0.1, grace_period=5), learning_period=20,
    ...                         estimation_samples=20, reestimation_period=10)
    >>> xs = [10.0 + 0.5 * ((i * 7) % 5 - 2) for i in range(200)] + [30.0] * 3
    >>> scores = []
    >>> for x in xs:
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> scores[0], max(scores[:200]) < 0.999 < scores[200]
    (0.5, True)

    References
    ----------
    Ahmad, S., Lavin, A., Purdy, S. & Agha, Z. (2017). Unsupervised real-time anomaly
    detection for streaming data. *Neurocomputing* 262, 134-147 (section on anomaly
    likelihood).
    """

    def __init__(
        self,
        detector: Detector[Any],
        *,
        learning_period: int = 288,
        estimation_samples: int = 100,
        historic_window: int = 8640,
        reestimation_period: int = 100,
        averaging_window: int = 10,
        log_scale: bool = False,
    ) -> None:
        self.detector = detector
        self.learning_period = learning_period
        self.estimation_samples = estimation_samples
        self.historic_window = historic_window
        self.reestimation_period = reestimation_period
        self.averaging_window = averaging_window
        self.log_scale = log_scale
        self._iteration = 0
        # The history of (value, raw score) pairs, kept as two parallel deques of floats
        # so a refit reads them straight into numpy.
        self._hist_x = _Ring(historic_window)
        self._hist_raw = _Ring(historic_window)
        self._dist: tuple[float, float] | None = None
        self._window: deque[float] = deque(maxlen=averaging_window)
        self._total = 0.0
        self._tails: deque[float] = deque(maxlen=averaging_window)
        self._memo: tuple[float, int, float, tuple[Any, ...]] | None = None

    # ------------------------------------------------------------------ estimation

    def _fit(self) -> tuple[tuple[float, float], list[float], float, list[float]]:
        """Fit the normal on the history: (mean, std), moving-average window and total,
        and the last unfiltered tail probabilities under the new fit."""
        n = self._iteration
        shifted = max(0, n - self._hist_raw.size)
        skip = min(n, max(0, self.learning_period - shifted))
        raw = self._hist_raw.array()
        w = self.averaging_window
        # Moving average restarted at the first record of the history, as the
        # reference implementation does.
        csum = np.cumsum(np.r_[0.0, raw])
        idx = np.arange(1, len(raw) + 1)
        lo = np.maximum(idx - w, 0)
        avg = (csum[idx] - csum[lo]) / (idx - lo)
        window = raw[-w:].tolist()
        total = float(raw[-w:].sum())
        if len(avg) <= skip:
            mean, std = 0.5, 1e3
        else:
            values = self._hist_x.array()
            mean = max(float(avg[skip:].mean()), _MIN_MEAN)
            std = math.sqrt(max(float(avg[skip:].var()), _MIN_VARIANCE))
            if float(values[skip:].var()) < _FLAT_VARIANCE:
                mean, std = 0.5, 1e3
        tails = [_tail(float(a), mean, std) for a in avg[-w:]]
        return (mean, std), window, total, tails

    def _plan(self, x: float) -> tuple[float, tuple[Any, ...]]:
        """The likelihood of ``x`` and what :meth:`learn_one` changes after it: ``(raw,
        dist, fit, total, tail)``, ``fit`` the refitted window and tails or ``None``, and
        ``tail`` ``None`` while learning. Nothing is mutated or copied."""
        x = float(x)
        if self._memo is not None and self._memo[0] == x and self._memo[1] == self._iteration:
            return self._memo[2], self._memo[3]
        raw = float(self.detector.score_one(x))
        it = self._iteration
        dist, total, fit, tail = self._dist, self._total, None, None
        if it < self.learning_period + self.estimation_samples:
            likelihood = 0.5
        else:
            window: Sequence[float]
            tails: Sequence[float]
            if dist is None or it % self.reestimation_period == 0:
                dist, window, total, tails = self._fit()
                fit = (window, tails)
            else:
                window, tails = self._window, self._tails
            # The moving average once ``raw`` joins the window (the oldest leaves a full one).
            n = len(window)
            if n == self.averaging_window:
                total -= window[0]
                n -= 1
            total += raw
            tail = _tail(total / (n + 1), *dist)
            # Only the first of consecutive extreme values keeps its full strength.
            repeat = tail <= _RED and bool(tails) and tails[-1] <= _RED
            reported = _YELLOW if repeat else tail
            likelihood = 1.0 - reported
        plan = (raw, dist, fit, total, tail)
        self._memo = (x, it, likelihood, plan)
        return likelihood, plan

    # ------------------------------------------------------------------ public API

    def score_one(self, x: float, ts: float | None = None) -> float:
        likelihood, _ = self._plan(x)
        return log_likelihood(likelihood) if self.log_scale else likelihood

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        inner = self.detector.explain_one(x, ts)
        return Explanation(self.score_one(x, ts), inner.expected, inner.lower, inner.upper)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        _, (raw, dist, fit, total, tail) = self._plan(x)
        self.detector.learn_one(x, ts)
        if tail is not None:
            if fit is not None:
                w = self.averaging_window
                self._window, self._tails = deque(fit[0], maxlen=w), deque(fit[1], maxlen=w)
            self._window.append(raw)
            self._tails.append(tail)
            self._dist = dist
            self._total = total
        self._hist_x.append(float(x))
        self._hist_raw.append(raw)
        self._iteration += 1
        self._memo = None

    def snapshot(self) -> AnomalyLikelihoodState:
        mean, std = self._dist if self._dist is not None else (0.0, 0.0)
        return AnomalyLikelihoodState(
            inner=self.detector.snapshot(),
            iteration=self._iteration,
            history=tuple(
                zip(self._hist_x.array().tolist(), self._hist_raw.array().tolist(), strict=True)
            ),
            mean=mean,
            std=std,
            window=tuple(self._window),
            total=self._total,
            recent_tails=tuple(self._tails),
        )

    def restore(self, state: AnomalyLikelihoodState) -> None:
        self.detector.restore(state.inner)
        self._iteration = state.iteration
        self._hist_x = _Ring(self.historic_window, (v for v, _ in state.history))
        self._hist_raw = _Ring(self.historic_window, (r for _, r in state.history))
        self._dist = (state.mean, state.std) if state.std > 0.0 else None
        self._window = deque(state.window, maxlen=self.averaging_window)
        self._total = state.total
        self._tails = deque(state.recent_tails, maxlen=self.averaging_window)
        self._memo = None
