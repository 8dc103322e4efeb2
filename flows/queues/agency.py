"""Per-agency accounting of the public-service queue flow (no bytewax here).

Window counts (:class:`_Counts`, :class:`_Bucket`), the levels, trailing windows and
detector state of one agency (:class:`_Agency`), and the per-window
:class:`~vigil.records.QueueStats` built from them. Its own module so the
:class:`~vigil.flows.queues.state.QueueMonitor` keeps only request, timer and window logic;
the classes stay importable from :mod:`vigil.flows.queues.state` for recovery snapshots.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from datasketches import kll_floats_sketch
from vigil.detectors.calendar import CalendarBaseline
from vigil.detectors.cusum import CUSUM
from vigil.flows.queues.config import ServiceQueuesConfig

from vigil.records import QueueStats

_KLL_K = 200  # ~1.3% normalized rank error, a few KiB per non-empty sketch
_NAN = float("nan")


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
        "usual_comp",
    )

    def __init__(self, slots: int, cfg: ServiceQueuesConfig) -> None:
        r = cfg.rules
        self.backlog = 0
        self.overdue = 0
        self.svc_levels: dict[str, list[int]] = {}  # service -> [backlog, overdue]
        self.buckets: dict[float, _Bucket] = {}
        self.trail: deque[tuple[float, _Bucket]] = deque()
        self.today: str = ""
        self.cum = 0
        self.svc_cum: dict[str, int] = {}
        self.arr_base = CalendarBaseline(
            slots, alpha=r.arrivals.alpha, grace_period=r.arrivals.grace_days
        )
        self.svc_base: dict[str, CalendarBaseline] = {}
        self.net_base = CalendarBaseline(slots, alpha=r.arrivals.alpha, grace_period=1)
        self.cusum = CUSUM(
            k=r.backlog.k,
            h=r.backlog.h,
            alpha=0.05,
            grace_period=r.backlog.grace_period,
            min_std=0.5,
        )
        self.backlog_hist: deque[int] = deque()
        self.net_hist: deque[float] = deque()  # expected net inflow per window
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
            {k: b.snapshot() for k, b in self.svc_base.items()},
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
        self.arr_base = CalendarBaseline(slots, alpha=alpha, grace_period=grace)
        self.arr_base.restore(arr)
        self.svc_base = {}
        for name, s in svc.items():
            b = CalendarBaseline(slots, alpha=alpha, grace_period=grace)
            b.restore(s)
            self.svc_base[name] = b
        self.net_base = CalendarBaseline(slots, alpha=alpha, grace_period=1)
        self.net_base.restore(net)
        self.cusum = CUSUM(k=k, h=h, alpha=0.05, grace_period=cgrace, min_std=0.5)
        self.cusum.restore(cus)
        self.backlog_hist, self.net_hist, self.office = deque(bh), deque(nh), deque(office)


def window_stats(
    name: str, a: _Agency, bk: _Bucket, end: float, w: float, trail_n: int
) -> list[QueueStats]:
    """The :class:`QueueStats` of the agency and its active services for one window."""
    trail_s = trail_n * w
    out: list[QueueStats] = []
    c = bk.agency
    comp, on_time, sk = trail_totals(a, None)
    q = sk.get_quantiles([0.5, 0.9, 0.99]) if sk is not None else (_NAN, _NAN, _NAN)
    out.append(
        QueueStats(
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
    for svc, sc in bk.services.items():
        # A service's levels change only through its own activity (arrivals,
        # completions, breaches) or expiry, so a quiet service is not re-emitted: its
        # gauges keep their value. This keeps the cost per window to active services.
        lv = a.svc_levels[svc]
        comp, on_time, sk = trail_totals(a, svc)
        q = sk.get_quantiles([0.5, 0.9, 0.99]) if sk is not None else (_NAN, _NAN, _NAN)
        out.append(
            QueueStats(
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
                on_time / comp if comp else _NAN,
                q[0],
                q[1],
                q[2],
                trail_s,
            )
        )
    return out


def trail_totals(a: _Agency, svc: str | None) -> tuple[int, int, kll_floats_sketch | None]:
    """Completions with a verdict (an on-time flag or a deadline), on-time completions
    and merged processing times over the trail: no deadline source, no on-time rate."""
    comp = on_time = 0
    merged: kll_floats_sketch | None = None
    for _s, b in a.trail:
        c = b.agency if svc is None else b.services.get(svc)
        if c is None or not c.completions:
            continue
        comp += c.judged
        on_time += c.on_time
        if c.proc is not None:
            if merged is None:
                merged = _kll()
            merged.merge(c.proc)
    return comp, on_time, merged
