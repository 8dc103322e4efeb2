"""The state of the public-service queue flow for one shard of agencies (no bytewax here).

:class:`QueueMonitor` takes lifecycle events in event-time order and keeps

- per request: open until closed, with a timer at its deadline (a request still open when
  the watermark passes its ``due`` counts as overdue *then*, not when it closes); a
  request on hold stops its clock and gets the held time added to its deadline on resume;
  open requests idle for ``idle_ttl_s`` expire;
- per agency and per service, over tumbling event-time windows of ``window_s``: arrivals,
  completions, backlog and overdue levels at the window's end, deadlines missed, on-time
  completion rate and processing-time quantiles (Apache DataSketches KLL, merged over the
  trailing ``trail_s``), arrivals by channel;
- the detectors of :mod:`vigil.flows.queues.flow` (arrival surge/drop, backlog growth,
  overdue share, throughput collapse), evaluated as each window closes.

It emits :class:`~vigil.flows.queues.records.QueueStats` and
:class:`~vigil.records.Detection` records. Being plain Python, it is tested, benchmarked
and reused by ``vigil report`` on its own.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datasketches import kll_floats_sketch
from vigil.detectors.calendar import CalendarBaseline
from vigil.detectors.cusum import CUSUM
from vigil.flows.queues.calendar import DAY_TYPES, WorkCalendar
from vigil.flows.queues.config import ServiceQueuesConfig
from vigil.flows.queues.mapping import OTHER
from vigil.flows.queues.records import CLOSED, RECEIVED, STATUS, QueueEvent

from vigil.records import Detection, QueueStats

FEED = "service_queues"
_KLL_K = 200  # ~1.3% normalized rank error, a few KiB per non-empty sketch
_MAX_EMPTY_WINDOWS = 10_000
_Z_CLIP = 5.0  # one wild hour must not decide a CUSUM alone
_NAN = float("nan")

# Request state, a list for speed: [agency, service, received, due, overdue, hold_start, last]
_AG, _SV, _RECV, _DUE, _OVER, _HOLD, _LAST = range(7)


def _kll() -> kll_floats_sketch:
    return kll_floats_sketch(_KLL_K)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    return f"{seconds / 3600:.1f} h"


class _Counts:
    """What happened to one agency (or one of its services) in one window."""

    __slots__ = ("arrivals", "breaches", "channels", "completions", "met", "on_time", "proc")

    def __init__(self) -> None:
        self.arrivals = 0
        self.completions = 0
        self.on_time = 0
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
        return (self.arrivals, self.completions, self.on_time, self.met, self.breaches, chans, proc)

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        self.arrivals, self.completions, self.on_time, self.met, self.breaches = st[:5]
        self.channels = dict(st[5]) if st[5] else None
        self.proc = kll_floats_sketch.deserialize(st[6]) if st[6] is not None else None


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


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Everything one shard learned; restored into a fresh :class:`QueueMonitor`.

    ``agencies`` holds each agency's levels, windows and detector snapshots as plain
    tuples (KLL sketches as their serialized bytes), via ``_Agency.__getstate__``.
    """

    requests: tuple[tuple[str, tuple[Any, ...]], ...]
    timers: tuple[tuple[float, str], ...]
    agencies: tuple[tuple[str, Any], ...]
    next_window: float | None
    watermark: float
    first_ts: float | None
    counters: tuple[tuple[str, int], ...]
    newest: float


