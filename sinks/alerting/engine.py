"""The alerting engine: lifecycle, grouping, routing, silences, inhibition. Pure Python.

Inputs are *observations* ("this condition holds at event time ``ts``"); outputs are
:class:`~sinks.alerting.model.Notification`\\ s and
:class:`~sinks.alerting.model.Transition`\\ s. No I/O, no threads: the caller
(:mod:`sinks.alerting.service`) persists state and delivers.

Lifecycle (as Prometheus alerting rules, with "the condition holds" = "an observation
arrived")::

    observation --> pending --(for)--> firing --(no observation for keep_firing_for)--> resolved
                       |                                                                   |
                       +--(no observation for keep_firing_for: dropped, never notified)    |
                                                        (kept resolved_retention, then deleted)

Flows re-emit a detection at least once a minute of event time while a condition holds,
so ``keep_firing_for`` must exceed that period (default 5 min).

Notifications follow Alertmanager's dispatcher and ``DedupStage``: firing alerts join one
group per matching route (``group_by`` labels); a new group waits ``group_wait``, then is
flushed every ``group_interval``; a flush notifies only if the receiver has not been told
about a firing alert, if alerts resolved (``send_resolved``), if everything resolved, or
if ``repeat_interval`` has passed. Muted alerts (silences, maintenance windows, inhibition)
are left out; a resolve of an alert the receiver was told is firing is never muted, so
inhibition or a silence cannot leave a receiver believing something still fires.

Clock
-----
Every timer runs on *engine time*, ``clock.now()``. :class:`HybridClock` (the default in
flows) is the newest event time observed plus the wall time elapsed since it was
observed: in a live run it is about the wall clock, and in a replay at full speed it
follows event time, so ``for``, ``keep_firing_for`` and group timers mean the same in
both. :class:`WallClock` and :class:`EventClock` (event time only, for deterministic
backtests) are the alternatives; tests use :class:`ManualClock`. An alert's timers start
from the engine time at which its observations *arrived* (``active_clock``,
``seen_clock``), so a lagging feed merged with a newer one still keeps its alerts firing
while its detections keep coming.

Examples
--------
>>> from sinks.alerting.routing import Route
>>> clock = ManualClock(1000.0)
>>> eng = AlertEngine(Route(receiver="ops", group_by=("alertname",), group_wait=30),
...                   clock=clock, keep_firing_for_s=300)
>>> eng.observe({"alertname": "x", "entity": "a", "feed": "f"}, {"summary": "s"}, 1000.0)
>>> eng.tick(), eng.alerts_by_state()["firing"]
([], 1)
>>> clock.advance(30)
>>> [(n.receiver, n.reason, len(n.alerts)) for n in eng.tick()]
[('ops', 'first_notification', 1)]
>>> clock.advance(300)   # no observation for keep_firing_for; group_interval is due too
>>> [(n.reason, n.status) for n in eng.tick()], eng.alerts_by_state()["resolved"]
([('all_resolved', 'resolved')], 1)
"""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sinks.alerting.model import (
    Alert,
    InhibitRule,
    MaintenanceWindow,
    Notification,
    Silence,
    Transition,
    matches_all,
)
from sinks.alerting.routing import Route
from sinks.alerting.templates import Templates
from sinks.alerts import ZERO_TIME, _rfc3339, fingerprint


# ---------------------------------------------------------------------------- clocks
class Clock(Protocol):
    def now(self) -> float: ...
    def observe(self, ts: float) -> None: ...


class WallClock:
    """Wall time; observations do not move it."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def now(self) -> float:
        return self._wall()

    def observe(self, ts: float) -> None:
        pass


class EventClock:
    """The newest event time observed (stands still between observations)."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def observe(self, ts: float) -> None:
        if ts > self._t:
            self._t = ts


