"""KNN-CAD: conformal k-nearest-neighbour anomaly detection on lagged windows."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from vigil.detectors.base import Explanation


@dataclass(frozen=True, slots=True)
class KNNCADState:
    """Everything that affects :class:`KNNCAD`'s future scores, as plain values."""

    n: int = 0
    recent: tuple[float, ...] = ()
    training: tuple[tuple[float, ...], ...] = ()
    calibration: tuple[tuple[float, ...], ...] = ()
    calibration_scores: tuple[float, ...] = ()
    metric: tuple[tuple[float, ...], ...] = ()
    rest: int = 0


@dataclass(slots=True)
class _Step:
    """What learning one value would change (computed without changing anything)."""

    x: float
    n: int
    recent: tuple[float, ...]
    score: float = 0.0
    train_append: np.ndarray | None = None
    metric: np.ndarray | None = None
    calib_scores: list[float] | None = None
    calib_item: np.ndarray | None = None
    slide: bool = False
    rest: int | None = None


class KNNCAD:
    """Conformal rank of a window's k-nearest-neighbour distance (KNN-CAD).

    Score range: ``[0, 1]``; ``0.0`` during the first ``probationary_period`` values. Each
    value closes a window of the last ``dim`` values. Its non-conformity is the summed
    Mahalanobis distance to its ``k`` nearest windows in a training set (the metric is
    the inverse Gram matrix of the training set, refreshed twice per probationary
    period). The score is the fraction of recent non-conformities (the calibration set)
    below the current one. Training and calibration sets slide forward one window per
    value. After a score of at least ``alarm_level`` the detector rests for
    ``rest_fraction * probationary_period`` values, reporting ``rest_score``.

    Parameters
    ----------
    probationary_period
        Values used to build the first training set; sets the set sizes.
    dim
        Window length.
    k
        Neighbours in the non-conformity measure.
    alarm_level
        Score that starts a rest period.
    rest_fraction
        Length of the rest period, as a fraction of ``probationary_period``.
    rest_score
        Score reported while resting.

    Examples
    --------
    >>> import math, random
    >>> rng = random.Random(0)  # a little noise: a pure sine's windows span only 2 dims,
    >>> # and inverting their singular Gram matrix gives BLAS-dependent alarms
    >>> det = KNNCAD(probationary_period=100, dim=5, k=3)
    >>> xs = [math.sin(i / 3) + rng.gauss(0, 0.1) for i in range(400)] + [3.0]
    >>> scores = []
    >>> for x in xs:
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> scores[-1]
    1.0

    References
    ----------
    Burnaev, E. & Ishimtsev, V. (2016). Conformalized density- and distance-based
    anomaly detection in time-series data. arXiv:1608.04585.
    """

    _n: int
    _recent: tuple[float, ...]
    _training: np.ndarray
    _norms: np.ndarray | None
    _calibration: deque[np.ndarray]
    _calib_scores: list[float] | None
    _metric: np.ndarray
    _rest: int
    _memo: _Step | None

    def __init__(
        self,
        probationary_period: int = 750,
        dim: int = 19,
        k: int = 27,
        alarm_level: float = 0.9965,
        rest_fraction: float = 0.2,
        rest_score: float = 0.5,
    ) -> None:
        self.probationary_period = probationary_period
        self.dim = dim
        self.k = k
        self.alarm_level = alarm_level
        self.rest_fraction = rest_fraction
        self.rest_score = rest_score
        self.restore(KNNCADState())

    def _ncm(
        self, items: np.ndarray, train: np.ndarray, metric: np.ndarray, self_included: bool
    ) -> np.ndarray:
        """Sum of the ``k`` smallest Mahalanobis distances from each item to ``train``."""
        # (a - b)' M (a - b) = a'Ma + b'Mb - 2 a'Mb, without an items x train x dim array.
        am = items @ metric
        if train is self._training and metric is self._metric:
            if self._norms is None:
                self._norms = np.einsum("ij,jk,ik->i", train, metric, train)
            norms = self._norms
        else:
            norms = np.einsum("ij,jk,ik->i", train, metric, train)
        d = np.einsum("ij,ij->i", am, items)[:, None] + norms[None, :] - 2.0 * am @ train.T
        k = min(self.k + int(self_included), d.shape[1])
        total: np.ndarray = np.partition(d, k - 1, axis=1)[:, :k].sum(axis=1)
        return total

    def _plan(self, x: float) -> _Step:
        x = float(x)
        if self._memo is not None and self._memo.x == x:
            return self._memo
        n = self._n + 1
        recent = (*self._recent[1:], x) if len(self._recent) == self.dim else (*self._recent, x)
        step = _Step(x=x, n=n, recent=recent)
        prob = max(int(self.probationary_period), self.dim + 1)
        if len(recent) == self.dim:
            item = np.asarray(recent, dtype=np.float64)
            if n < prob:
                step.train_append = item
            else:
                train = self._training
                metric = self._metric
                ost = n % prob
                if ost == 0 or ost == prob // 2:
                    try:
                        metric = np.linalg.inv(train.T @ train)
                    except np.linalg.LinAlgError:
                        metric = self._metric  # singular: keep the previous metric
                    if not np.all(np.isfinite(metric)):
                        metric = self._metric
                    step.metric = metric
                calib = self._calib_scores
                if calib is None:
                    calib = self._ncm(train, train, metric, True).tolist()
                new = float(self._ncm(item[None, :], train, metric, False)[0])
                step.score = sum(1 for c in calib if c < new) / len(calib)
                step.calib_scores = [*calib[1:], new]
                step.calib_item = item
                step.slide = n >= 2 * prob
                if self._rest > 0:
                    step.rest = self._rest - 1
                    step.score = self.rest_score
                elif step.score >= self.alarm_level:
                    step.rest = int(prob * self.rest_fraction)
        self._memo = step
        return step

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self._plan(x).score

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        score = self.score_one(x, ts)
        if self._n + 1 < max(int(self.probationary_period), self.dim + 1):
            return Explanation.warming(x)
        return Explanation(score, x, -math.inf, math.inf)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        step = self._plan(x)
        self._n = step.n
        self._recent = step.recent
        if step.train_append is not None:
            self._training = np.vstack([self._training, step.train_append])
            self._norms = None
        if step.metric is not None:
            self._metric = step.metric
            self._norms = None
        if step.calib_scores is not None and step.calib_item is not None:
            self._calib_scores = step.calib_scores
            if step.slide:
                moved = self._calibration.popleft()
                self._training = np.vstack([self._training[1:], moved])
                if self._norms is not None:
                    norm = float(moved @ self._metric @ moved)
                    self._norms = np.append(self._norms[1:], norm)
            self._calibration.append(step.calib_item)
        if step.rest is not None:
            self._rest = step.rest
        self._memo = None

    def snapshot(self) -> KNNCADState:
        if self._n == 0:
            # Nothing learned: the empty state (restore() derives the identity metric).
            return KNNCADState()
        return KNNCADState(
            n=self._n,
            recent=tuple(self._recent),
            training=tuple(tuple(float(v) for v in t) for t in self._training.tolist()),
            calibration=tuple(tuple(float(v) for v in t) for t in self._calibration),
            calibration_scores=tuple(self._calib_scores or ()),
            metric=tuple(tuple(float(v) for v in row) for row in self._metric),
            rest=self._rest,
        )

    def restore(self, state: KNNCADState) -> None:
        self._n = state.n
        self._recent = tuple(state.recent)
        self._training = np.asarray(state.training, dtype=np.float64).reshape(-1, self.dim)
        self._norms = None
        self._calibration = deque(np.asarray(t, dtype=np.float64) for t in state.calibration)
        self._calib_scores = list(state.calibration_scores) if state.calibration_scores else None
        self._metric = (
            np.asarray(state.metric, dtype=np.float64) if state.metric else np.eye(self.dim)
        )
        self._rest = state.rest
        self._memo = None