class QueueMonitor:
    """Requests, windows and detections of the agencies of one shard.

    Parameters
    ----------
    cfg
        The flow's configuration (windows, rules, expiry).
    calendar
        Working days and holidays of the offices.

    Examples
    --------
    A request due at 10:00 that is still open at 10:00 counts as overdue from then on:

    >>> from vigil.flows.queues.config import ServiceQueuesConfig
    >>> from vigil.flows.queues.records import QueueEvent
    >>> mon = QueueMonitor(ServiceQueuesConfig(), WorkCalendar("UTC"))
    >>> t0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    >>> _ = mon.process([QueueEvent(t0, "received", "r1", "PWD", due=t0 + 3600)])
    >>> mon.overdue_now("PWD")
    0
    >>> _ = mon.process([], hint=t0 + 3601)
    >>> mon.overdue_now("PWD"), mon.backlog_now("PWD")
    (1, 1)
    >>> out = mon.process([QueueEvent(t0 + 7200, "closed", "r1", "PWD")])
    >>> mon.overdue_now("PWD"), mon.backlog_now("PWD")
    (0, 0)
    >>> [s.breaches for s in mon.flush() if s.service == "" and s.breaches]
    [1]
    """

    def __init__(self, cfg: ServiceQueuesConfig, calendar: WorkCalendar) -> None:
        self.cfg = cfg
        self.cal = calendar
        self.w = cfg.window_s
        self.per_day = int(86400 // cfg.window_s)
        self.slots = 3 * self.per_day
        self.trail_n = max(1, math.ceil(cfg.trail_s / cfg.window_s))
        self.lateness = cfg.allowed_lateness_s
        self._reqs: dict[str, list[Any]] = {}
        self._timers: list[tuple[float, str]] = []
        self._agencies: dict[str, _Agency] = {}
        self._next: float | None = None  # start of the oldest window not yet closed
        self._wm = -math.inf
        self._horizon = -math.inf  # event time at which something (window, timer) is due
        self._first: float | None = None
        self._newest = -math.inf
        self._last_expiry = -math.inf
        self.counters: dict[str, int] = {}

    # ---------------------------------------------------------------- state
    def snapshot(self) -> QueueSnapshot:
        return QueueSnapshot(
            tuple((k, tuple(v)) for k, v in self._reqs.items()),
            tuple(self._timers),
            tuple((k, a.__getstate__()) for k, a in self._agencies.items()),
            self._next,
            self._wm,
            self._first,
            tuple(self.counters.items()),
            self._newest,
        )

    def restore(self, snap: QueueSnapshot) -> None:
        self._reqs = {k: list(v) for k, v in snap.requests}
        self._timers = list(snap.timers)
        heapq.heapify(self._timers)
        self._agencies = {}
        for k, st in snap.agencies:
            a = _Agency.__new__(_Agency)
            a.__setstate__(st)
            self._agencies[k] = a
        self._next, self._wm, self._first = snap.next_window, snap.watermark, snap.first_ts
        self.counters = dict(snap.counters)
        self._newest = snap.newest
        self._horizon = -math.inf

    def backlog_now(self, agency: str) -> int:
        a = self._agencies.get(agency)
        return a.backlog if a else 0

    def overdue_now(self, agency: str) -> int:
        a = self._agencies.get(agency)
        return a.overdue if a else 0

    def open_requests(self) -> int:
        return len(self._reqs)

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # ---------------------------------------------------------------- processing
    def _agency(self, name: str) -> _Agency:
        a = self._agencies.get(name)
        if a is None:
            a = self._agencies[name] = _Agency(self.slots, self.cfg)
        return a

    def _bucket(self, a: _Agency, ts: float) -> _Bucket:
        b = ts - ts % self.w
        if self._next is not None and b < self._next:
            b = self._next  # its window has closed: count it in the oldest open one
        bk = a.buckets.get(b)
        if bk is None:
            bk = a.buckets[b] = _Bucket()
        return bk

    def process(
        self, events: Iterable[QueueEvent], hint: float | None = None
    ) -> list[QueueStats | Detection]:
        """Apply events (in event-time order); close the windows the watermark passes.

        ``hint`` is the newest event time the caller has seen on any shard, so that a
        shard whose agencies are quiet still closes its windows and fires its timers.
        """
        out: list[QueueStats | Detection] = []
        lateness = self.lateness
        for ev in events:
            ts = ev.ts
            if self._first is None:
                self._first = ts
                self._next = ts - ts % self.w
            if ts > self._newest:
                self._newest = ts
            limit = ts - lateness
            if limit > self._horizon:
                self._advance(limit, out)
            if ts < self._wm:
                self._count("late")
            kind = ev.kind
            if kind == RECEIVED:
                self._received(ev)
            elif kind == CLOSED:
                self._closed(ev)
            elif kind == STATUS:
                self._status(ev)
        if hint is not None and self._first is not None and hint - lateness > self._horizon:
            self._advance(hint - lateness, out)
        return out

    def flush(self) -> list[QueueStats | Detection]:
        """Close every window that holds data (end of a finite replay)."""
        out: list[QueueStats | Detection] = []
        ends = [b for a in self._agencies.values() for b in a.buckets]
        if ends:
            self._advance(max(ends) + self.w, out)
        return out

    def _received(self, ev: QueueEvent) -> None:
        reqs = self._reqs
        if ev.rid in reqs:
            self._count("duplicate_received")
            return
        a = self._agency(ev.agency)
        svc = ev.service
        reqs[ev.rid] = [ev.agency, svc, ev.ts, ev.due, False, None, ev.ts]
        a.backlog += 1
        lv = a.svc_levels.get(svc)
        if lv is None:
            lv = a.svc_levels[svc] = [0, 0]
        lv[0] += 1
        bk = self._bucket(a, ev.ts)
        c = bk.agency
        c.arrivals += 1
        ch = c.channels
        if ch is None:
            ch = c.channels = {}
        ch[ev.channel] = ch.get(ev.channel, 0) + 1
        bk.svc(svc).arrivals += 1
        if ev.due is not None:
            if ev.due <= self._wm:
                self._breach(ev.rid, reqs[ev.rid], ev.due)
            else:
                heapq.heappush(self._timers, (ev.due, ev.rid))
                if ev.due < self._horizon:
                    self._horizon = ev.due

    def _closed(self, ev: QueueEvent) -> None:
        req = self._reqs.pop(ev.rid, None)
        a = self._agency(ev.agency if req is None else req[_AG])
        if req is None:
            # Received before the stream began, or expired: a completion all the same.
            self._count("closed_unknown")
            received, due, overdue, svc = ev.received, ev.due, False, ev.service
        else:
            received, due, overdue, svc = req[_RECV], req[_DUE], req[_OVER], req[_SV]
            a.backlog -= 1
            lv = a.svc_levels[svc]
            lv[0] -= 1
            if overdue:
                a.overdue -= 1
                lv[1] -= 1
        if ev.on_time is not None:
            on_time = ev.on_time
        else:
            on_time = due is None or (not overdue and ev.ts <= due)
        bk = self._bucket(a, ev.ts)
        for c in (bk.agency, bk.svc(svc)):
            c.completions += 1
            if on_time:
                c.on_time += 1
            if due is not None and not overdue and ev.ts <= due:
                c.met += 1
            if received is not None:
                c.add_proc(max(ev.ts - received, 0.0))

    def _status(self, ev: QueueEvent) -> None:
        req = self._reqs.get(ev.rid)
        if req is None:
            self._count("status_unknown")
            return
        req[_LAST] = ev.ts
        if ev.status == "hold" and req[_HOLD] is None and not req[_OVER]:
            req[_HOLD] = ev.ts
        elif ev.status == "resume" and req[_HOLD] is not None:
            held = max(ev.ts - req[_HOLD], 0.0)
            req[_HOLD] = None
            if req[_DUE] is not None:
                # The legal clock stopped while the request waited on the citizen.
                req[_DUE] += held
                heapq.heappush(self._timers, (req[_DUE], ev.rid))
                self._horizon = min(self._horizon, req[_DUE])

    def _breach(self, rid: str, req: list[Any], due: float) -> None:
        req[_OVER] = True
        a = self._agency(req[_AG])
        a.overdue += 1
        a.svc_levels[req[_SV]][1] += 1
        bk = self._bucket(a, due)
        bk.agency.breaches += 1
        bk.svc(req[_SV]).breaches += 1

    def _advance(self, limit: float, out: list[QueueStats | Detection]) -> None:
        """Fire deadline timers and close windows, in time order, up to ``limit``."""
        assert self._next is not None
        timers = self._timers
        reqs = self._reqs
        w = self.w
        while True:
            end = self._next + w
            while timers and timers[0][0] <= limit and timers[0][0] < end:
                due, rid = heapq.heappop(timers)
                req = reqs.get(rid)
                if req is None or req[_OVER] or req[_HOLD] is not None or req[_DUE] != due:
                    continue  # closed, already overdue, on hold, or deadline moved
                self._breach(rid, req, due)
            if end > limit:
                break
            if not any(a.buckets for a in self._agencies.values()):
                nxt = min([timers[0][0]] if timers else [limit], default=limit)
                if nxt - end > _MAX_EMPTY_WINDOWS * w:
                    self._next = min(nxt, limit) - min(nxt, limit) % w
                    continue
            self._close(self._next, out)
            self._next = end
        if limit > self._wm:
            self._wm = limit
        self._horizon = min(self._next + w, timers[0][0] if timers else math.inf)

    # ---------------------------------------------------------------- windows
    def _close(self, start: float, out: list[QueueStats | Detection]) -> None:
        end = start + self.w
        if end - self._last_expiry >= 86400:
            self._expire(end)
        d, _hour, sec = self.cal.local(start)
        day = d.isoformat()
        day_type = self.cal.day_type_of(d)
        slot = day_type * self.per_day + int(sec // self.w)
        assert self._first is not None
        f_day, _fh, f_sec = self.cal.local(self._first)
        # The first local day is partial unless the stream began in its first window:
        # its "so far today" counts would teach the baseline a day that is too quiet.
        learn = not (d == f_day and f_sec >= self.w)
        # A window the data ends in (closed by flush) is partial: show it, judge nothing.
        detect = self._first + self.cfg.warmup_s <= end <= self._newest
        office = self.cal.in_office_hours(start)
        for name, a in self._agencies.items():
            bk = a.buckets.pop(start, None) or _Bucket()
            a.trail.append((start, bk))
            while len(a.trail) > self.trail_n:
                a.trail.popleft()
            out.extend(self._stats(name, a, bk, end))
            self._rules(name, a, bk, end, day, day_type, slot, learn, detect, office, out)

    def _stats(self, name: str, a: _Agency, bk: _Bucket, end: float) -> list[QueueStats]:
        w, trail_s = self.w, self.trail_n * self.w
        out: list[QueueStats] = []
        c = bk.agency
        comp, on_time, sk = self._trail(a, None)
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
                on_time / comp if comp else _NAN,
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
            comp, on_time, sk = self._trail(a, svc)
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

    @staticmethod
    def _trail(a: _Agency, svc: str | None) -> tuple[int, int, kll_floats_sketch | None]:
        comp = on_time = 0
        merged: kll_floats_sketch | None = None
        for _s, b in a.trail:
            c = b.agency if svc is None else b.services.get(svc)
            if c is None or not c.completions:
                continue
            comp += c.completions
            on_time += c.on_time
            if c.proc is not None:
                if merged is None:
                    merged = _kll()
                merged.merge(c.proc)
        return comp, on_time, merged

    def _expire(self, now: float) -> None:
        self._last_expiry = now
        horizon = now - self.cfg.idle_ttl_s
        old = [rid for rid, r in self._reqs.items() if r[_LAST] < horizon]
        for rid in old:
            r = self._reqs.pop(rid)
            a = self._agencies[r[_AG]]
            a.backlog -= 1
            a.svc_levels[r[_SV]][0] -= 1
            if r[_OVER]:
                a.overdue -= 1
                a.svc_levels[r[_SV]][1] -= 1
        if old:
            self._count("expired", len(old))

    # ---------------------------------------------------------------- rules
    def _clock(self, ts: float) -> str:
        """Local wall-clock time of ``ts`` in the offices' zone, e.g. ``"10:00 EST"``."""
        return datetime.fromtimestamp(ts, tz=self.cal.zone).strftime("%H:%M %Z")

    def _emit(
        self,
        out: list[QueueStats | Detection],
        a: _Agency,
        key: str,
        ts: float,
        **kw: Any,
    ) -> None:
        since = a.active.setdefault(key, ts)
        extra = (("agency", kw["entity"]), *kw.pop("extra", ()), ("since", _iso(since)))
        out.append(Detection(feed=FEED, ts=ts, window_s=self.w, extra=extra, **kw))

    def _rules(
        self,
        name: str,
        a: _Agency,
        bk: _Bucket,
        end: float,
        day: str,
        day_type: int,
        slot: int,
        learn: bool,
        detect: bool,
        office: bool,
        out: list[QueueStats | Detection],
    ) -> None:
        r = self.cfg.rules
        c = bk.agency
        if a.today != day:
            a.today, a.cum, a.svc_cum = day, 0, {}
        a.cum += c.arrivals
        for svc, sc in bk.services.items():
            if sc.arrivals:
                a.svc_cum[svc] = a.svc_cum.get(svc, 0) + sc.arrivals
        held: set[str] = set()
        dtype = DAY_TYPES[day_type]

        # Arrival surge / drop: so far today against a normal day of this type by now.
        ar = r.arrivals
        series = [("", a.cum, a.arr_base)]
        for svc in a.svc_levels:
            if svc == OTHER:
                continue
            base = a.svc_base.get(svc)
            if base is None:
                base = a.svc_base[svc] = CalendarBaseline(
                    self.slots, alpha=ar.alpha, grace_period=ar.grace_days
                )
            series.append((svc, a.svc_cum.get(svc, 0), base))
        for svc, x, base in series:
            e = base.explain_one(slot, float(x))
            if learn:
                base.learn_one(slot, float(x), clip_z=ar.z)
            if not (detect and ar.enabled) or e.score == 0.0:
                continue
            surge = e.score >= ar.z and x >= ar.ratio * e.expected and x >= ar.min_count
            drop = (
                ar.drop
                and e.score <= -ar.z
                and x * ar.ratio <= e.expected
                and e.expected >= ar.min_count
            )
            if not (surge or drop):
                continue
            kind = ("service_" if svc else "") + ("arrival_surge" if surge else "arrival_drop")
            key = f"{kind}:{svc}"
            held.add(key)
            what = f"{svc} requests to {name}" if svc else f"requests to {name}"
            self._emit(
                out,
                a,
                key,
                end,
                kind=kind,
                entity=name,
                severity=ar.severity,
                observed=float(x),
                threshold=ar.z,
                expected=e.expected,
                lower=max(e.lower, 0.0),
                upper=e.upper,
                summary=f"{'Surge' if surge else 'Drop'} of {what}",
                description=(
                    f"{x} {what} so far on {day} by {self._clock(end)}, expected "
                    f"{e.expected:.0f} on a {dtype.replace('_', ' ')} (band "
                    f"{max(e.lower, 0):.0f} to {e.upper:.0f}); {abs(e.score):.1f} standard "
                    f"deviations {'above' if surge else 'below'} (threshold {ar.z:g}) and "
                    f"{x / max(e.expected, 1e-9):.2f}x expected (threshold "
                    f"{ar.ratio if surge else 1 / ar.ratio:.2f}x)"
                ),
                extra=(("service", svc),) if svc else (),
            )

        # Backlog growth: CUSUM on the net inflow's deviation from its usual level.
        br = r.backlog
        net = float(c.arrivals - c.completions)
        e = a.net_base.explain_one(slot, net)
        expected_net = e.expected if a.net_base.count(slot) else 0.0
        if learn:
            a.net_base.learn_one(slot, net)
        a.backlog_hist.append(a.backlog)
        a.net_hist.append(expected_net)
        while len(a.backlog_hist) > self.per_day + 1:
            a.backlog_hist.popleft()
        while len(a.net_hist) > self.per_day:
            a.net_hist.popleft()
        z = max(-_Z_CLIP, min(_Z_CLIP, e.score))
        if a.cusum.score_one(z) >= 1.0:
            a.signal_ts = end
        a.cusum.learn_one(z)
        # The shift is signalled when it starts; the backlog shows it over the next day.
        signal = end - a.signal_ts <= self.per_day * self.w
        growth = a.backlog - a.backlog_hist[0]
        expected_growth = sum(a.net_hist)
        excess = growth - max(expected_growth, 0.0)
        key = "backlog_growth"
        holds = excess >= br.min_growth and growth >= br.min_growth
        if (
            detect
            and br.enabled
            and holds
            and end >= (self._first or 0.0) + br.warmup_s
            and (signal or key in a.active)
        ):
            held.add(key)
            span = _hours(self.w * (len(a.backlog_hist) - 1))
            self._emit(
                out,
                a,
                key,
                end,
                kind=key,
                entity=name,
                severity=br.severity,
                observed=float(growth),
                threshold=float(br.min_growth),
                expected=max(expected_growth, 0.0),
                summary=f"Backlog of {name} growing",
                description=(
                    f"backlog of {name} grew by {growth} to {a.backlog} in {span}, expected "
                    f"{max(expected_growth, 0):.0f} for this time of the week; net inflow "
                    f"above its usual level (CUSUM k={br.k:g}, h={br.h:g}) and growth "
                    f"{excess:.0f} over expected >= {br.min_growth}"
                ),
            )

        # Overdue share: deadlines missed among deadlines decided in the trailing window.
        orl = r.overdue
        missed = met = 0
        for _s, b in a.trail:
            missed += b.agency.breaches
            met += b.agency.met
        decided = missed + met
        thr = orl.per_agency.get(name, orl.threshold)
        key = "overdue_share"
        # Hysteresis: an active condition clears only below threshold - hysteresis, and a
        # quiet window (too few deadlines decided) neither raises nor clears it.
        floor = thr - orl.hysteresis if key in a.active else thr
        if key in a.active and decided < orl.min_decided:
            held.add(key)
        elif detect and orl.enabled and decided >= orl.min_decided and missed / decided >= floor:
            held.add(key)
            share = missed / decided
            self._emit(
                out,
                a,
                key,
                end,
                kind=key,
                entity=name,
                severity=orl.severity,
                observed=round(share, 4),
                threshold=thr,
                summary=f"{name} missing deadlines",
                description=(
                    f"{missed} of {decided} deadlines of {name} decided in the last "
                    f"{_hours(self.trail_n * self.w)} were missed ({share:.0%}, threshold "
                    f"{thr:.0%}); {a.overdue} requests overdue now, backlog {a.backlog}"
                ),
            )

        # Throughput collapse: completions stop while arrivals continue (office hours).
        tr = r.throughput
        key = "throughput_collapse"
        if office:
            a.office.append((c.arrivals, c.completions))
            while len(a.office) > tr.hours:
                a.office.popleft()
            arr = sum(x for x, _ in a.office)
            comp = sum(y for _, y in a.office)
            usual = a.usual_comp
            collapsed = (
                len(a.office) == tr.hours
                and arr >= tr.min_arrivals
                and comp <= tr.max_ratio * arr
                and usual >= tr.min_usual_completions
            )
            if detect and tr.enabled and collapsed:
                held.add(key)
                self._emit(
                    out,
                    a,
                    key,
                    end,
                    kind=key,
                    entity=name,
                    severity=tr.severity,
                    observed=float(comp),
                    threshold=tr.max_ratio * arr,
                    expected=usual * tr.hours,
                    summary=f"{name} stopped completing requests",
                    description=(
                        f"{comp} completions against {arr} arrivals at {name} in the last "
                        f"{tr.hours} office hours (at most {tr.max_ratio:.0%} of arrivals; "
                        f"usually {usual * tr.hours:.0f} completions)"
                    ),
                )
            elif not collapsed:
                done = float(c.completions)
                a.usual_comp = done if usual < 0 else usual + 0.05 * (done - usual)
        elif key in a.active:
            held.add(key)  # outside office hours the condition neither holds nor clears
        for k in [k for k in a.active if k not in held]:
            del a.active[k]
