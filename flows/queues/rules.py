"""The detection rules of the public-service queue flow, evaluated as each window closes.

Arrival surge/drop, backlog growth, overdue share and throughput collapse, per agency (see
:mod:`vigil.flows.queues.flow`). A mixin of :class:`~vigil.flows.queues.state.QueueMonitor`,
in its own module so the monitor keeps only request, timer and window bookkeeping.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vigil.detectors.calendar import CalendarBaseline
from vigil.flows.queues.agency import _Agency, _Bucket
from vigil.flows.queues.calendar import DAY_TYPES, WorkCalendar
from vigil.flows.queues.config import ServiceQueuesConfig
from vigil.flows.queues.mapping import OTHER

from vigil.records import Detection, QueueStats

FEED = "service_queues"
_Z_CLIP = 5.0  # one wild hour must not decide a CUSUM alone


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    return f"{seconds / 3600:.1f} h"


class _QueueRules:
    """The rules of :class:`~vigil.flows.queues.state.QueueMonitor` (which sets these fields)."""

    cfg: ServiceQueuesConfig
    cal: WorkCalendar
    w: float
    per_day: int
    slots: int
    trail_n: int
    _first: float | None

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
