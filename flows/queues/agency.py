"""Per-agency accounting of the public-service queue flow (no bytewax here).

Window counts (:class:`_Counts`, :class:`_Bucket`), the levels, trailing windows and
detector state of one agency (:class:`_Agency`), and the per-window
:class:`~vigil.records.QueueStats` built from them. Its own module so the
:class:`~vigil.flows.queues.state.QueueMonitor` keeps only request, timer and window logic;
the classes stay importable from :mod:`vigil.flows.queues.state` for recovery snapshots.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from datasketches import kll_floats_sketch
from vigil.detectors.calendar import CalendarBaselineState
from vigil.flows.queues.baselines import SlotBaseline, StepCUSUM
from vigil.flows.queues.config import ServiceQueuesConfig

from vigil.records import QueueStats

_KLL_K = 200  # ~1.3% normalized rank error, a few KiB per non-empty sketch
_NAN = float("nan")
_QS = [0.5, 0.9, 0.99]


def _stats_builder() -> Callable[..., QueueStats]:
    """A faster ``QueueStats(...)`` (positional, same defaults) for the ~46,000 a quarter of
    Boston 311 emits: the dataclass's frozen ``__init__`` goes through
    ``object.__setattr__`` per field; calling the slot descriptors directly is about a
    third cheaper. Checked at import against the record's fields, so a new field or a
    ``__post_init__`` fails loudly here rather than building a wrong record."""
    names = tuple(f.name for f in dataclasses.fields(QueueStats))
    expect = "ts window_s agency service arrivals completions backlog overdue breaches met"
    expect += " on_time_rate p50_s p90_s p99_s trail_s channels"
    if names != tuple(expect.split()) or hasattr(QueueStats, "__post_init__"):
        msg = f"QueueStats fields changed: {names}; update agency._stats_builder"
        raise RuntimeError(msg)
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15 = (
        getattr(QueueStats, n).__set__ for n in names
    )
    new = object.__new__

    def build(
        ts: float,
        window_s: float,
        agency: str,
        service: str,
        arrivals: int,
        completions: int,
        backlog: int,
        overdue: int,
        breaches: int,
        met: int,
        on_time_rate: float,
        p50_s: float,
        p90_s: float,
        p99_s: float,
        trail_s: float = 86400.0,
        channels: tuple[tuple[str, int], ...] = (),
    ) -> QueueStats:
        o: QueueStats = new(QueueStats)
        s0(o, ts)
        s1(o, window_s)
        s2(o, agency)
        s3(o, service)
        s4(o, arrivals)
        s5(o, completions)
        s6(o, backlog)
        s7(o, overdue)
        s8(o, breaches)
        s9(o, met)
        s10(o, on_time_rate)
        s11(o, p50_s)
        s12(o, p90_s)
        s13(o, p99_s)
        s14(o, trail_s)
        s15(o, channels)
        return o

    return build


_new_stats = _stats_builder()


def _kll() -> kll_floats_sketch:
    return kll_floats_sketch(_KLL_K)


class _Counts:
    """What happened to one agency (or one of its services) in one window."""

    __slots__ = (
        "arrivals",
        "breaches",
        "channels",
        "completions",
        "judged",
        "met",
        "on_time",
        "proc",
    )

    def __init__(self) -> None:
        self.arrivals = 0
        self.completions = 0
        self.on_time = 0
        self.judged = 0  # completions with a verdict (an on-time flag or a deadline)
        self.met = 0  # deadlines met (closed on time, had a deadline)
        self.breaches = 0  # deadlines passed while open
        self.channels: dict[str, int] | None = None
        self.proc: kll_floats_sketch | None = None

    def add_proc(self, seconds: float) -> None:
        if self.proc is None:
            self.proc = _kll()
        self.proc.update(seconds)

    def __getstate__(self) -> tuple[Any, ...]:
        proc = self.proc.serialize() if self.proc is not None else None
        chans = tuple(self.channels.items()) if self.channels else None
        return (
            *(self.arrivals, self.completions, self.on_time, self.met, self.breaches),
            *(chans, proc, self.judged),
        )

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        self.arrivals, self.completions, self.on_time, self.met, self.breaches = st[:5]
        self.channels = dict(st[5]) if st[5] else None
        self.proc = kll_floats_sketch.deserialize(st[6]) if st[6] is not None else None
        # Snapshots from before verdicts were counted judged every completion.
        self.judged = st[7] if len(st) > 7 else self.completions


class _Bucket:
    __slots__ = ("agency", "services")

    def __init__(self) -> None:
        self.agency = _Counts()
        self.services: dict[str, _Counts] = {}

    def svc(self, name: str) -> _Counts:
        c = self.services.get(name)
        if c is None:
            c = self.services[name] = _Counts()
        return c

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.agency, self.services)

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        self.agency, self.services = st


class _ServiceBaselines:
    """The :class:`~vigil.detectors.calendar.CalendarBaseline` of every service of an
    agency, as one matrix per field, learning a day at a time.

    Each service learns its count so far today at every window; the values of one local
    day go to distinct slots, so they are kept pending and learned together when the day
    ends (or before a slot is read again, or a snapshot is taken), with exactly the
    arithmetic of ``CalendarBaseline.learn_one``. Reading a slot is what the arrival rule
    does at each window, and only for the services that could pass its thresholds
    (:meth:`drop_candidates`). The snapshot is the same mapping of service to
    ``CalendarBaselineState`` as one baseline per service gave.
    """

    __slots__ = (
        "_buf",
        "_cand",
        "_pending",
        "_pending_slots",
        "alpha",
        "band_z",
        "clip_z",
        "cum",
        "grace",
        "index",
        "mean",
        "min_count",
        "min_std",
        "n",
        "names",
        "over",
        "seen",
        "slots",
        "var",
    )

    def __init__(self, slots: int, alpha: float, grace: int) -> None:
        self.slots, self.alpha, self.grace = slots, alpha, grace
        self.band_z, self.min_std = 4.0, 1.0  # CalendarBaseline's defaults
        self.clip_z: float | None = None
        self.min_count: float = 0.0
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.n = np.zeros((8, slots), dtype=np.int64)
        self.mean = np.zeros((8, slots))
        self.var = np.zeros((8, slots))
        self.cum = np.zeros(8)  # count so far today, per row
        self.over: set[int] | None = set()  # rows whose count today reached the surge minimum
        self.seen = -1  # how many services of the agency's levels were looked at
        # Pending slots and row counts; column j of _buf is the cum of the j-th pending
        # slot (rows not added yet are 0 there, as in cum).
        self._pending: list[tuple[int, int]] = []
        self._buf = np.zeros((8, slots))
        self._pending_slots: set[int] = set()
        self._cand: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str) -> int:
        i = len(self.names)
        if i == len(self.cum):
            grow = max(8, i)
            self.n = np.vstack([self.n, np.zeros((grow, self.slots), dtype=np.int64)])
            self.mean = np.vstack([self.mean, np.zeros((grow, self.slots))])
            self.var = np.vstack([self.var, np.zeros((grow, self.slots))])
            self.cum = np.concatenate([self.cum, np.zeros(grow)])
            self._buf = np.vstack([self._buf, np.zeros((grow, self.slots))])
        self.names.append(name)
        self.index[name] = i
        return i

    def new_day(self) -> None:
        self.flush()
        self.cum[:] = 0.0
        self.over = set()

    def record(self, slot: int, clip_z: float, min_count: float) -> None:
        """Learn every service's count so far today for ``slot`` (deferred)."""
        if slot in self._pending_slots:
            self.flush()  # the slot came twice in a day (DST): learn in order
        self.clip_z = clip_z
        self.min_count = min_count
        self._buf[:, len(self._pending)] = self.cum
        self._pending.append((slot, len(self.names)))
        self._pending_slots.add(slot)

    def flush(self) -> None:
        if not self._pending:
            return
        pend, self._pending = self._pending, []
        self._pending_slots = set()
        rows = max(k for _s, k in pend)
        if rows == 0:  # no service yet: nothing to learn, no candidate
            self._cand.update({p[0]: [] for p in pend})
            return
        first_col = pend[0][0]
        cols: Any
        if all(p[0] == first_col + j for j, p in enumerate(pend)):
            cols = slice(first_col, first_col + len(pend))  # one local day: a view
        else:
            cols = np.array([p[0] for p in pend], dtype=np.int64)
        x = self._buf[:rows, : len(pend)]
        if all(p[1] == rows for p in pend):
            valid = None
        else:
            valid = np.zeros((rows, len(pend)), dtype=bool)
            for j, (_s, k) in enumerate(pend):
                valid[:k, j] = True
        n = self.n[:rows, cols]
        m = self.mean[:rows, cols]
        v = self.var[:rows, cols]
        if self.clip_z is not None:
            std = np.maximum(np.maximum(np.sqrt(v), np.sqrt(np.maximum(m, 0.0))), self.min_std)
            w = self.clip_z * std
            x = np.where(n >= self.grace, np.minimum(np.maximum(x, m - w), m + w), x)
        a = np.maximum(self.alpha, 1.0 / (n + 1))
        diff = x - m
        incr = a * diff
        first = n == 0
        new_m = np.where(first, x, m + incr)
        new_v = np.where(first, 0.0, (1 - a) * (v + diff * incr))
        if valid is None:
            self.mean[:rows, cols] = new_m
            self.var[:rows, cols] = new_v
            self.n[:rows, cols] = n + 1
        else:
            self.mean[:rows, cols] = np.where(valid, new_m, m)
            self.var[:rows, cols] = np.where(valid, new_v, v)
            self.n[:rows, cols] = n + valid
        # The services that may drop at these slots from now on (see drop_candidates).
        k = len(self.names)
        hit = (self.n[:k, cols] >= self.grace) & (self.mean[:k, cols] >= self.min_count)
        cand: dict[int, list[int]] = {p[0]: [] for p in pend}
        js, rs = np.nonzero(hit.T)
        for j, r in zip(js.tolist(), rs.tolist(), strict=True):
            cand[pend[j][0]].append(r)
        self._cand.update(cand)

    def drop_candidates(self, slot: int, min_count: float) -> list[int]:
        """Rows warm at ``slot`` whose expected count is at least ``min_count``."""
        if slot in self._pending_slots:
            self.flush()
        if min_count != self.min_count:
            self._cand, self.min_count = {}, min_count
        c = self._cand.get(slot)
        if c is None:
            k = len(self.names)
            hit = (self.n[:k, slot] >= self.grace) & (self.mean[:k, slot] >= min_count)
            c = self._cand[slot] = np.flatnonzero(hit).tolist()
        return c

    def explain(self, i: int, slot: int, x: float) -> tuple[float, float, float, float]:
        """``CalendarBaseline.explain_one`` of row ``i``: score, expected, lower, upper."""
        if slot in self._pending_slots:
            self.flush()
        if self.n[i, slot] < self.grace:
            return 0.0, x, -math.inf, math.inf
        mean = float(self.mean[i, slot])
        std = max(math.sqrt(float(self.var[i, slot])), math.sqrt(max(mean, 0.0)), self.min_std)
        w = self.band_z * std
        return (x - mean) / std, mean, mean - w, mean + w

    def states(self) -> dict[str, CalendarBaselineState]:
        self.flush()
        return {
            name: CalendarBaselineState(
                tuple(self.n[i].tolist()), tuple(self.mean[i].tolist()), tuple(self.var[i].tolist())
            )
            for i, name in enumerate(self.names)
        }

    def restore(self, states: dict[str, Any], cum: dict[str, int]) -> None:
        for name, st in states.items():
            i = self.add(name)
            if len(st.n) == self.slots:  # as CalendarBaseline.restore
                self.n[i] = st.n
                self.mean[i] = st.mean
                self.var[i] = st.var
            self.cum[i] = float(cum.get(name, 0))
        self.over = None  # recomputed with the rule's minimum (see rules.py)


