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
and reused by ``vigil report`` on its own. The per-agency accounting lives in
:mod:`vigil.flows.queues.agency`, the rules in :mod:`vigil.flows.queues.rules`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# _Counts and _Bucket stay importable here: recovery snapshots pickle them by module path.
from vigil.flows.queues.agency import (  # noqa: F401
    _Agency,
    _Bucket,
    _Counts,
    trail_push,
    window_stats,
)
from vigil.flows.queues.calendar import WorkCalendar
from vigil.flows.queues.config import ServiceQueuesConfig
from vigil.flows.queues.records import CLOSED, RECEIVED, STATUS, QueueEvent
from vigil.flows.queues.rules import FEED, _QueueRules  # noqa: F401  (FEED: public here)

from vigil.records import Detection, QueueStats

_MAX_EMPTY_WINDOWS = 10_000

# Request state, a list for speed: [agency, service, received, due, overdue, hold_start, last]
_AG, _SV, _RECV, _DUE, _OVER, _HOLD, _LAST = range(7)


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


class QueueMonitor(_QueueRules):
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

    The close, at the end of the window that holds the deadline, closes that window first:

    >>> [(s.ts - t0, s.breaches, s.backlog) for s in out if s.service == ""]
    [(7200.0, 1, 1)]
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
        # Event time at which something is due: a window's end, or a deadline (which
        # fires once the watermark is past it). See _advance for the exact rule.
        self._horizon = -math.inf
        self._first: float | None = None
        self._newest = -math.inf
        self._last_expiry = -math.inf
        self._min_last = math.inf  # at most the oldest activity of an open request
        self._empty = _Bucket()  # a quiet window's (never changed once closed)
        self._first_local: tuple[float, Any, int, int] | None = None  # _first, local
        self.counters: dict[str, int] = {}

    # ---------------------------------------------------------------- state
    def snapshot(self) -> QueueSnapshot:
        return QueueSnapshot(
            tuple(zip(self._reqs, map(tuple, self._reqs.values()), strict=True)),
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
        self._min_last = -math.inf

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
            if limit >= self._horizon:
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
        if hint is not None and self._first is not None:
            # Data up to ``hint`` has been seen (on some shard): windows that ends before
            # it are complete here too, and judged like those an event of ours closes.
            if hint > self._newest:
                self._newest = hint
            if hint - lateness >= self._horizon:
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
        ts, name, svc = ev.ts, ev.agency, ev.service
        a = self._agencies.get(name) or self._agency(name)
        reqs[ev.rid] = [name, svc, ts, ev.due, False, None, ts]
        if ts < self._min_last:
            self._min_last = ts
        a.backlog += 1
        lv = a.svc_levels.get(svc)
        if lv is None:
            lv = a.svc_levels[svc] = [0, 0]
        lv[0] += 1
        bk = a.buckets.get(ts - ts % self.w) or self._bucket(a, ts)
        c = bk.agency
        c.arrivals += 1
        ch = c.channels
        if ch is None:
            ch = c.channels = {}
        ch[ev.channel] = ch.get(ev.channel, 0) + 1
        (bk.services.get(svc) or bk.svc(svc)).arrivals += 1
        if ev.due is not None:
            # Past already (the watermark, or this event's own time, is beyond it): as if
            # its timer had fired before this event, which _advance would have done.
            if ev.due < max(self._wm, ts - self.lateness):
                self._breach(ev.rid, reqs[ev.rid], ev.due)
            else:
                heapq.heappush(self._timers, (ev.due, ev.rid))
                if ev.due < self._horizon:
                    self._horizon = ev.due

    def _closed(self, ev: QueueEvent) -> None:
        req = self._reqs.pop(ev.rid, None)
        name = ev.agency if req is None else req[_AG]
        a = self._agencies.get(name) or self._agency(name)
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
        # A verdict needs a source: the publisher's flag, else a deadline (the record's
        # or the service-level table's). Without one the completion is not judged.
        ts = ev.ts
        met = due is not None and not overdue and ts <= due
        flag = ev.on_time
        judged = flag is not None or due is not None
        on_time = flag if flag is not None else met
        proc = None if received is None else max(ts - received, 0.0)
        bk = a.buckets.get(ts - ts % self.w) or self._bucket(a, ts)
        for c in (bk.agency, bk.services.get(svc) or bk.svc(svc)):
            c.completions += 1
            if judged:
                c.judged += 1
            if on_time:
                c.on_time += 1
            if met:
                c.met += 1
            if proc is not None:
                c.add_proc(proc)

    def _status(self, ev: QueueEvent) -> None:
        req = self._reqs.get(ev.rid)
        if req is None:
            self._count("status_unknown")
            return
        req[_LAST] = ev.ts
        if ev.ts < self._min_last:
            self._min_last = ev.ts
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
        """Fire deadline timers and close windows, in time order, up to ``limit``.

        The rule, the same however events are batched: before an event at ``ts`` is
        applied (``limit = ts - allowed_lateness_s``), every deadline before ``limit`` has
        fired and every window that ends at or before ``limit`` is closed. A request
        closed exactly at its deadline is on time; an event exactly at a window's end
        belongs to the next window and is not in the closed window's levels.
        """
        assert self._next is not None
        timers = self._timers
        reqs = self._reqs
        w = self.w
        while True:
            end = self._next + w
            while timers and timers[0][0] < limit and timers[0][0] < end:
                due, rid = heapq.heappop(timers)
                req = reqs.get(rid)
                if req is None or req[_OVER] or req[_HOLD] is not None or req[_DUE] != due:
                    continue  # closed, already overdue, on hold, or deadline moved
                self._breach(rid, req, due)
            if end > limit:
                break
            nxt = timers[0][0] if timers else limit
            # A long gap with nothing to close is skipped (the check is cheap first).
            if nxt - end > _MAX_EMPTY_WINDOWS * w and not any(
                a.buckets for a in self._agencies.values()
            ):
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
        day, day_type, slot, learn, office = self._window_facts(start)
        assert self._first is not None
        # A window the data ends in (closed by flush) is partial: show it, judge nothing.
        detect = self._first + self.cfg.warmup_s <= end <= self._newest
        empty = self._empty
        for name, a in self._agencies.items():
            bk = a.buckets.pop(start, None) or empty
            trail_push(a, start, bk, self.trail_n)
            window_stats(name, a, bk, end, self.w, self.trail_n, out)
            self._rules(name, a, bk, end, day, day_type, slot, learn, detect, office, out)

    def _window_facts(self, start: float) -> tuple[str, int, int, bool, bool]:
        """Local day, day type, baseline slot, whether to learn, and office hours of the
        window from ``start`` (the calendar's part is cached, shared by all shards)."""
        assert self._first is not None
        d, day, day_type, sec, office = self.cal.window(start)
        first = self._first_local
        if first is None or first[0] != self._first:
            first = self._first_local = (self._first, *self.cal.local(self._first))
        _ts, f_day, _fh, f_sec = first
        # The first local day is partial unless the stream began in its first window:
        # its "so far today" counts would teach the baseline a day that is too quiet.
        learn = not (d == f_day and f_sec >= self.w)
        return day, day_type, day_type * self.per_day + int(sec // self.w), learn, office

    def _expire(self, now: float) -> None:
        self._last_expiry = now
        horizon = now - self.cfg.idle_ttl_s
        if horizon <= self._min_last:
            return  # no open request is that old
        old = [rid for rid, r in self._reqs.items() if r[_LAST] < horizon]
        self._min_last = min(
            (r[_LAST] for r in self._reqs.values() if r[_LAST] >= horizon), default=math.inf
        )
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
