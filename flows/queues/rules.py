"""The detection rules of the public-service queue flow, evaluated as each window closes.

Arrival surge/drop, backlog growth, overdue share and throughput collapse, per agency (see
:mod:`vigil.flows.queues.flow`). A mixin of :class:`~vigil.flows.queues.state.QueueMonitor`,
in its own module so the monitor keeps only request, timer and window bookkeeping.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vigil.flows.queues.agency import _Agency, _Bucket
from vigil.flows.queues.calendar import DAY_TYPES, WorkCalendar
from vigil.flows.queues.config import ServiceQueuesConfig
from vigil.flows.queues.mapping import OTHER

from vigil.records import Detection, QueueStats

FEED = "service_queues"
_Z_CLIP = 5.0  # one wild hour must not decide a CUSUM alone


_ISO: dict[float, str] = {}


def _iso(ts: float) -> str:
    """``ts`` as ISO 8601 UTC; cached, as a condition's start is repeated at every window
    it holds."""
    hit = _ISO.get(ts)
    if hit is None:
        if len(_ISO) > 10_000:
            _ISO.clear()
        hit = _ISO[ts] = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return hit


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
        return self.cal.clock(ts)

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

    def _arrival(
        self,
        out: list[QueueStats | Detection],
        a: _Agency,
        name: str,
        svc: str,
        x: int,
        e: tuple[float, float, float, float],
        end: float,
        day: str,
        dtype: str,
        held: set[str],
    ) -> None:
        """Emit an arrival surge or drop of the agency (``svc`` empty) or of a service.

        ``e`` is the baseline's explanation: score, expected, lower and upper bound."""
        ar = self.cfg.rules.arrivals
        score, expected, lower, upper = e
        if score == 0.0:
            return
        surge = score >= ar.z and x >= ar.ratio * expected and x >= ar.min_count
        drop = ar.drop and score <= -ar.z and x * ar.ratio <= expected and expected >= ar.min_count
        if not (surge or drop):
            return
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
            expected=expected,
            lower=max(lower, 0.0),
            upper=upper,
            summary=f"{'Surge' if surge else 'Drop'} of {what}",
            description=(
                f"{x} {what} so far on {day} by {self._clock(end)}, expected "
                f"{expected:.0f} on a {dtype.replace('_', ' ')} (band "
                f"{max(lower, 0):.0f} to {upper:.0f}); {abs(score):.1f} standard "
                f"deviations {'above' if surge else 'below'} (threshold {ar.z:g}) and "
                f"{x / max(expected, 1e-9):.2f}x expected (threshold "
                f"{ar.ratio if surge else 1 / ar.ratio:.2f}x)"
            ),
            extra=(("service", svc),) if svc else (),
        )

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
        ar = r.arrivals
        sb = a.svc_base
        if a.today != day:
            a.today, a.cum, a.svc_cum = day, 0, {}
            sb.new_day()
        if sb.seen != len(a.svc_levels):
            # A service's baseline starts at the first window after its first request.
            idx = sb.index
            for svc in a.svc_levels:
                if svc != OTHER and svc not in idx:
                    sb.add(svc)
            sb.seen = len(a.svc_levels)
        over = sb.over
        if over is None:  # restored from a snapshot
            over = sb.over = {
                i for i, svc in enumerate(sb.names) if a.svc_cum.get(svc, 0) >= ar.min_count
            }
        a.cum += c.arrivals
        cumv, idx = sb.cum, sb.index
        for svc, sc in bk.services.items():
            if sc.arrivals:
                x = a.svc_cum[svc] = a.svc_cum.get(svc, 0) + sc.arrivals
                i = idx.get(svc)
                if i is not None:
                    cumv[i] = x
                    if x >= ar.min_count:
                        over.add(i)
        held: set[str] = set()
        dtype = DAY_TYPES[day_type]

        # Arrival surge / drop: so far today against a normal day of this type by now.
        # A service is judged only when it could pass the thresholds: its count today or
        # its expected count at least ``min_count`` (see _ServiceBaselines).
        judge = detect and ar.enabled
        if judge or learn:
            ex = a.arr_base.explain_learn(slot, float(a.cum), ar.z, learn)
            # A score inside (-z, z) passes neither threshold (most windows).
            if judge and (ex[0] >= ar.z or ex[0] <= -ar.z):
                self._arrival(out, a, name, "", a.cum, ex, end, day, dtype, held)
        if judge:
            drops = sb.drop_candidates(slot, ar.min_count) if ar.drop else ()
            rows = over.union(drops) if drops else over
            if rows:
                names = sb.names
                for i in sorted(rows):
                    svc = names[i]
                    x = a.svc_cum.get(svc, 0)
                    e = sb.explain(i, slot, float(x))
                    self._arrival(out, a, name, svc, x, e, end, day, dtype, held)
        if learn:
            sb.record(slot, ar.z, ar.min_count)

        # Backlog growth: CUSUM on the net inflow's deviation from its usual level.
        br = r.backlog
        net = float(c.arrivals - c.completions)
        warm = a.net_base.count(slot)
        score, expected_net, _lo, _hi = a.net_base.explain_learn(slot, net, None, learn)
        if not warm:
            expected_net = 0.0
        bh, nh = a.backlog_hist, a.net_hist
        bh.append(a.backlog)  # bounded: the last day and the window before it
        nh.append(expected_net)  # the last day
        # max(-_Z_CLIP, min(_Z_CLIP, score)) as the comparisons the builtins make
        z = score if score < _Z_CLIP else _Z_CLIP
        z = z if z > -_Z_CLIP else -_Z_CLIP
        if a.cusum.score_learn(z) >= 1.0:
            a.signal_ts = end
        # The shift is signalled when it starts; the backlog shows it over the next day.
        signal = end - a.signal_ts <= self.per_day * self.w
        growth = a.backlog - bh[0]
        key = "backlog_growth"
        # The sum over the last day is needed only when the growth alone can pass.
        expected_growth = sum(nh) if growth >= br.min_growth else 0.0
        if (
            detect
            and br.enabled
            and growth >= br.min_growth
            and growth - max(expected_growth, 0.0) >= br.min_growth
            and end >= (self._first or 0.0) + br.warmup_s
            and (signal or key in a.active)
        ):
            excess = growth - max(expected_growth, 0.0)
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
        missed, met = a.trail_decided  # over the trail (kept by the monitor)
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
            arr = comp = 0
            for x, y in a.office:
                arr += x
                comp += y
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
        if a.active:
            for k in [k for k in a.active if k not in held]:
                del a.active[k]
