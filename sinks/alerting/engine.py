"""The alerting engine: lifecycle, grouping, routing, silences, inhibition. Pure Python.

Inputs are *observations* ("this episode holds at event time ``ts``, and until ``ts +
hold`` without new evidence") and *watermarks* (a producer's promise that its next
observations of a domain are not older than ``ts``); outputs are
:class:`~vigil.sinks.alerting.model.Notification`\\ s and
:class:`~vigil.sinks.alerting.model.Transition`\\ s.
No I/O, no threads: the caller (:mod:`vigil.sinks.alerting.service`) persists state and delivers.

Time model
----------
Every timer runs on **event time**, per **domain** (``security/ssh``, ``security/zeek``,
``media``...: the feed and log source an observation came from), so feeds of different
eras in one process never move each other's clocks. A domain's clock is its *watermark*:
the smallest promise of its producers (:meth:`AlertEngine.progress`), less
``lateness_s``; a domain with no producer follows its newest observation, less
``lateness_s``; in a ``live`` engine it never falls behind the wall clock less
``lateness_s``, so a quiet live feed still resolves its alerts; :meth:`AlertEngine.finish`
(the end of a finite input) moves every domain to the end of time.

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

import hashlib
import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vigil.sinks.alerting.model import (
    Alert,
    InhibitRule,
    MaintenanceWindow,
    Notification,
    Silence,
    Transition,
    matches_all,
)
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.templates import Templates
from vigil.sinks.alerts import ZERO_TIME, _rfc3339, fingerprint

_INF = math.inf

#: Annotations an update does not replace: the text at ``startsAt`` states the start.
START_ANNOTATIONS = frozenset(
    {"summary", "description", "observed", "value_at_start", "first_seen", "threshold"}
)


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

    Given to an engine as ``clock``, it is a floor under every domain's watermark (the
    engine's older, single-clock model; flows use per-domain watermarks instead).

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
    """A clock tests move by hand (observations move it forward, like :class:`EventClock`).

    Given to an engine as ``clock``, it is a floor under every domain's watermark.
    """

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


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation of an episode (see :meth:`AlertEngine.observe`)."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ts: float
    start: float | None = None
    hold_s: float = 0.0
    domain: str = ""
    detected_wall: float = 0.0


# ---------------------------------------------------------------------------- state
@dataclass(slots=True)
class Group:
    """One aggregation group: a route, the values of its ``group_by`` labels, its alerts.

    Its timers run on the event time of its domain (``clock``).
    """

    key: str
    route: str
    receiver: str
    labels: dict[str, str]
    fingerprints: set[str]
    next_flush: float
    created_clock: float
    has_flushed: bool = False
    clock: str = ""

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
            "clock": self.clock,
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
            clock=str(d.get("clock", "")),
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


def merge_clocks(*clocks: Mapping[str, float] | None) -> dict[str, float]:
    """The newest time of each domain over several saved clocks (several processes)."""
    out: dict[str, float] = {}
    for c in clocks:
        for k, v in (c or {}).items():
            if v > out.get(k, -_INF):
                out[k] = v
    return out


def clocks_from_raw(raw: Any) -> dict[str, float]:
    """Saved clocks from what a store holds: a JSON object, or one number (older stores)."""
    if raw in (None, b"", ""):
        return {}
    if isinstance(raw, Mapping):
        return {str(k): float(v) for k, v in raw.items()}
    if isinstance(raw, bytes | str):
        import orjson

        try:
            val = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
        return clocks_from_raw(val) if isinstance(val, Mapping) else {"": float(val)}
    return {"": float(raw)}


@dataclass(slots=True)
class Snapshot:
    """Everything the engine needs to resume: what a store loads and saves.

    ``clock`` maps each domain to the event time up to which it was processed.
    """

    alerts: dict[str, Alert] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    nflog: dict[str, LogEntry] = field(default_factory=dict)
    clock: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Changes:
    """What changed since the last :meth:`AlertEngine.drain_changes` (for the store)."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    alerts_deleted: set[str] = field(default_factory=set)
    groups: dict[str, Group] = field(default_factory=dict)
    groups_deleted: set[str] = field(default_factory=set)
    nflog: dict[str, LogEntry] = field(default_factory=dict)
    nflog_deleted: set[str] = field(default_factory=set)
    clock: dict[str, float] = field(default_factory=dict)

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
    """Idempotency key of a group's ``seq``-th notification to ``receiver``.

    ``epoch`` is the group's creation in event time, so a replay decides the same keys.
    """
    raw = f"{receiver}\x00{group_key}\x00{epoch!r}\x00{seq}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class _Domain:
    """Timers and waiting observations of one event-time domain."""

    __slots__ = (
        "alerts",
        "data",
        "done",
        "expected",
        "groups",
        "known",
        "newest",
        "obs",
        "progress",
        "seq",
    )

    def __init__(self) -> None:
        self.obs: list[tuple[float, int, Observation]] = []  # waiting for the watermark
        self.alerts: list[tuple[float, str]] = []  # (deadline, fingerprint)
        self.groups: list[tuple[float, str]] = []  # (next flush, group key)
        self.progress: dict[str, float] = {}  # producer -> promise
        self.expected = 0  # producers that must have promised before the clock moves
        self.newest = -_INF  # newest observation (domains without producers)
        self.done = -_INF  # processed up to here
        self.data = -_INF  # ...of which the data itself vouches for (no wall clock)
        self.known = -_INF  # processed before a restart: observations up to here are repeats
        self.seq = 0


