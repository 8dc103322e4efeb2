"""Contextual anomaly detector: learned fact contexts predict the next quantised value.

Values are quantised to a few bits; each bit is a "fact". A *context* pairs a set of facts
that held at one step (the left side: the previous bits plus the ids of the contexts that
were active) with the bits that followed (the right side). Contexts are learned online by
crossing each step's facts with stored contexts, and the best-performing contexts whose
left side is fully present predict the next bits. A value is anomalous when it was not
predicted and few of the applicable contexts came true or many new ones had to be made.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from vigil.detectors.base import Explanation

# Ids of active contexts become facts too; this offset keeps them apart from value bits.
_NEURON = 1 << 31


@dataclass(frozen=True, slots=True)
class ContextualAnomalyState:
    """Everything that affects :class:`ContextualAnomaly`'s future scores, as plain values.

    ``lefts`` holds each left side's facts, ``rights`` each right side's facts, and
    ``contexts`` each context as ``(left id, right id, seen, hits, active, zero level)``.
    ``crossed`` is, per left side, how many of its facts the last left group held.
    """

    n: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    lefts: tuple[tuple[int, ...], ...] = ()
    rights: tuple[tuple[int, ...], ...] = ()
    contexts: tuple[tuple[int, int, int, int, int, bool], ...] = ()
    left_group: tuple[int, ...] = ()
    crossed: tuple[int, ...] = ()
    predicted: tuple[int, ...] = ()
    history: tuple[float, ...] = (1.0,)


class _Grow:
    """A numpy array that grows by doubling; ``view`` is the used part."""

    def __init__(self, shape: tuple[int, ...], dtype: type) -> None:
        self.a: np.ndarray = np.zeros((16, *shape), dtype=dtype)
        self.n = 0

    def append(self, row: object) -> None:
        if self.n == len(self.a):
            self.a = np.concatenate([self.a, np.zeros_like(self.a)])
        self.a[self.n] = row
        self.n += 1

    @property
    def view(self) -> np.ndarray:
        return self.a[: self.n]


@dataclass(slots=True)
class _Plan:
    """What one value does, computed without changing the detector."""

    x: float
    score: float
    raw: float
    facts: tuple[int, ...]
    right_count: np.ndarray
    new_zero: bool
    left_full: np.ndarray
    right_full: np.ndarray
    potentials: list[tuple[tuple[int, ...], tuple[int, ...]]]


class ContextualAnomaly:
    """Contextual anomaly detector, open-source-edition style (CAD OSE).

    Score range: ``[0, 1]``; ``0.0`` until one value has been seen and while resting. Each
    value is normalised by the input range and quantised to ``value_bits`` bits. If some
    bit was not predicted, the score is ``(1 - active share + new share) / 2``: the share
    of applicable contexts whose prediction did *not* come true, plus the share of
    candidate contexts that were new. After a score of at least ``base_threshold`` the
    detector reports ``0.0`` for ``rest_period`` values (the first ``rest_period`` values
    are a rest period too).

    Parameters
    ----------
    input_min, input_max
        Range used to quantise values (NAB lets detectors know each file's range). With
        ``None`` the range seen so far is used.
    probationary_period
        Sets the default rest period (a fifth of it).
    rest_period
        Values to stay silent after a strong score; ``None`` means
        ``probationary_period / 5``.
    base_threshold
        Score that starts a rest period.
    max_left_length
        Largest left side that a crossing may turn into a new context.
    max_active
        Most active contexts fed back as facts.
    value_bits
        Bits of the quantised value.

    Examples
    --------
    >>> det = ContextualAnomaly(input_min=0.0, input_max=7.0, probationary_period=50)
    >>> xs = [0.0, 2.0, 4.0, 6.0] * 60 + [0.0, 6.0]
    >>> scores = []
    >>> for x in xs:
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> max(scores[100:240]), scores[-1] > 0.5
    (0.0, True)

    References
    ----------
    Smirnov, M. (2016). Contextual Anomaly Detector, open source edition (CAD OSE),
    https://github.com/smirmik/CAD; second place in NAB's 2016 competition.
    """

    _n: int
    _lo: float
    _hi: float
    _lefts: list[tuple[int, ...]]
    _left_index: dict[tuple[int, ...], int]
    _left_by_neuron: dict[int, list[int]]
    _left_bits: _Grow
    _left_size: _Grow
    _rights: list[tuple[int, ...]]
    _right_index: dict[tuple[int, ...], int]
    _right_bits: _Grow
    _right_size: _Grow
    _ctx: _Grow
    _context_index: dict[tuple[int, int], int]
    _left_group: tuple[int, ...]
    _crossed: np.ndarray
    _predicted: frozenset[int]
    _history: deque[float]
    _memo: _Plan | None

    def __init__(
        self,
        input_min: float | None = None,
        input_max: float | None = None,
        probationary_period: int = 750,
        rest_period: int | None = None,
        base_threshold: float = 0.75,
        max_left_length: int = 7,
        max_active: int = 15,
        value_bits: int = 3,
    ) -> None:
        self.input_min = input_min
        self.input_max = input_max
        self.probationary_period = probationary_period
        self.rest_period = rest_period
        self.base_threshold = base_threshold
        self.max_left_length = max_left_length
        self.max_active = max_active
        self.value_bits = value_bits
        self.restore(ContextualAnomalyState())

    @property
    def _rest(self) -> int:
        if self.rest_period is not None:
            return max(1, int(self.rest_period))
        return max(1, int(self.probationary_period / 5.0))

    # ------------------------------------------------------------------ memory

    def _left_id(self, facts: tuple[int, ...]) -> int:
        lid = self._left_index.get(facts)
        if lid is None:
            lid = len(self._lefts)
            self._lefts.append(facts)
            self._left_index[facts] = lid
            row = np.zeros(2 * self.value_bits, dtype=bool)
            for f in facts:
                if f >= _NEURON:
                    self._left_by_neuron.setdefault(f - _NEURON, []).append(lid)
                else:
                    row[f] = True
            self._left_bits.append(row)
            self._left_size.append(len(facts))
        return lid

    def _right_id(self, facts: tuple[int, ...]) -> int:
        rid = self._right_index.get(facts)
        if rid is None:
            rid = len(self._rights)
            self._rights.append(facts)
            self._right_index[facts] = rid
            row = np.zeros(2 * self.value_bits, dtype=bool)
            row[list(facts)] = True
            self._right_bits.append(row)
            self._right_size.append(len(facts))
        return rid

    def _find(self, left: tuple[int, ...], right: tuple[int, ...]) -> int | None:
        lid, rid = self._left_index.get(left), self._right_index.get(right)
        if lid is None or rid is None:
            return None
        return self._context_index.get((lid, rid))

    def _add(self, left: tuple[int, ...], right: tuple[int, ...], zero: bool) -> bool:
        """Store a context; True if it is new. A re-seen zero-level context is marked."""
        lid, rid = self._left_id(left), self._right_id(right)
        cid = self._context_index.get((lid, rid))
        if cid is None:
            self._context_index[(lid, rid)] = self._ctx.n
            self._ctx.append((lid, rid, 0, 0, 0, int(zero)))
            return True
        if zero:
            self._ctx.a[cid, 5] = 1
        return False

    def _left_counts(self, group: tuple[int, ...]) -> np.ndarray:
        """Per left side, how many of its facts ``group`` holds."""
        bits = [f for f in group if f < _NEURON]
        counts: np.ndarray = self._left_bits.view[:, bits].sum(axis=1, dtype=np.int64)
        for f in group:
            if f >= _NEURON:
                lids = self._left_by_neuron.get(f - _NEURON)
                if lids:
                    np.add.at(counts, lids, 1)
        return counts

    # ------------------------------------------------------------------ one value

    def _facts(self, x: float) -> tuple[int, ...]:
        lo, hi = self._range(x)
        top = 2**self.value_bits - 1
        step = (hi - lo) / top if hi > lo else 1.0
        level = min(max(int((x - lo) / step), 0), top)
        return tuple(2 * bit + ((level >> bit) & 1) for bit in range(self.value_bits))

    def _range(self, x: float) -> tuple[float, float]:
        if self.input_min is not None and self.input_max is not None:
            return float(self.input_min), float(self.input_max)
        return min(self._lo, x), max(self._hi, x)

    def _plan(self, x: float) -> _Plan:
        x = float(x)
        if self._memo is not None and self._memo.x == x:
            return self._memo
        facts = self._facts(x)
        # Unpredicted bits, weighted by significance.
        error = sum(2 ** (f // 2) for f in facts if f not in self._predicted)
        new_zero = bool(self._left_group) and self._find(self._left_group, facts) is None

        right_count = self._right_bits.view[:, list(facts)].sum(axis=1, dtype=np.int64)
        right_full = right_count == self._right_size.view
        ctx = self._ctx.view
        lid, rid = ctx[:, 0], ctx[:, 1]
        n_left = len(self._crossed)
        crossed = np.zeros(self._left_bits.n, dtype=np.int64)
        crossed[:n_left] = self._crossed
        lcount = crossed[lid]
        lfull = (lcount == self._left_size.view[lid]) & (lcount > 0)
        rcount = right_count[rid]
        active = lfull & right_full[rid]
        selected = int(lfull.sum())
        active_share = int(active.sum()) / selected if selected else 0.0

        potentials: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        if new_zero:
            cand = (
                (ctx[:, 5] == 1)
                & (lcount > 0)
                & (rcount > 0)
                & (lcount <= self.max_left_length)
                & ~active
            )
            idx = np.flatnonzero(cand)
            if len(idx):
                # In order of left side, then of creation: the order contexts are stored.
                idx = idx[np.lexsort((idx, lid[idx]))]
                group = set(self._left_group)
                fset = set(facts)
                for c in idx.tolist():
                    lm = tuple(f for f in self._lefts[lid[c]] if f in group)
                    rm = tuple(f for f in self._rights[rid[c]] if f in fset)
                    potentials.append((lm, rm))

        candidates = set(potentials)
        if self._left_group:
            candidates.add((self._left_group, facts))
        new_share = 0.0
        if new_zero and candidates:
            fresh = {(self._left_group, facts)}
            for pot in potentials:
                if pot not in fresh and self._find(*pot) is None:
                    fresh.add(pot)
            new_share = len(fresh) / len(candidates)
        raw = (1.0 - active_share + new_share) / 2.0 if error > 0 else 0.0
        resting = max(self._history) >= self.base_threshold
        plan = _Plan(
            x,
            0.0 if resting else raw,
            raw,
            facts,
            right_count,
            new_zero,
            lfull,
            right_full,
            potentials,
        )
        self._memo = plan
        return plan

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self._plan(x).score

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        if self._n == 0:
            return Explanation.warming(x)
        return Explanation(self.score_one(x, ts), x, -math.inf, math.inf)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        p = self._plan(x)
        n_ctx = self._ctx.n  # contexts that applied; any made below come after
        if self._left_group:
            self._add(self._left_group, p.facts, zero=True)
        ctx = self._ctx.a[:n_ctx]
        rid = ctx[:, 1]
        lfull = p.left_full
        ctx[:, 2] += np.where(lfull, self._right_size.view[rid], 0)
        ctx[:, 3] += np.where(lfull, p.right_count[rid], 0)
        active = lfull & p.right_full[rid]
        ctx[:, 4] += active
        # The most reliable active contexts become facts for the next step.
        act = np.flatnonzero(active)
        if len(act) and self.max_active > 0:
            act = act[np.lexsort((act, ctx[act, 4]))][-self.max_active :]
        neurons = act.tolist() if self.max_active > 0 else []
        group = tuple(sorted(set(p.facts) | {_NEURON + c for c in neurons}))
        for left, right in p.potentials:
            self._add(left, right, zero=False)
        self._cross_left(group)
        self._left_group = group
        self._history.append(p.raw)
        self._n += 1
        self._lo, self._hi = min(self._lo, float(x)), max(self._hi, float(x))
        self._memo = None

    def _cross_left(self, group: tuple[int, ...]) -> None:
        """Match the new left group against stored left sides and predict the next bits."""
        counts = self._left_counts(group)
        self._crossed = counts
        ctx = self._ctx.view
        full = (counts == self._left_size.view) & (counts > 0)
        applies = np.flatnonzero(full[ctx[:, 0]])
        predicted: set[int] = set()
        if len(applies):
            seen = ctx[applies, 2].astype(np.float64)
            hits = ctx[applies, 3].astype(np.float64)
            weight = np.divide(hits, seen, out=np.zeros_like(hits), where=seen > 0)
            chosen = applies[weight == weight.max()]
            bits = self._right_bits.view[ctx[chosen, 1]].any(axis=0)
            predicted = set(np.flatnonzero(bits).tolist())
        self._predicted = frozenset(predicted)

    # ------------------------------------------------------------------ state

    def snapshot(self) -> ContextualAnomalyState:
        return ContextualAnomalyState(
            n=self._n,
            lo=self._lo,
            hi=self._hi,
            lefts=tuple(self._lefts),
            rights=tuple(self._rights),
            contexts=tuple(
                (int(c[0]), int(c[1]), int(c[2]), int(c[3]), int(c[4]), bool(c[5]))
                for c in self._ctx.view.tolist()
            ),
            left_group=self._left_group,
            crossed=tuple(int(c) for c in self._crossed),
            predicted=tuple(sorted(self._predicted)),
            history=tuple(self._history),
        )

    def restore(self, state: ContextualAnomalyState) -> None:
        self._n = state.n
        self._lo, self._hi = state.lo, state.hi
        width = 2 * self.value_bits
        self._lefts = []
        self._left_index = {}
        self._left_by_neuron = {}
        self._left_bits = _Grow((width,), bool)
        self._left_size = _Grow((), np.int64)
        for facts in state.lefts:
            self._left_id(tuple(facts))
        self._rights = []
        self._right_index = {}
        self._right_bits = _Grow((width,), bool)
        self._right_size = _Grow((), np.int64)
        for facts in state.rights:
            self._right_id(tuple(facts))
        self._ctx = _Grow((6,), np.int64)
        self._context_index = {}
        for c in state.contexts:
            self._context_index[(c[0], c[1])] = self._ctx.n
            self._ctx.append(tuple(int(v) for v in c))
        self._left_group = tuple(state.left_group)
        self._crossed = np.asarray(state.crossed, dtype=np.int64)
        self._predicted = frozenset(state.predicted)
        self._history = deque(state.history, maxlen=self._rest)
        self._memo = None


#: Former name, kept for snapshots pickled before the rename.
ContextualState = ContextualAnomalyState