class HybridClock:
    """Newest event time observed plus the wall time elapsed since; never goes back.

    Before the first observation (and without ``start``) it reads the wall clock without
    latching it, so the first observation of a replay sets engine time to that event's
    time even if it lies years in the past.

    Parameters
    ----------
    start
        Engine time to start from (a restored clock); ``None`` waits for an observation.
    monotonic, wall
        Sources of elapsed and current time (injectable for tests).
    """

    def __init__(
        self,
        start: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._mono = monotonic
        self._wall = wall
        self._base = start
        self._base_mono = monotonic()
        self._last = start if start is not None else float("-inf")
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            if self._base is None:
                return self._wall()
            t = self._base + (self._mono() - self._base_mono)
            if t > self._last:
                self._last = t
            return self._last

    def observe(self, ts: float) -> None:
        with self._lock:
            if self._base is None or ts > self._last:
                self._base, self._base_mono, self._last = ts, self._mono(), ts


class ManualClock:
    """A clock tests move by hand (observations move it forward, like :class:`EventClock`)."""

    def __init__(self, start: float = 0.0, *, follow_events: bool = False) -> None:
        self.t = start
        self.follow_events = follow_events

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def observe(self, ts: float) -> None:
        if self.follow_events and ts > self.t:
            self.t = ts


# ---------------------------------------------------------------------------- state
@dataclass(slots=True)
class Group:
    """One aggregation group: a route, the values of its ``group_by`` labels, its alerts."""

    key: str
    route: str
    receiver: str
    labels: dict[str, str]
    fingerprints: set[str]
    next_flush: float
    created_clock: float
    has_flushed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "route": self.route,
            "receiver": self.receiver,
            "labels": self.labels,
            "fingerprints": sorted(self.fingerprints),
            "next_flush": self.next_flush,
            "created_clock": self.created_clock,
            "has_flushed": self.has_flushed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Group:
        return cls(
            key=d["key"],
            route=d["route"],
            receiver=d["receiver"],
            labels=dict(d["labels"]),
            fingerprints=set(d["fingerprints"]),
            next_flush=float(d["next_flush"]),
            created_clock=float(d["created_clock"]),
            has_flushed=bool(d["has_flushed"]),
        )


@dataclass(slots=True)
class LogEntry:
    """Notification log entry: what a receiver was last told about a group."""

    firing: list[str]
    resolved: list[str]
    clock: float
    seq: int
    epoch: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "firing": self.firing,
            "resolved": self.resolved,
            "clock": self.clock,
            "seq": self.seq,
            "epoch": self.epoch,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogEntry:
        return cls(
            list(d["firing"]),
            list(d["resolved"]),
            float(d["clock"]),
            int(d["seq"]),
            float(d.get("epoch", 0.0)),
        )


@dataclass(slots=True)
class Snapshot:
    """Everything the engine needs to resume: what a store loads and saves."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    nflog: dict[str, LogEntry] = field(default_factory=dict)
    clock: float | None = None


@dataclass(slots=True)
class Changes:
    """What changed since the last :meth:`AlertEngine.drain_changes` (for the store)."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    alerts_deleted: set[str] = field(default_factory=set)
    groups: dict[str, Group] = field(default_factory=dict)
    groups_deleted: set[str] = field(default_factory=set)
    nflog: dict[str, LogEntry] = field(default_factory=dict)
    nflog_deleted: set[str] = field(default_factory=set)
    clock: float = 0.0

    def __bool__(self) -> bool:
        return bool(
            self.alerts
            or self.alerts_deleted
            or self.groups
            or self.groups_deleted
            or self.nflog
            or self.nflog_deleted
        )


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    """What the engine needs to know about a receiver."""

    language: str = "en"
    send_resolved: bool = True


def notification_id(receiver: str, group_key: str, epoch: float, seq: int) -> str:
    """Idempotency key of a group's ``seq``-th notification to ``receiver``."""
    raw = f"{receiver}\x00{group_key}\x00{epoch!r}\x00{seq}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


# ---------------------------------------------------------------------------- engine
class AlertEngine:
    """Alert lifecycle, grouping, routing and muting, driven by :meth:`observe` and :meth:`tick`.

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
        Lifecycle timers in seconds of engine time.
    templates
        Renders summary and description in each receiver's language.
    clock
        Engine time (see the module docstring).
    external_url
        Put in each alert's ``generatorURL`` when set.
    wall
        Wall clock. Silences (set by operators "from now for two hours") are evaluated on
        it; maintenance windows and every other timer on engine time, so a replay of last
        year's logs honours last year's Sunday maintenance window.
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
        self.clock: Clock = clock or HybridClock()
        self.external_url = external_url
        self._routes = {r.path: r for r in route.walk()}
        self.alerts: dict[str, Alert] = {}
        self.groups: dict[str, Group] = {}
        self.nflog: dict[str, LogEntry] = {}
        self._silences: tuple[Silence, ...] = ()
        self._acks: dict[str, Mapping[str, Any]] = {}
        self._alert_heap: list[tuple[float, str]] = []
        self._group_heap: list[tuple[float, str]] = []
        self._changes = Changes()
        self._transitions: list[Transition] = []
        self._counts = {"pending": 0, "firing": 0, "resolved": 0}
        self._inhibit_index: list[dict[tuple[str, ...], list[str]]] | None = None

    # -- state in and out ------------------------------------------------------------------
    def load(self, snap: Snapshot) -> None:
        """Replace all state with ``snap`` (after a restart, or another process wrote)."""
        self.alerts = dict(snap.alerts)
        self.groups = dict(snap.groups)
        self.nflog = dict(snap.nflog)
        self._counts = {"pending": 0, "firing": 0, "resolved": 0}
        for a in self.alerts.values():
            self._counts[a.state] = self._counts.get(a.state, 0) + 1
        self._alert_heap = [(self._deadline(a), fp) for fp, a in self.alerts.items()]
        heapq.heapify(self._alert_heap)
        self._group_heap = [(g.next_flush, k) for k, g in self.groups.items()]
        heapq.heapify(self._group_heap)
        self._inhibit_index = None
        self._changes = Changes()

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.alerts), dict(self.groups), dict(self.nflog), self.clock.now())

    def drain_changes(self) -> Changes:
        """Changes since the last call (the store persists them)."""
        ch, self._changes = self._changes, Changes()
        ch.clock = self.clock.now()
        return ch

    def drain_transitions(self) -> list[Transition]:
        out, self._transitions = self._transitions, []
        return out

    def set_silences(self, silences: Iterable[Silence]) -> None:
        self._silences = tuple(silences)

    def set_acks(self, acks: Mapping[str, Mapping[str, Any]]) -> None:
        """Acknowledgements by fingerprint; each names the ``active_at`` it acknowledges."""
        self._acks = dict(acks)

    def alerts_by_state(self) -> dict[str, int]:
        return dict(self._counts)

    def alerts_by_labels(self, max_agencies: int = 50) -> dict[tuple[str, str, str], int]:
        """Alerts counted by (state, severity, agency-or-team), for a bounded gauge.

        Beyond ``max_agencies`` distinct agencies, the rest count as ``"other"``; an alert
        without an agency or team label counts under ``""``.
        """
        out: dict[tuple[str, str, str], int] = {}
        seen: set[str] = set()
        for a in self.alerts.values():
            lab = a.labels
            agency = lab.get("agency") or lab.get("team") or ""
            if agency and agency not in seen:
                if len(seen) >= max_agencies:
                    agency = "other"
                else:
                    seen.add(agency)
            key = (a.state, lab.get("severity", ""), agency)
            out[key] = out.get(key, 0) + 1
        return out

    # -- input -----------------------------------------------------------------------------
    def observe(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        ts: float,
        *,
        detected_wall: float = 0.0,
    ) -> None:
        """The condition identified by ``labels`` holds at event time ``ts``."""
        self.clock.observe(ts)
        now = self.clock.now()
        fp = fingerprint(dict(labels))
        a = self.alerts.get(fp)
        if a is None or a.state == "resolved":
            if a is not None and ts <= a.last_seen:
                return  # a replayed observation of an episode that is over
            old = "inactive" if a is None else "resolved"
            if a is not None:
                self._counts["resolved"] -= 1
            a = Alert(
                fingerprint=fp,
                labels=dict(labels),
                annotations=dict(annotations),
                state="pending",
                active_at=ts,
                last_seen=ts,
                active_clock=now,
                seen_clock=now,
                detected_wall=detected_wall or time.time(),
            )
            self.alerts[fp] = a
            self._counts["pending"] += 1
            self._transition(a, old, now)
            self._push_alert(a)
        else:
            if ts >= a.last_seen:
                a.annotations = dict(annotations)
                a.last_seen = ts
            a.seen_clock = now
            a.observations += 1
        self._changes.alerts[fp] = a
        self._changes.alerts_deleted.discard(fp)

    def observe_many(
        self,
        observations: Iterable[tuple[Mapping[str, str], Mapping[str, str], float]],
        *,
        detected_wall: float = 0.0,
    ) -> None:
        """Observe a batch that arrived together: the clock first moves to the batch's
        newest event time, so every alert of the batch counts as seen at that engine time
        (a batch mixing a lagging feed with a newer one must not make the lagging feed's
        alerts stale on arrival)."""
        obs = list(observations)
        if not obs:
            return
        self.clock.observe(max(ts for _, _, ts in obs))
        for labels, ann, ts in obs:
            self.observe(labels, ann, ts, detected_wall=detected_wall)

    # -- time ------------------------------------------------------------------------------
    def tick(self, *, flush_all: bool = False) -> list[Notification]:
        """Advance lifecycles and flush due groups; ``flush_all`` then flushes every group.

        Due timers run in the order of their due times, each at its own time, as they would
        have run live: in a replay where one step jumps engine time by hours, a group whose
        ``group_wait`` ended before its alert resolved still announces the alert first.
        """
        now = self.clock.now()
        heap, gheap = self._alert_heap, self._group_heap
        out: list[Notification] = []
        self._inhibit_index = None
        inf = float("inf")
        while True:
            ta = heap[0][0] if heap else inf
            tg = gheap[0][0] if gheap else inf
            if min(ta, tg) > now:
                break
            if ta <= tg:
                _, fp = heapq.heappop(heap)
                a = self.alerts.get(fp)
                if a is not None:
                    self._advance(a, ta)
            else:
                _, key = heapq.heappop(gheap)
                g = self.groups.get(key)
                if g is not None and g.next_flush == tg:
                    out.extend(self._flush(g, tg))
        if flush_all:
            for key in list(self.groups):
                g = self.groups.get(key)
                if g is not None:
                    out.extend(self._flush(g, now))
        return out

    def _deadline(self, a: Alert) -> float:
        if a.state == "pending":
            return min(a.active_clock + self.for_s, a.seen_clock + self.keep_firing_for_s)
        if a.state == "firing":
            return a.seen_clock + self.keep_firing_for_s
        return (a.resolved_clock or 0.0) + self.resolved_retention_s

    def _push_alert(self, a: Alert) -> None:
        heapq.heappush(self._alert_heap, (self._deadline(a), a.fingerprint))

    def _advance(self, a: Alert, now: float) -> None:
        fp = a.fingerprint
        if a.state == "pending":
            if now - a.seen_clock >= self.keep_firing_for_s:
                del self.alerts[fp]
                self._counts["pending"] -= 1
                self._changes.alerts.pop(fp, None)
                self._changes.alerts_deleted.add(fp)
                self._transition(a, "pending", now, new="inactive")
                return
            if now - a.active_clock >= self.for_s:
                self._fire(a, now)
        elif a.state == "firing":
            if now - a.seen_clock >= self.keep_firing_for_s:
                a.state = "resolved"
                a.resolved_clock = now
                a.ends_at = a.last_seen + self.keep_firing_for_s
                self._counts["firing"] -= 1
                self._counts["resolved"] += 1
                self._changes.alerts[fp] = a
                self._transition(a, "firing", now)
        elif now - (a.resolved_clock or 0.0) >= self.resolved_retention_s and not any(
            fp in g.fingerprints for g in self.groups.values()
        ):
            del self.alerts[fp]
            self._counts["resolved"] -= 1
            self._changes.alerts.pop(fp, None)
            self._changes.alerts_deleted.add(fp)
            return
        self._push_alert(a)

    def _fire(self, a: Alert, now: float) -> None:
        a.state = "firing"
        a.fired_clock = now
        a.fired_at = a.active_at if self.for_s == 0 else max(a.active_at, a.last_seen)
        self._counts["pending"] -= 1
        self._counts["firing"] += 1
        self._changes.alerts[a.fingerprint] = a
        self._transition(a, "pending", now)
        for route in self.route.match(a.labels):
            key = self.route.group_key(route, a.labels)
            g = self.groups.get(key)
            if g is None:
                g = Group(
                    key=key,
                    route=route.path,
                    receiver=route.receiver,
                    labels=route.group_labels(a.labels),
                    fingerprints=set(),
                    next_flush=now + route.group_wait,
                    created_clock=now,
                )
                self.groups[key] = g
                heapq.heappush(self._group_heap, (g.next_flush, key))
            g.fingerprints.add(a.fingerprint)
            # Alertmanager: an alert that started longer than group_wait ago, joining a group
            # that has not flushed yet, makes it flush now.
            if not g.has_flushed and a.active_clock + route.group_wait <= now < g.next_flush:
                g.next_flush = now
                heapq.heappush(self._group_heap, (now, key))
            self._changes.groups[key] = g

    def _transition(self, a: Alert, old: str, now: float, *, new: str | None = None) -> None:
        self._inhibit_index = None  # firing sources may have changed
        self._transitions.append(
            Transition(
                fingerprint=a.fingerprint,
                old=old,
                new=new or a.state,
                clock=now,
                labels=a.labels,
                annotations=a.annotations,
                alert=self.alert_dict(a),
            )
        )

    # -- muting ----------------------------------------------------------------------------
    def silenced_by(self, labels: Mapping[str, str]) -> list[str]:
        """Ids of the silences muting ``labels`` now (wall clock)."""
        wall = self.wall()
        return [s.id for s in self._silences if s.mutes(labels, wall)]

    def _muted(self, a: Alert, route: Route, now: float) -> bool:
        labels = a.labels
        wall = self.wall()
        if any(s.mutes(labels, wall) for s in self._silences):
            return True
        if any(w.mutes(labels, now) for w in self._global_windows):
            return True
        for name in route.mute_windows:
            w = self._named_windows.get(name)
            if w is not None and w.mutes(labels, now):
                return True
        return self._inhibited(a)

    def _inhibited(self, a: Alert) -> bool:
        if not self.inhibit_rules:
            return False
        if self._inhibit_index is None:
            index: list[dict[tuple[str, ...], list[str]]] = []
            for rule in self.inhibit_rules:
                by_equal: dict[tuple[str, ...], list[str]] = {}
                for fp, src in self.alerts.items():
                    if src.state == "firing" and matches_all(rule.source, src.labels):
                        key = tuple(src.labels.get(n, "") for n in rule.equal)
                        by_equal.setdefault(key, []).append(fp)
                index.append(by_equal)
            self._inhibit_index = index
        for rule, by_equal in zip(self.inhibit_rules, self._inhibit_index, strict=True):
            if not matches_all(rule.target, a.labels):
                continue
            key = tuple(a.labels.get(n, "") for n in rule.equal)
            target_is_source = matches_all(rule.source, a.labels)
            for fp in by_equal.get(key, ()):
                if fp == a.fingerprint:
                    continue  # an alert never inhibits itself
                # Alertmanager: an alert matching both sides is only inhibited by sources
                # that do not also match the target side (no mutual inhibition).
                if target_is_source and matches_all(rule.target, self.alerts[fp].labels):
                    continue
                return True
        return False

    def _acked(self, a: Alert) -> bool:
        ack = self._acks.get(a.fingerprint)
        return ack is not None and float(ack.get("active_at", -1)) == a.active_at

    # -- notifications ---------------------------------------------------------------------
    def _flush(self, g: Group, now: float) -> list[Notification]:
        route = self._routes.get(g.route)
        if route is None:  # the route tree changed since this group was stored
            route = self.route
        opts = self.receivers.get(g.receiver, ReceiverOptions())
        nkey = f"{g.receiver}|{g.key}"
        entry = self.nflog.get(nkey)
        told_firing = set(entry.firing) if entry else set()
        firing: list[Alert] = []
        resolved: list[Alert] = []
        gone: set[str] = set()
        for fp in sorted(g.fingerprints):
            a = self.alerts.get(fp)
            if a is None or a.state == "pending":
                gone.add(fp)
            elif a.state == "firing":
                if not self._muted(a, route, now):
                    firing.append(a)
            elif fp in told_firing or not self._muted(a, route, now):
                resolved.append(a)  # a resolve the receiver needs is never muted
                gone.add(fp)
            else:
                gone.add(fp)
        firing_set = {a.fingerprint for a in firing}
        resolved_set = {a.fingerprint for a in resolved}
        # Alertmanager stops the pipeline when muting left no alert: nothing is decided and
        # the notification log keeps what the receiver was last told.
        reason = (
            _needs_update(
                entry, firing_set, resolved_set, route.repeat_interval, opts.send_resolved, now
            )
            if firing or resolved
            else None
        )
        if reason == "repeat" and firing and all(self._acked(a) for a in firing):
            reason = None  # acknowledged: no reminders until something changes
        out: list[Notification] = []
        if reason is not None:
            seq = (entry.seq if entry else 0) + 1
            epoch = entry.epoch if entry else g.created_clock
            send = firing + (resolved if opts.send_resolved else [])
            if send:
                out.append(
                    Notification(
                        id=notification_id(g.receiver, g.key, epoch, seq),
                        receiver=g.receiver,
                        group_key=g.key,
                        seq=seq,
                        reason=reason,
                        status="firing" if firing else "resolved",
                        group_labels=dict(g.labels),
                        alerts=tuple(self.alert_dict(a, opts.language) for a in send),
                        clock=now,
                        detected_wall=min(
                            (a.detected_wall for a in firing if a.fingerprint not in told_firing),
                            default=0.0,
                        ),
                    )
                )
            entry = LogEntry(sorted(firing_set), sorted(resolved_set), now, seq, epoch)
            self.nflog[nkey] = entry
            self._changes.nflog[nkey] = entry
        g.fingerprints -= gone
        g.has_flushed = True
        if g.fingerprints:
            g.next_flush = now + route.group_interval
            heapq.heappush(self._group_heap, (g.next_flush, g.key))
            self._changes.groups[g.key] = g
        else:
            del self.groups[g.key]
            self._changes.groups.pop(g.key, None)
            self._changes.groups_deleted.add(g.key)
            if entry is not None and not entry.firing:
                # Nothing left to resolve: forget the log entry (bounded state).
                self.nflog.pop(nkey, None)
                self._changes.nflog.pop(nkey, None)
                self._changes.nflog_deleted.add(nkey)
        return out

    def alert_dict(self, a: Alert, language: str = "en") -> dict[str, Any]:
        """The alert as one entry of an Alertmanager webhook payload (plus Vigil fields)."""
        ann = self.templates.render(language, a.labels, a.annotations)
        return {
            "status": "firing" if a.state != "resolved" else "resolved",
            "labels": dict(a.labels),
            "annotations": ann,
            "startsAt": _rfc3339(a.active_at),
            "endsAt": _rfc3339(a.ends_at) if a.ends_at is not None else ZERO_TIME,
            "generatorURL": self.external_url,
            "fingerprint": a.fingerprint,
            "dedup_key": f"{a.fingerprint}@{int(a.active_at)}",
        }


def _needs_update(
    entry: LogEntry | None,
    firing: set[str],
    resolved: set[str],
    repeat: float,
    send_resolved: bool,
    now: float,
) -> str | None:
    """Alertmanager's ``DedupStage.needsUpdate``, returning why (or ``None``)."""
    if entry is None:
        return "first_notification" if firing else None
    told = set(entry.firing)
    if not firing <= told:
        return "new_alerts" if told else "first_notification"
    if not firing:
        # Alerts that fired and resolved between two flushes were never announced:
        # nothing to tell.
        return "all_resolved" if told else None
    if send_resolved and not resolved <= set(entry.resolved):
        return "some_resolved"
    if entry.clock < now - repeat:
        return "repeat"
    return None
