"""Adaptive-resonance anomaly detector: novel shapes open new fuzzy-ART categories.

The series is downsampled, discretised and cut into short windows; each window is
described by a Haar wavelet transform of its shape plus its levels. A dual-vigilance fuzzy
ART network clusters these descriptions online. A window that matches no category well
enough (below the lower vigilance) opens a new cluster; that is the anomaly, and its score
says how far below the vigilance bounds the best match was. The vigilance adapts to the
recent match quality, and alarms are masked for a while after a new cluster or an alarm.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from vigil.detectors.base import Explanation


@dataclass(frozen=True, slots=True)
class AdaptiveResonanceState:
    """Everything that affects :class:`AdaptiveResonance`'s future scores, as plain values."""

    n: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    buffer: tuple[float, ...] = ()
    steps: int = 0
    moving_average: float = 0.0
    level_counts: tuple[int, ...] = ()
    median_level: int = 0
    below_median: int = 0
    above_median: int = 0
    recent: tuple[float, ...] = ()
    warmup: tuple[tuple[float, ...], ...] = ()
    weights: tuple[tuple[float, ...], ...] = ()
    rho_lb: float = 0.0
    rho_ub: float = 0.0
    match_sum: float = 0.0
    match_count: int = 0
    matches: tuple[float, ...] = ()
    match_gaps: tuple[float, ...] = ()
    last_alarm_step: int = 0
    last_alarm_match: float = 0.0
    last_update_step: int = 0
    mask_after_new: bool = False
    steps_without_new: int = 0
    alarm_matches: tuple[float, ...] = ()


def _haar(v: np.ndarray) -> np.ndarray:
    """Full orthonormal Haar transform: ``[approximation, coarsest detail, ..., finest]``."""
    out: list[np.ndarray] = []
    a = v
    while len(a) > 1 and len(a) % 2 == 0:
        even, odd = a[0::2], a[1::2]
        out.append((even - odd) / math.sqrt(2.0))
        a = (even + odd) / math.sqrt(2.0)
    return np.concatenate([a, *reversed(out)])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0:
        return 1.0 - nb
    if nb == 0.0:
        return 1.0 - na
    return float(a @ b) / (na * nb)


@dataclass(frozen=True, slots=True)
class _Change:
    """What learning one sample does to the network: add a category, or update some."""

    append: np.ndarray | None = None
    idx: np.ndarray | None = None
    rows: np.ndarray | None = None


