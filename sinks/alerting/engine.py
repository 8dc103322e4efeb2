"""The alerting engine: lifecycle, grouping, routing, silences, inhibition. Pure Python.

Inputs are *observations* ("this episode holds at event time ``ts``, and until ``ts +
hold`` without new evidence") and *watermarks* (a producer's promise that its next
observations of a domain are not older than ``ts``); outputs are
:class:`~vigil.sinks.alerting.model.Notification`\\ s and
:class:`~vigil.sinks.alerting.model.Transition`\\ s.
No I/O, no threads: the caller (:mod:`vigil.sinks.alerting.service`) persists state and delivers.
The engine's parts: an alert's lifecycle in :mod:`~vigil.sinks.alerting.lifecycle`, muting
and notifications in :mod:`~vigil.sinks.alerting.notify`, state records in
:mod:`~vigil.sinks.alerting.state`, outside clocks in :mod:`~vigil.sinks.alerting.clock`.

Time model
----------
Every timer runs on **event time**, per **domain** (``security/ssh``, ``security/zeek``,
``media``...: the feed and log source an observation came from), so feeds of different
eras in one process never move each other's clocks. A domain's clock is its *watermark*:
the smallest promise of its producers (:meth:`AlertEngine.progress`), less
``lateness_s``; a domain with no producer follows its newest observation, less
``lateness_s``; in a ``live`` engine its time also runs on with the wall clock from its
newest event (never ahead of the wall clock), less ``lateness_s``, so a quiet live feed
still resolves its alerts, while a backlog read at full speed (a restart catching up, a
bus holding last month's posts) keeps the timers of its own event time: an episode is not
cut short because the wall clock is far ahead of it; :meth:`AlertEngine.finish` (the end
of a finite input) moves every domain to the end of time.

Observations wait until their domain's watermark passes them and are then applied in
event-time order, interleaved with the timers due in between, each at its own time. The
result depends only on the data: a replay at full speed, a paced replay and a run over a
file make the same transitions at the same event times, with the same ``startsAt``,
``endsAt`` and annotations. A ``live`` engine applies each observation as it arrives (an
alert fires without waiting for ``lateness_s``), still at the observation's own event
time; its timers wait for the watermark. An observation that arrives behind the
watermark (*late*) is applied at once, at its own event time, and counted
(:attr:`AlertEngine.late`).

Lifecycle (Prometheus alerting rules, with episodes instead of evaluations)::

    observation --> pending --(for)--> firing --(valid_until passes)--> resolved
                       |                                                  |
                       +--(valid_until passes first: dropped, never notified)
                                                  (kept resolved_retention, then deleted)

One alert per **episode**: an observation of a firing alert extends it (``valid_until``
= its time + its hold: the rule's window, or ``keep_firing_for`` when it states none); the
alert resolves when the watermark passes ``valid_until`` with no newer observation, and
``endsAt`` is ``valid_until``. The next observation after that opens a new alert. The
annotations of an alert are those of its first observation (the text at ``startsAt``
states the value at ``startsAt``), with the ``latest_*``, ``peak_*``, ``last_seen`` and
``evidence_*`` annotations of the newest.

Notifications follow Alertmanager's dispatcher and ``DedupStage``: firing alerts join one
group per matching route (``group_by`` labels) and domain; a new group waits
``group_wait`` (event time), then is flushed every ``group_interval``; a flush notifies
only if the receiver has not been told about a firing alert, if alerts resolved
(``send_resolved``), if everything resolved, or if ``repeat_interval`` has passed. Muted
alerts (silences, maintenance windows, inhibition) are left out; a resolve of an alert the
receiver was told is firing is never muted. Maintenance windows are read on the alert's
event time (a replay of last year's logs honours last year's Sunday window); silences on
the wall clock.

Examples
--------
>>> from vigil.sinks.alerting.routing import Route
>>> eng = AlertEngine(Route(receiver="ops", group_by=("alertname",), group_wait=30))
>>> eng.observe({"alertname": "x", "entity": "a", "feed": "f"}, {"summary": "s"}, 1000.0,
...             hold_s=300, domain="f")
>>> eng.progress("f", "rules", 1000.0)
>>> eng.tick(), eng.alerts_by_state()["firing"]
([], 1)
>>> eng.progress("f", "rules", 1030.0)   # event time passes group_wait
>>> [(n.receiver, n.reason, len(n.alerts)) for n in eng.tick()]
[('ops', 'first_notification', 1)]
>>> eng.progress("f", "rules", 1400.0)   # no evidence since 1000: over at 1300
>>> [(n.reason, n.alerts[0]["endsAt"]) for n in eng.tick()]
[('all_resolved', '1970-01-01T00:21:40Z')]
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vigil.sinks.alerting.clock import (  # noqa: F401 (re-exported)
    Clock,
    EventClock,
    HybridClock,
    ManualClock,
    WallClock,
)
from vigil.sinks.alerting.lifecycle import START_ANNOTATIONS, Lifecycle  # noqa: F401
from vigil.sinks.alerting.model import (
    Alert,
    InhibitRule,
    MaintenanceWindow,
    Notification,
    Silence,
    Transition,
)
from vigil.sinks.alerting.notify import (  # noqa: F401 (re-exported)
    Notifier,
    ReceiverOptions,
    notification_id,
)
from vigil.sinks.alerting.routing import Route

# State records keep this module path too: pickled snapshots name it.
from vigil.sinks.alerting.state import (  # noqa: F401 (re-exported)
    Changes,
    Group,
    LogEntry,
    Observation,
    Snapshot,
    _Domain,
    clocks_from_raw,
    merge_clocks,
)
from vigil.sinks.alerting.templates import Templates

_INF = math.inf


# ---------------------------------------------------------------------------- engine
class AlertEngine(Lifecycle, Notifier):
    """Alert lifecycle, grouping, routing and muting, driven by :meth:`observe`,
    :meth:`progress` and :meth:`tick`.

    Not thread-safe: one caller (the service holds a lock).

    Parameters
    ----------
    route
        Root of the routing tree.
    receivers
        Options per receiver name; unknown receivers get the defaults.
    inhibit_rules, maintenance_windows
        Muting that comes from configuration (silences come from the store, see
        :meth:`set_silences`). Windows named in a route's ``mute_windows`` apply to that
        route only; others apply to every alert their matchers match.
    for_s, keep_firing_for_s, resolved_retention_s
        Lifecycle timers in seconds of event time. ``keep_firing_for_s`` is the hold of an
        observation that states none.
    templates
        Renders summary and description in each receiver's language.
    clock
        Optional floor under every domain's watermark (tests move a :class:`ManualClock`).
    lateness_s
        How far behind its producers' promises (or its newest observation) a domain's
        watermark stays: room for inputs that are not quite in time order.
    live
        The inputs are live: a domain's time runs on with the wall clock from its newest
        event (up to the wall clock), so a quiet feed still resolves. Replays and
        backtests are not live.
    external_url
        Put in each alert's ``generatorURL`` when set.
    wall
        Wall clock: silences (set by operators "from now for two hours") are evaluated on
        it, and the watermark of a ``live`` engine follows it.
    """

    def __init__(
        self,
        route: Route,
        *,
        receivers: Mapping[str, ReceiverOptions] | None = None,
        inhibit_rules: Iterable[InhibitRule] = (),
        maintenance_windows: Iterable[MaintenanceWindow] = (),
        for_s: float = 0.0,
        keep_firing_for_s: float = 300.0,
        resolved_retention_s: float = 86400.0,
        templates: Templates | None = None,
        clock: Clock | None = None,
        lateness_s: float = 0.0,
        live: bool = False,
        external_url: str = "",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.route = route
        self.wall = wall
        self.receivers = dict(receivers or {})
        self.inhibit_rules = tuple(inhibit_rules)
        windows = tuple(maintenance_windows)
        route_windows = {n for r in route.walk() for n in r.mute_windows}
        self._named_windows = {w.name: w for w in windows}
        self._global_windows = tuple(w for w in windows if w.name not in route_windows)
        self.for_s = for_s
        self.keep_firing_for_s = keep_firing_for_s
        self.resolved_retention_s = resolved_retention_s
        self.templates = templates or Templates()
        self.clock = clock
        self.lateness_s = lateness_s
        self.live = live
        self.external_url = external_url
        self._routes = {r.path: r for r in route.walk()}
        self.alerts: dict[str, Alert] = {}
        self.groups: dict[str, Group] = {}
        self.nflog: dict[str, LogEntry] = {}
        self._silences: tuple[Silence, ...] = ()
        self._acks: dict[str, Mapping[str, Any]] = {}
        self._domains: dict[str, _Domain] = {}
        self._finished = False
        self._changes = Changes()
        self._transitions: list[Transition] = []
        self._counts = {"pending": 0, "firing": 0, "resolved": 0}
        self._inhibit_index: list[dict[tuple[str, ...], list[str]]] | None = None
        self._targets: dict[str, bool] = {}  # fingerprint -> matches some rule's target side
        # What a flush of an unchanged group can skip (Notifier._unchanged): a counter of
        # state changes, the change that last touched each alert, a counter of silence and
        # ack changes, and per group the counters (and wall time) at its last flush.
        self._gen = 0
        self._alert_gen: dict[str, int] = {}
        self._mute_gen = 0
        self._flushed: dict[str, tuple[int, int, float]] = {}
        self._early: list[Notification] = []  # decided before a tick (a live catch-up)
        #: Observations that arrived behind their domain's watermark (applied at once).
        self.late = 0
        #: Observations dropped as repeats of what was processed before a restart.
        self.replayed = 0

    # -- state in and out ------------------------------------------------------------------
    def _dom(self, name: str) -> _Domain:
        d = self._domains.get(name)
        if d is None:
            d = self._domains[name] = _Domain()
        return d

    def load(self, snap: Snapshot, *, resume: bool = False) -> None:
        """Replace all state with ``snap`` (after a restart, or another process wrote).

        Observations still waiting for their watermark are kept. With ``resume`` (a
        restart) and inputs that are not live (a replay, a file read once, started again
        from the beginning), observations no newer than the saved clock of their domain
        were processed before the restart: they are dropped (:attr:`replayed`). Live
        inputs resume from their recovery snapshot, and what they send again is applied
        (late) like any other data."""
        waiting = {
            k: (d.obs, d.progress, d.newest, d.seq, d.anchor, d.anchor_wall)
            for k, d in self._domains.items()
        }
        self.alerts = dict(snap.alerts)
        self.groups = dict(snap.groups)
        self.nflog = dict(snap.nflog)
        self._domains = {}
        for k, (obs, prog, newest, seq, anchor, anchor_wall) in waiting.items():
            d = self._dom(k)
            d.obs, d.progress, d.newest, d.seq = obs, prog, newest, seq
            d.anchor, d.anchor_wall = anchor, anchor_wall
        now = self.wall() if self.live else 0.0
        for k, t in snap.clock.items():
            d = self._dom(k)
            d.done = max(d.done, t)
            d.data = max(d.data, t)
            if self.live and t > d.anchor:
                d.anchor, d.anchor_wall = t, now
            if resume and not self.live:
                d.known = max(d.known, t)
        self._counts = {"pending": 0, "firing": 0, "resolved": 0}
        for fp, a in self.alerts.items():
            self._counts[a.state] = self._counts.get(a.state, 0) + 1
            self._dom(a.clock).alerts.append((self._deadline(a), fp))
        for k, g in self.groups.items():
            self._dom(g.clock).groups.append((g.next_flush, k))
        for d in self._domains.values():
            heapq.heapify(d.alerts)
            heapq.heapify(d.groups)
        self._inhibit_index = None
        self._alert_gen = {}
        self._flushed = {}
        self._changes = Changes()
        self._early = []  # decided on the state just replaced (a failed step redoes them)

    def clocks(self) -> dict[str, float]:
        """Each domain's event time processed so far, as far as its data tells (a live
        engine's wall clock aside: a restart must not take unseen data for repeats)."""
        return {k: d.data for k, d in self._domains.items() if d.data > -_INF}

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.alerts), dict(self.groups), dict(self.nflog), self.clocks())

    def drain_changes(self) -> Changes:
        """Changes since the last call (the store persists them)."""
        ch, self._changes = self._changes, Changes()
        ch.clock = self.clocks()
        return ch

    def drain_transitions(self) -> list[Transition]:
        out, self._transitions = self._transitions, []
        return out

    def set_silences(self, silences: Iterable[Silence]) -> None:
        self._silences = tuple(silences)
        self._mute_gen += 1

    def set_acks(self, acks: Mapping[str, Mapping[str, Any]]) -> None:
        """Acknowledgements by fingerprint; each names the ``active_at`` it acknowledges."""
        self._acks = dict(acks)
        self._mute_gen += 1

    def alerts_by_state(self) -> dict[str, int]:
        return dict(self._counts)

    def alerts_by_labels(self, max_agencies: int = 50) -> dict[tuple[str, str, str], int]:
        """Alerts counted by (state, severity, agency-or-team), for a bounded gauge.

        Beyond ``max_agencies`` distinct agencies, the rest count as ``"other"``; an alert
        without an agency or team label counts under ``"none"`` (a label value is never
        empty: ``agency=""`` reads as a missing label in PromQL).
        """
        out: dict[tuple[str, str, str], int] = {}
        seen: set[str] = set()
        for a in self.alerts.values():
            lab = a.labels
            agency = lab.get("agency") or lab.get("team") or "none"
            if agency != "none" and agency not in seen:
                if len(seen) >= max_agencies:
                    agency = "other"
                else:
                    seen.add(agency)
            key = (a.state, lab.get("severity") or "none", agency)
            out[key] = out.get(key, 0) + 1
        return out

    def waiting(self) -> int:
        """Observations waiting for their domain's watermark."""
        return sum(len(d.obs) for d in self._domains.values())

    # -- input -----------------------------------------------------------------------------
    def observe(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        ts: float,
        *,
        detected_wall: float = 0.0,
        start: float | None = None,
        hold_s: float = 0.0,
        domain: str = "",
    ) -> None:
        """The episode identified by ``labels`` holds at event time ``ts`` (it began at
        ``start``, and holds until ``ts + hold_s`` without new evidence)."""
        self.add(
            Observation(
                labels, annotations, ts, start, hold_s, domain, detected_wall or time.time()
            )
        )

    def add(self, ob: Observation) -> None:
        """Queue one observation for its domain (applied now if it is late)."""
        if self.clock is not None:
            self.clock.observe(ob.ts)
        d = self._dom(ob.domain)
        if ob.ts <= d.known:
            self.replayed += 1
            return
        if ob.ts > d.newest:
            d.newest = ob.ts
            if self.live:
                if ob.ts > d.anchor:
                    d.anchor, d.anchor_wall = ob.ts, self.wall()
                # Applied at once, but not before the timers its time lets run: detections
                # of different entities come out of order, and an episode's next one must
                # not replace it before its group was flushed (it was never notified).
                self._catch_up(ob.domain, d, self._early)
        if ob.ts < d.done:
            self.late += 1
            self._apply(ob)
            return
        if self.live:
            # Live, an alert starts as soon as its detection arrives (timers still wait
            # for the watermark): what it says does not depend on when that is.
            self._apply(ob)
            return
        d.seq += 1
        heapq.heappush(d.obs, (ob.ts, d.seq, ob))

    def observe_many(self, observations: Iterable[Observation]) -> None:
        for ob in observations:
            self.add(ob)

    def progress(self, domain: str, producer: str, ts: float, of: int = 0) -> None:
        """``producer`` will emit no observation of ``domain`` older than ``ts`` (less
        the lateness) from now on; the domain has ``of`` producers, and its clock waits
        until each has promised something."""
        d = self._dom(domain)
        if of > d.expected:
            d.expected = of
        prog = d.progress
        if ts > prog.get(producer, -_INF):
            prog[producer] = ts
        if self.live and ts > d.anchor:
            d.anchor, d.anchor_wall = ts, self.wall()

    def finish(self) -> list[Notification]:
        """The inputs ended: every domain's time runs out, so every episode ends at its own
        ``valid_until`` and every group flushes at its own time."""
        self._finished = True
        return self.tick()

    def watermark(self, name: str) -> float:
        """The event time up to which ``name`` may be processed now."""
        if self._finished:
            return _INF
        d = self._domains.get(name)
        if d is None:
            return -_INF
        w = self._data_watermark(d)
        if self.live and d.anchor > -_INF:
            # Wall time elapsed since the newest event, not the wall clock itself: a
            # backlog of old events (a restart catching up) must not end every episode
            # at once, then open it again with its next detection.
            wall = self.wall()
            w = max(w, min(wall, d.anchor + (wall - d.anchor_wall)) - self.lateness_s)
        if self.clock is not None:
            w = max(w, self.clock.now())
        return max(w, d.done)

    def _data_watermark(self, d: _Domain) -> float:
        if not d.progress:
            w = d.newest
        elif len(d.progress) < d.expected:
            w = -_INF  # a producer has not spoken yet: it may still emit old detections
        else:
            w = min(d.progress.values())
        return w - self.lateness_s

    def next_due(self) -> float:
        """How far (in event time) the most urgent domain is from its next due item:
        ``<= 0`` means :meth:`tick` has work to do now."""
        best = _INF
        for name, d in self._domains.items():
            heads = [h[0][0] for h in (d.obs, d.alerts, d.groups) if h]
            if heads:
                best = min(best, min(heads) - self.watermark(name))
        return best

    # -- time ------------------------------------------------------------------------------
    def tick(self, *, flush_all: bool = False) -> list[Notification]:
        """Process every domain up to its watermark; ``flush_all`` then flushes every group.

        Within a domain, waiting observations and due timers run in event-time order,
        each at its own time (an observation before a timer due at the same instant).
        """
        out, self._early = self._early, []
        # No reset of the inhibit index here: every change of which alerts fire goes through
        # _transition (and load), which resets it.
        for name in list(self._domains):
            self._catch_up(name, self._domains[name], out)
        if flush_all:
            for key in list(self.groups):
                g = self.groups.get(key)
                if g is not None:
                    out.extend(self._flush(g, self._dom(g.clock).done))
        return out

    def _catch_up(self, name: str, d: _Domain, out: list[Notification]) -> None:
        """Process domain ``name`` up to its watermark."""
        until = self.watermark(name)
        self._run(d, until, out)
        if until > d.done and until != _INF:
            d.done = until
        data = d.newest if self._finished else min(until, self._data_watermark(d))
        if data > d.data:
            d.data = data

    def _run(self, d: _Domain, until: float, out: list[Notification]) -> None:
        obs, ah, gh = d.obs, d.alerts, d.groups
        kept: list[tuple[float, str]] = []  # retention timers, not run at the end of time
        while True:
            to = obs[0][0] if obs else _INF
            ta = ah[0][0] if ah else _INF
            tg = gh[0][0] if gh else _INF
            t = min(to, ta, tg)
            if t > until or t == _INF:
                break
            if t > d.done:
                d.done = t
            if to == t:
                self._apply(heapq.heappop(obs)[2])
            elif ta <= tg:
                _, fp = heapq.heappop(ah)
                a = self.alerts.get(fp)
                if a is None:
                    continue
                if until == _INF and a.state == "resolved":
                    kept.append((ta, fp))
                    continue
                self._advance(a, ta)
            else:
                _, key = heapq.heappop(gh)
                g = self.groups.get(key)
                if g is not None and g.next_flush == tg:
                    # Before the next observation or alert timer (they run first at equal
                    # times), and not past ``until``.
                    idle = min(to, ta, math.nextafter(until, _INF))
                    out.extend(self._flush(g, tg, idle))
        for item in kept:
            heapq.heappush(ah, item)