class _Agency:
    """Levels, open windows, trailing windows and detector state of one agency."""

    __slots__ = (
        "active",
        "arr_base",
        "backlog",
        "backlog_hist",
        "buckets",
        "cum",
        "cusum",
        "net_base",
        "net_hist",
        "office",
        "overdue",
        "signal_ts",
        "svc_base",
        "svc_cum",
        "svc_levels",
        "today",
        "trail",
        "trail_cache",
        "trail_decided",
        "trail_done",
        "usual_comp",
    )

    def __init__(self, slots: int, cfg: ServiceQueuesConfig) -> None:
        r = cfg.rules
        self.backlog = 0
        self.overdue = 0
        self.svc_levels: dict[str, list[int]] = {}  # service -> [backlog, overdue]
        self.buckets: dict[float, _Bucket] = {}
        self.trail: deque[tuple[float, _Bucket]] = deque()
        self.trail_decided = [0, 0]  # deadlines missed and met over the trail
        # Trail figures of the agency (None) and its services, until the trail changes.
        self.trail_cache: dict[str | None, tuple[int, int, Any]] = {}
        # The counts with completions of the agency (None) and of each service over the
        # trail, oldest first: the trail figures read these, not every window's bucket.
        self.trail_done: dict[str | None, deque[_Counts]] = {}
        self.today: str = ""
        self.cum = 0
        self.svc_cum: dict[str, int] = {}
        self.arr_base = SlotBaseline(
            slots, alpha=r.arrivals.alpha, grace_period=r.arrivals.grace_days
        )
        self.svc_base = _ServiceBaselines(slots, r.arrivals.alpha, r.arrivals.grace_days)
        self.net_base = SlotBaseline(slots, alpha=r.arrivals.alpha, grace_period=1)
        self.cusum = StepCUSUM(
            k=r.backlog.k,
            h=r.backlog.h,
            alpha=0.05,
            grace_period=r.backlog.grace_period,
            min_std=0.5,
        )
        per_day = slots // 3  # three day types
        self.backlog_hist: deque[int] = deque(maxlen=per_day + 1)
        self.net_hist: deque[float] = deque(maxlen=per_day)  # expected net inflow per window
        self.office: deque[tuple[int, int]] = deque()
        # EWMA of completions per office-hour window; < 0 while there is none yet.
        self.usual_comp: float = -1.0
        self.active: dict[str, float] = {}  # condition -> event time it started
        self.signal_ts = -math.inf  # last CUSUM signal of the net inflow

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.backlog,
            self.overdue,
            self.svc_levels,
            self.buckets,
            tuple(self.trail),
            self.today,
            self.cum,
            self.svc_cum,
            self.arr_base.snapshot(),
            self.svc_base.states(),
            self.net_base.snapshot(),
            self.cusum.snapshot(),
            tuple(self.backlog_hist),
            tuple(self.net_hist),
            tuple(self.office),
            self.usual_comp,
            self.active,
            self.arr_base.slots,
            self.arr_base.alpha,
            self.arr_base.grace_period,
            self.cusum.k,
            self.cusum.h,
            self.cusum.grace_period,
            self.signal_ts,
        )

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        (
            self.backlog,
            self.overdue,
            self.svc_levels,
            self.buckets,
            trail,
            self.today,
            self.cum,
            self.svc_cum,
            arr,
            svc,
            net,
            cus,
            bh,
            nh,
            office,
            self.usual_comp,
            self.active,
            slots,
            alpha,
            grace,
            k,
            h,
            cgrace,
            self.signal_ts,
        ) = st
        self.trail = deque(trail)
        self.trail_cache = {}
        self.trail_done = {}
        for _s, b in self.trail:
            _index_done(self.trail_done, b)
        self.trail_decided = [
            sum(b.agency.breaches for _s, b in self.trail),
            sum(b.agency.met for _s, b in self.trail),
        ]
        self.arr_base = SlotBaseline(slots, alpha=alpha, grace_period=grace)
        self.arr_base.restore(arr)
        self.svc_base = _ServiceBaselines(slots, alpha, grace)
        self.svc_base.restore(svc, self.svc_cum)
        self.net_base = SlotBaseline(slots, alpha=alpha, grace_period=1)
        self.net_base.restore(net)
        self.cusum = StepCUSUM(k=k, h=h, alpha=0.05, grace_period=cgrace, min_std=0.5)
        self.cusum.restore(cus)
        self.backlog_hist = deque(bh, maxlen=slots // 3 + 1)
        self.net_hist = deque(nh, maxlen=slots // 3)
        self.office = deque(office)


def window_stats(
    name: str, a: _Agency, bk: _Bucket, end: float, w: float, trail_n: int, out: list[Any]
) -> None:
    """Append the :class:`QueueStats` of the agency and its active services for one window
    to ``out``."""
    trail_s = trail_n * w
    c = bk.agency
    cache = a.trail_cache
    tot = cache.get(None)
    if tot is None:
        tot = cache[None] = trail_figures(a, None)
    comp, on_time, q = tot
    out.append(
        _new_stats(
            end,
            w,
            name,
            "",
            c.arrivals,
            c.completions,
            a.backlog,
            a.overdue,
            c.breaches,
            c.met,
            on_time / comp if comp else _NAN,  # comp: completions with a verdict
            q[0],
            q[1],
            q[2],
            trail_s,
            tuple(sorted(c.channels.items())) if c.channels else (),
        )
    )
    levels = a.svc_levels
    for svc, sc in bk.services.items():
        # A service's levels change only through its own activity (arrivals,
        # completions, breaches) or expiry, so a quiet service is not re-emitted: its
        # gauges keep their value. This keeps the cost per window to active services.
        lv = levels[svc]
        tot = cache.get(svc)
        if tot is None:
            tot = cache[svc] = trail_figures(a, svc)
        s_comp, s_on, q = tot
        out.append(
            _new_stats(
                end,
                w,
                name,
                svc,
                sc.arrivals,
                sc.completions,
                lv[0],
                lv[1],
                sc.breaches,
                sc.met,
                s_on / s_comp if s_comp else _NAN,
                q[0],
                q[1],
                q[2],
                trail_s,
            )
        )


def _index_done(done: dict[str | None, deque[_Counts]], bk: _Bucket) -> None:
    """Add the counts of ``bk`` (newest in the trail) that have completions."""
    if bk.agency.completions:
        d = done.get(None)
        if d is None:
            d = done[None] = deque()
        d.append(bk.agency)
        for svc, sc in bk.services.items():
            if sc.completions:
                d = done.get(svc)
                if d is None:
                    d = done[svc] = deque()
                d.append(sc)


def trail_push(a: _Agency, start: float, bk: _Bucket, trail_n: int) -> None:
    """``bk``, the window from ``start``, enters the trail; the oldest beyond ``trail_n``
    leave it. Keeps the deadlines decided, the index of completions and the cache."""
    trail, dec = a.trail, a.trail_decided
    trail.append((start, bk))
    c = bk.agency
    dec[0] += c.breaches
    dec[1] += c.met
    if c.completions:
        _trail_moved(a, bk)
        _index_done(a.trail_done, bk)
    while len(trail) > trail_n:
        gone = trail.popleft()[1]
        g = gone.agency
        dec[0] -= g.breaches
        dec[1] -= g.met
        if g.completions:
            _trail_moved(a, gone)
            done = a.trail_done
            done[None].popleft()  # the oldest entries are the leaving window's
            for svc, sc in gone.services.items():
                if sc.completions:
                    d = done[svc]
                    d.popleft()
                    if not d:
                        del done[svc]


def _trail_moved(a: _Agency, bk: _Bucket) -> None:
    """``bk`` entered or left the trail: forget the figures its completions change."""
    cache = a.trail_cache
    cache.pop(None, None)
    for svc, sc in bk.services.items():
        if sc.completions:
            cache.pop(svc, None)


def trail_figures(a: _Agency, svc: str | None) -> tuple[int, int, Any]:
    """Completions with a verdict, on-time completions and processing-time quantiles
    (p50, p90, p99) of the agency (``svc`` None) or a service over the trail."""
    comp, on_time, sk = trail_totals(a, svc)
    q = sk.get_quantiles(_QS) if sk is not None else (_NAN, _NAN, _NAN)
    return comp, on_time, q


def trail_totals(a: _Agency, svc: str | None) -> tuple[int, int, kll_floats_sketch | None]:
    """Completions with a verdict (an on-time flag or a deadline), on-time completions
    and merged processing times over the trail: no deadline source, no on-time rate."""
    comp = on_time = 0
    merged: kll_floats_sketch | None = None
    for c in a.trail_done.get(svc, ()):
        comp += c.judged
        on_time += c.on_time
        if c.proc is not None:
            if merged is None:
                merged = _kll()
            merged.merge(c.proc)
    return comp, on_time, merged