class _FuzzyART:
    """Dual-vigilance fuzzy ART on complement-coded vectors (weights as rows)."""

    def __init__(self, dim: int, weights: np.ndarray | None = None) -> None:
        self.dim = dim
        self.w = np.zeros((0, 2 * dim)) if weights is None else weights
        self._size = self.w.sum(axis=1) if len(self.w) else np.zeros(0)

    def copy(self) -> _FuzzyART:
        return _FuzzyART(self.dim, self.w.copy())

    def match(self, xc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per category: choice value ``M``, energy similarity, and ``min(x, w)``."""
        em = np.minimum(self.w, xc)
        size = np.where(self._size == 0.0, 0.001, self._size)
        shape_sim = em.sum(axis=1) / size
        # "Energy": the newest level and its complement, compared on their own.
        e = self.dim - 1
        w_e = self.w[:, e] + self.w[:, -1]
        em_e = em[:, e] + em[:, -1]
        energy = np.divide(em_e, w_e, out=np.zeros_like(em_e), where=w_e > 0.0)
        return shape_sim**3 * energy**2, energy, em

    def train(
        self, x: np.ndarray, rho_lb: float, rho_ub: float, *, learn: bool = True
    ) -> tuple[bool, float, float, _Change | None]:
        """One sample: (opened a new cluster?, best match, its energy, change to apply)."""
        xc = np.concatenate([x, 1.0 - x])
        if len(self.w) == 0:
            # The first category matches everything weakly; the sample itself is skipped.
            return False, 0.0, 0.0, _Change(append=np.ones(2 * self.dim))
        m, energy, em = self.match(xc)
        best = int(np.argmax(m))
        best_m = float(m[best])
        best_e = float(energy[best]) if best_m > 0.0 else 0.0
        best_m = max(best_m, 0.0)
        if not learn:
            return True, best_m, best_e, None
        resonant = np.flatnonzero(m >= rho_ub)
        if len(resonant):
            return False, best_m, best_e, _Change(idx=resonant, rows=em[resonant])
        return best_m < rho_lb, best_m, best_e, _Change(append=xc)

    def apply(self, change: _Change | None) -> None:
        if change is None:
            return
        if change.append is not None:
            row = change.append
            self.w = np.vstack([self.w, row[None, :]])
            self._size = np.append(self._size, row.sum())
        else:
            idx, rows = change.idx, change.rows
            assert idx is not None and rows is not None
            self.w[idx] = rows
            self._size[idx] = rows.sum(axis=1)


@dataclass
class _Core:
    """Mutable working copy of the small (non-ART) state."""

    n: int
    lo: float
    hi: float
    buffer: deque[float]
    steps: int
    moving_average: float
    level_counts: list[int]
    median_level: int
    below_median: int
    above_median: int
    recent: deque[float]
    warmup: list[np.ndarray]
    rho_lb: float
    rho_ub: float
    match_sum: float
    match_count: int
    matches: deque[float]
    match_gaps: deque[float]
    last_alarm_step: int
    last_alarm_match: float
    last_update_step: int
    mask_after_new: bool
    steps_without_new: int
    alarm_matches: list[float] = field(default_factory=list)

    def copy(self) -> _Core:
        return _Core(
            self.n,
            self.lo,
            self.hi,
            deque(self.buffer, maxlen=self.buffer.maxlen),
            self.steps,
            self.moving_average,
            list(self.level_counts),
            self.median_level,
            self.below_median,
            self.above_median,
            deque(self.recent, maxlen=self.recent.maxlen),
            list(self.warmup),
            self.rho_lb,
            self.rho_ub,
            self.match_sum,
            self.match_count,
            deque(self.matches, maxlen=self.matches.maxlen),
            deque(self.match_gaps, maxlen=self.match_gaps.maxlen),
            self.last_alarm_step,
            self.last_alarm_match,
            self.last_update_step,
            self.mask_after_new,
            self.steps_without_new,
            list(self.alarm_matches),
        )


# A planned step: score, new small state, a replacement network (after warm-up) or None,
# and the change to apply to the network.
_PlanT = tuple[float, _Core, _FuzzyART | None, _Change | None]


class AdaptiveResonance:
    """Novelty of recent shapes under an adaptive fuzzy-ART clustering (ARTime-like).

    Score range: ``[0, 1]``; ``0.0`` except at an alarm. Values are downsampled by
    ``step = max(1, probationary_period // (window * windows_per_probation))`` rows (each
    step keeps the extreme farthest from a moving average, or the mean when the extreme is
    within ``spike_fraction`` of it), normalised by the input range, quantised to
    ``levels`` levels, and snapped to the running median level when within ``chomp`` of
    it. The last ``window`` values and their Haar transform form a feature vector. The
    network is first fitted on the probationary period (with vigilance found from it),
    then learns online. An alarm is raised when a feature vector matches no category
    above the lower vigilance and alarms are not masked; its score grows as the match
    falls below both vigilance bounds and as the newest level differs from the category's.

    Parameters
    ----------
    input_min, input_max
        Range used to normalise values (NAB lets detectors know each file's range). With
        ``None`` the range seen so far is used.
    probationary_period
        Rows to learn from before alarms; sets the downsampling and adaptation windows.
    window
        Downsampled values per feature vector (a power of two).
    windows_per_probation
        Feature windows that fit in the probationary period after downsampling.
    levels
        Quantisation levels of the normalised value.
    chomp
        Distance (in normalised units) within which a value snaps to the median level.
    spike_fraction
        An extreme within this fraction of the step mean is replaced by the mean.
    initial_rho
        Vigilance used to estimate the starting vigilance from the probationary data.
    rho_cap
        Upper limit of the upper vigilance.

    Examples
    --------
    >>> import math
    >>> det = AdaptiveResonance(input_min=-1.5, input_max=3.0, probationary_period=150)
    >>> xs = [math.sin(i / 4) for i in range(600)] + [2.5] * 20
    >>> scores = []
    >>> for x in xs:
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> max(scores[:600]) < max(scores[600:])
    True
    >>> all(0.0 <= s <= 1.0 for s in scores)
    True

    References
    ----------
    Hampton, M. (2021). ARTime: adaptive resonance theory for time series anomaly
    detection (the best NAB score at the time). Carpenter, G. A., Grossberg, S. & Rosen,
    D. B. (1991). Fuzzy ART. *Neural Networks* 4(6), 759-771.
    """

    _core: _Core
    _art: _FuzzyART
    _memo: tuple[float, _PlanT] | None

    def __init__(
        self,
        input_min: float | None = None,
        input_max: float | None = None,
        probationary_period: int = 750,
        window: int = 8,
        windows_per_probation: int = 13,
        levels: int = 80,
        chomp: float = 0.075,
        spike_fraction: float = 0.1,
        initial_rho: float = 0.8,
        rho_cap: float = 0.97,
    ) -> None:
        self.input_min = input_min
        self.input_max = input_max
        self.probationary_period = probationary_period
        self.window = window
        self.windows_per_probation = windows_per_probation
        self.levels = levels
        self.chomp = chomp
        self.spike_fraction = spike_fraction
        self.initial_rho = initial_rho
        self.rho_cap = rho_cap
        self.restore(AdaptiveResonanceState())

    # ------------------------------------------------------------------ derived sizes

    @property
    def _probation(self) -> int:
        p = int(self.probationary_period)
        return max(p - p % 2, 2)

    @property
    def _step(self) -> int:
        return max(1, self._probation // (self.window * self.windows_per_probation))

    @property
    def _trend(self) -> int:
        return max(self._probation // self._step, self.window + 2)

    @property
    def _mask(self) -> int:
        return int(self.window * 1.5)

    # ------------------------------------------------------------------ public API

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self._plan(x)[0]

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        # Novelty is about the shape of recent values, not a value band: the band is
        # unbounded, and the expectation is the downsampled moving average.
        score = self.score_one(x, ts)
        if self._core.steps == 0:
            return Explanation(score, x, -math.inf, math.inf)
        return Explanation(score, self._core.moving_average, -math.inf, math.inf)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        _, core, art, change = self._plan(x)
        self._core = core
        if art is not None:
            self._art = art
        self._art.apply(change)
        self._memo = None

    def snapshot(self) -> AdaptiveResonanceState:
        c = self._core
        if c.n == 0:
            # Nothing learned: the empty state (restore() derives the working buffers).
            return AdaptiveResonanceState()
        return AdaptiveResonanceState(
            n=c.n,
            lo=c.lo,
            hi=c.hi,
            buffer=tuple(c.buffer),
            steps=c.steps,
            moving_average=c.moving_average,
            level_counts=tuple(c.level_counts),
            median_level=c.median_level,
            below_median=c.below_median,
            above_median=c.above_median,
            recent=tuple(c.recent),
            warmup=tuple(tuple(float(v) for v in f) for f in c.warmup),
            weights=tuple(tuple(float(v) for v in row) for row in self._art.w),
            rho_lb=c.rho_lb,
            rho_ub=c.rho_ub,
            match_sum=c.match_sum,
            match_count=c.match_count,
            matches=tuple(c.matches),
            match_gaps=tuple(c.match_gaps),
            last_alarm_step=c.last_alarm_step,
            last_alarm_match=c.last_alarm_match,
            last_update_step=c.last_update_step,
            mask_after_new=c.mask_after_new,
            steps_without_new=c.steps_without_new,
            alarm_matches=tuple(c.alarm_matches),
        )

    def restore(self, state: AdaptiveResonanceState) -> None:
        s = state
        fresh = s.n == 0 and not s.level_counts
        step, trend, window = self._step, self._trend, self.window
        self._core = _Core(
            n=s.n,
            lo=s.lo,
            hi=s.hi,
            buffer=deque([0.0] * step if fresh else s.buffer, maxlen=step),
            steps=s.steps,
            moving_average=s.moving_average,
            level_counts=[0] * (self.levels + 1) if fresh else list(s.level_counts),
            median_level=s.median_level,
            below_median=s.below_median,
            above_median=s.above_median,
            recent=deque([0.0] * window if fresh else s.recent, maxlen=window),
            warmup=[np.asarray(f, dtype=np.float64) for f in s.warmup],
            rho_lb=s.rho_lb,
            rho_ub=s.rho_ub,
            match_sum=s.match_sum,
            match_count=s.match_count,
            matches=deque([1.0] * (trend // 2 + 1) if fresh else s.matches, maxlen=trend // 2 + 1),
            match_gaps=deque([0.0] * (trend + 1) if fresh else s.match_gaps, maxlen=trend + 1),
            last_alarm_step=s.last_alarm_step,
            last_alarm_match=s.last_alarm_match,
            last_update_step=s.last_update_step,
            mask_after_new=s.mask_after_new,
            steps_without_new=s.steps_without_new,
            alarm_matches=list(s.alarm_matches),
        )
        weights = np.asarray(s.weights, dtype=np.float64).reshape(-1, 4 * window)
        self._art = _FuzzyART(2 * window, weights)
        self._memo = None

    # ------------------------------------------------------------------ one row

    def _plan(self, x: float) -> _PlanT:
        """The score for ``x`` and the state changes learning it would make (no mutation).

        The plan is memoised so that the usual ``score_one(x)``, ``learn_one(x)`` pair
        runs the network once.
        """
        x = float(x)
        if self._memo is not None and self._memo[0] == x:
            return self._memo[1]
        c = self._core.copy()
        c.n += 1
        if self.input_min is None or self.input_max is None:
            c.lo, c.hi = min(c.lo, x), max(c.hi, x)
            lo, hi = c.lo, c.hi
        else:
            lo, hi = float(self.input_min), float(self.input_max)
        c.buffer.append(x)
        plan: _PlanT = (0.0, c, None, None)
        if c.n % self._step == 0:
            features = self._downsample(c, lo, hi)
            c.steps += 1
            plan = self._features(c, features, c.steps)
        self._memo = (x, plan)
        return plan

    def _downsample(self, c: _Core, lo: float, hi: float) -> np.ndarray:
        buf = np.fromiter(c.buffer, dtype=np.float64)
        mean, mx, mn = float(buf.mean()), float(buf.max()), float(buf.min())
        first = c.steps == 0
        if first:
            c.moving_average = mean
        c.moving_average = (c.moving_average + mean) / 2.0
        # Keep the extreme farthest from the moving average, so dips survive as well as spikes.
        ds = mn if abs(mx - c.moving_average) < abs(mn - c.moving_average) else mx
        if abs(ds - mean) < self.spike_fraction * mean:
            ds = mean
        ds -= lo
        if hi != lo:
            ds /= hi - lo
        level = min(max(round(ds * self.levels), 0), self.levels)
        ds = level / self.levels
        # Approximate running median over the histogram of levels.
        counts = c.level_counts
        counts[level] += 1
        half = (c.steps + 1) // 2
        if first:
            c.median_level = level
        if c.median_level > level:
            c.below_median += 1
        elif c.median_level < level:
            c.above_median += 1
        if half < c.above_median:
            c.below_median += counts[c.median_level]
            c.median_level += 1
            while c.median_level < self.levels and counts[c.median_level] == 0:
                c.median_level += 1
            c.above_median -= counts[c.median_level]
        elif half < c.below_median:
            c.above_median += counts[c.median_level]
            c.median_level -= 1
            while c.median_level > 0 and counts[c.median_level] == 0:
                c.median_level -= 1
            c.below_median -= counts[c.median_level]
        median = c.median_level / self.levels
        if abs(ds - median) < self.chomp:
            ds = median
        c.recent.append(ds)
        features = np.zeros(2 * self.window)
        if c.steps + 1 >= self.window:
            raw = np.fromiter(c.recent, dtype=np.float64)
            shape = raw - raw.min()
            if shape.max() != 0.0:
                shape /= shape.max()
            fw = _haar(shape)
            fw -= fw.min()
            if fw.max() != 0.0:
                fw /= fw.max()
            features = np.concatenate([fw, raw])
        return features

    def _features(self, c: _Core, f: np.ndarray, i: int) -> _PlanT:
        trend = self._trend
        if i < trend:
            c.warmup.append(f)
            return 0.0, c, None, None
        if i == trend:
            c.warmup.append(f)
            art = _FuzzyART(2 * self.window)
            rho = self._initial_rho(np.stack(c.warmup[self.window - 1 :]))
            c.rho_lb = c.rho_ub = rho
            for j, ff in enumerate(c.warmup, start=1):
                _, change = self._detect(c, art, ff, j)
                art.apply(change)
            c.warmup = []
            return 0.0, c, art, None
        score, change = self._detect(c, self._art, f, i)
        return score, c, None, change

    def _initial_rho(self, xs: np.ndarray) -> float:
        n = len(xs)
        sim = np.ones((n, n))
        for i in range(n):
            for j in range(i):
                sim[i, j] = sim[j, i] = _cosine(xs[i], xs[j])
        # Train on the least typical windows first, as the starting vigilance is meant to
        # be the match quality that the usual windows reach once the odd ones are stored.
        order = np.argsort(sim.sum(axis=0), kind="stable")
        art = _FuzzyART(2 * self.window)
        matches = []
        for k in order:
            _, best, _, change = art.train(xs[k], self.initial_rho, self.initial_rho)
            art.apply(change)
            matches.append(best)
        return float(np.mean(matches[self._trend // 2 - 1 :]))

    def _detect(
        self, c: _Core, art: _FuzzyART, f: np.ndarray, i: int
    ) -> tuple[float, _Change | None]:
        mask, trend = self._mask, self._trend
        update_after_alarm = i - c.last_alarm_step == mask
        update_for_trend = i - c.last_update_step >= trend // 2
        masked_by_alarm = i - c.last_alarm_step <= mask
        if i > trend + mask and c.mask_after_new and c.steps_without_new >= mask:
            c.mask_after_new = False
        if i < self.window:
            new, best, energy, change = art.train(f, c.rho_lb, c.rho_ub, learn=False)
            new = True
        else:
            new, best, energy, change = art.train(f, c.rho_lb, c.rho_ub)
        c.steps_without_new = 0 if new else c.steps_without_new + 1
        c.match_sum += best
        c.match_count += 1
        c.matches.append(best)
        c.match_gaps.append(c.rho_ub - best)
        if i - c.last_alarm_step < mask and c.alarm_matches:
            c.alarm_matches[-1] = min(c.alarm_matches[-1], best)
        masked = c.mask_after_new or masked_by_alarm
        scale = 0.9 if masked_by_alarm else 0.7
        far_below_last = best < c.last_alarm_match * scale
        score = 0.0
        if i > trend and new and (not masked or far_below_last):
            score = self._confidence(c, best, energy)
            c.alarm_matches.append(best)
            c.last_alarm_match = best
            c.last_alarm_step = i
        c.mask_after_new = new or c.mask_after_new
        if i > trend and (update_after_alarm or update_for_trend):
            self._adapt(c, i)
        return score, change

    def _adapt(self, c: _Core, i: int) -> None:
        """Move the vigilance bounds towards the recent match quality."""
        lowest = min(c.matches)
        ub = min(self.rho_cap, c.match_sum / c.match_count)
        lb = c.rho_lb
        if lb <= lowest:
            lb += (lowest - lb) * 0.19
        else:
            decr = 0.0
            if i > 2 * self._trend:
                gaps = [min(0.37, g) for g in c.match_gaps if g > 0.05]
                if gaps:
                    decr = sum(gaps) / len(gaps)
            lb -= max(0.01, decr) / 2.0
            if c.alarm_matches:
                lb = max(sum(c.alarm_matches) / len(c.alarm_matches), lb)
        c.rho_lb = min(ub, lb)
        c.rho_ub = ub
        c.last_update_step = i
        c.mask_after_new = True

    @staticmethod
    def _confidence(c: _Core, best: float, energy: float) -> float:
        m = min(0.999, best)
        above_ub = (c.rho_ub - m) / (1.0 - m)
        above_lb = (c.rho_lb - m) / (1.0 - m)
        s = 0.35 * above_ub + 0.65 * above_lb + 1.5 * (1.0 - energy)
        return round(min(1.0, max(0.0, s)), 6)