# ---------------------------------------------------------------------------- engine
class AlertEngine:
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
        The inputs are live: a domain's watermark never falls behind the wall clock less
        ``lateness_s``, so a quiet feed still resolves. Replays and backtests are not live.
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
        waiting = {k: (d.obs, d.progress, d.newest, d.seq) for k, d in self._domains.items()}
        self.alerts = dict(snap.alerts)
        self.groups = dict(snap.groups)
        self.nflog = dict(snap.nflog)
        self._domains = {}
        for k, (obs, prog, newest, seq) in waiting.items():
            d = self._dom(k)
            d.obs, d.progress, d.newest, d.seq = obs, prog, newest, seq
        for k, t in snap.clock.items():
            d = self._dom(k)
            d.done = max(d.done, t)
            d.data = max(d.data, t)
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
        self._changes = Changes()

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
        if self.live:
            w = max(w, self.wall() - self.lateness_s)
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
        out: list[Notification] = []
        self._inhibit_index = None
        for name in list(self._domains):
            d = self._domains[name]
            until = self.watermark(name)
            self._run(d, until, out)
            if until > d.done and until != _INF:
                d.done = until
            data = d.newest if self._finished else min(until, self._data_watermark(d))
            if data > d.data:
                d.data = data
        if flush_all:
            for key in list(self.groups):
                g = self.groups.get(key)
                if g is not None:
                    out.extend(self._flush(g, self._dom(g.clock).done))
        return out

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
                    out.extend(self._flush(g, tg))
        for item in kept:
            heapq.heappush(ah, item)

    def _hold(self, ob: Observation) -> float:
        return ob.hold_s if ob.hold_s > 0 else self.keep_firing_for_s

    def _apply(self, ob: Observation) -> None:
        """Apply one observation at its own event time."""
        t = ob.ts
        labels = dict(ob.labels)
        fp = fingerprint(labels)
        a = self.alerts.get(fp)
        until = t + self._hold(ob)
        if a is not None and a.state != "resolved" and t > a.valid_until:
            # Evidence after the episode's end that arrived before its timer ran (a live
            # engine applies observations at once): the episode ended at valid_until.
            self._advance(a, a.valid_until)
        if a is not None and a.state != "resolved":
            # The same episode: an active alert has not reached its end yet, so this is
            # new evidence within its hold.
            if t >= a.last_seen:
                a.last_seen = t
                a.seen_clock = t
                a.annotations = _updated(a.annotations, ob.annotations)
            if until > a.valid_until:
                a.valid_until = until
            a.observations += 1
            self._changes.alerts[fp] = a
            self._changes.alerts_deleted.discard(fp)
            return
        start = ob.start if ob.start is not None and ob.start <= t else t
        if a is not None:
            # Resolved. Late evidence of that same episode is recorded, never re-fired.
            if start <= a.active_at or t <= (a.ends_at or a.valid_until):
                if start == a.active_at or t <= (a.ends_at or a.valid_until):
                    a.observations += 1
                    self._changes.alerts[fp] = a
                    return
                start = t
            self._counts["resolved"] -= 1
        old = "inactive" if a is None else "resolved"
        a = Alert(
            fingerprint=fp,
            labels=labels,
            annotations=dict(ob.annotations),
            state="pending",
            active_at=start,
            last_seen=t,
            active_clock=t,
            seen_clock=t,
            detected_wall=ob.detected_wall or time.time(),
            valid_until=until,
            clock=ob.domain,
        )
        self.alerts[fp] = a
        self._counts["pending"] += 1
        self._transition(a, old, t)
        self._changes.alerts[fp] = a
        self._changes.alerts_deleted.discard(fp)
        if self.for_s <= 0 or start + self.for_s <= t:
            self._fire(a, t)
        self._push_alert(a)

    def _deadline(self, a: Alert) -> float:
        if a.state == "pending":
            return min(a.active_at + self.for_s, a.valid_until)
        if a.state == "firing":
            return a.valid_until
        return (a.resolved_clock or 0.0) + self.resolved_retention_s

    def _push_alert(self, a: Alert) -> None:
        heapq.heappush(self._dom(a.clock).alerts, (self._deadline(a), a.fingerprint))

    def _advance(self, a: Alert, now: float) -> None:
        fp = a.fingerprint
        due = self._deadline(a)
        if due > now:  # extended since this timer was set
            self._push_alert(a)
            return
        if a.state == "pending":
            if a.active_at + self.for_s <= a.valid_until:
                self._fire(a, now)
                self._push_alert(a)
                return
            del self.alerts[fp]
            self._counts["pending"] -= 1
            self._changes.alerts.pop(fp, None)
            self._changes.alerts_deleted.add(fp)
            self._transition(a, "pending", now, new="inactive")
            return
        if a.state == "firing":
            a.state = "resolved"
            a.resolved_clock = now
            a.ends_at = a.valid_until
            self._counts["firing"] -= 1
            self._counts["resolved"] += 1
            self._changes.alerts[fp] = a
            self._transition(a, "firing", now)
            self._push_alert(a)
            return
        if any(fp in g.fingerprints for g in self.groups.values()):
            heapq.heappush(self._dom(a.clock).alerts, (now + self.resolved_retention_s, fp))
            return
        del self.alerts[fp]
        self._counts["resolved"] -= 1
        self._changes.alerts.pop(fp, None)
        self._changes.alerts_deleted.add(fp)

    def _fire(self, a: Alert, now: float) -> None:
        a.state = "firing"
        a.fired_clock = now
        a.fired_at = a.active_at if self.for_s == 0 else a.active_at + self.for_s
        self._counts["pending"] -= 1
        self._counts["firing"] += 1
        self._changes.alerts[a.fingerprint] = a
        self._transition(a, "pending", now)
        dom = self._dom(a.clock)
        for route in self.route.match(a.labels):
            key = self.route.group_key(route, a.labels)
            if a.clock:
                key = f"{key}@{a.clock}"
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
                    clock=a.clock,
                )
                self.groups[key] = g
                heapq.heappush(dom.groups, (g.next_flush, key))
            g.fingerprints.add(a.fingerprint)
            # Alertmanager: an alert that started longer than group_wait ago, joining a group
            # that has not flushed yet, makes it flush now.
            if not g.has_flushed and a.active_at + route.group_wait <= now < g.next_flush:
                g.next_flush = now
                heapq.heappush(dom.groups, (now, key))
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
        if reason == "repeat" and self._finished:
            reason = None  # the input has ended: nothing happens that a reminder could stress
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
                        alerts=tuple(
                            self.alert_dict(a, opts.language, update=a.fingerprint in told_firing)
                            for a in send
                        ),
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
            heapq.heappush(self._dom(g.clock).groups, (g.next_flush, g.key))
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

    def alert_dict(self, a: Alert, language: str = "en", *, update: bool = False) -> dict[str, Any]:
        """The alert as one entry of an Alertmanager webhook payload (plus Vigil fields).

        ``update`` marks an alert the receiver was already told is firing (an update of it:
        newer ``latest_*``, ``peak_*`` and ``evidence_*`` annotations, same start text).
        """
        ann = self.templates.render(language, a.labels, a.annotations)
        return {
            "update": update,
            "status": "firing" if a.state != "resolved" else "resolved",
            "labels": dict(a.labels),
            "annotations": ann,
            "startsAt": _rfc3339(a.active_at),
            "endsAt": _rfc3339(a.ends_at) if a.ends_at is not None else ZERO_TIME,
            "generatorURL": self.external_url,
            "fingerprint": a.fingerprint,
            "dedup_key": f"{a.fingerprint}@{int(a.active_at)}",
        }


def _updated(start: Mapping[str, str], newest: Mapping[str, str]) -> dict[str, str]:
    """Annotations of an episode after an update: the start's text, the newest figures.

    >>> _updated({"summary": "5 failures", "peak_value": "5"},
    ...          {"summary": "9 failures", "peak_value": "9", "latest_value": "9"})
    {'summary': '5 failures', 'peak_value': '9', 'latest_value': '9'}
    """
    out = dict(newest)
    for k in START_ANNOTATIONS:
        if k in start:
            out[k] = start[k]
        else:
            out.pop(k, None)
    # Keep the start's key order, then the newest's new keys.
    return {**{k: out[k] for k in start if k in out}, **out}


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
