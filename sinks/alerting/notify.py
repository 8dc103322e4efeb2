"""Muting and notifications of the alerting engine: silences, maintenance windows,
inhibition, and the flush of a group (Alertmanager's ``DedupStage``).

:class:`Notifier` is a mixin of :class:`~vigil.sinks.alerting.engine.AlertEngine`. Its own
module: what a flush tells each receiver, apart from when alerts fire and resolve.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.sinks.alerting.model import (
    Alert,
    InhibitRule,
    MaintenanceWindow,
    Notification,
    Silence,
    matches_all,
)
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.state import Changes, Group, LogEntry, _Domain
from vigil.sinks.alerting.templates import Templates
from vigil.sinks.alerts import ZERO_TIME, _rfc3339


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


class Notifier:
    """Muting and notifications of :class:`~vigil.sinks.alerting.engine.AlertEngine` (a mixin).

    The attributes are set by the engine's ``__init__``.
    """

    route: Route
    wall: Callable[[], float]
    receivers: dict[str, ReceiverOptions]
    inhibit_rules: tuple[InhibitRule, ...]
    templates: Templates
    external_url: str
    alerts: dict[str, Alert]
    groups: dict[str, Group]
    nflog: dict[str, LogEntry]
    _routes: dict[str, Route]
    _named_windows: dict[str, MaintenanceWindow]
    _global_windows: tuple[MaintenanceWindow, ...]
    _silences: tuple[Silence, ...]
    _acks: dict[str, Mapping[str, Any]]
    _finished: bool
    _changes: Changes
    _inhibit_index: list[dict[tuple[str, ...], list[str]]] | None
    _targets: dict[str, bool]
    _gen: int
    _alert_gen: dict[str, int]
    _mute_gen: int
    _flushed: dict[str, tuple[int, int, float]]

    if TYPE_CHECKING:

        def _dom(self, name: str) -> _Domain: ...

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
        # An alert's labels never change (its fingerprint is their hash), so whether it can
        # be a target at all is decided once; most alerts match no rule's target side.
        targets = self._targets
        can = targets.get(a.fingerprint)
        if can is None:
            if len(targets) > 100_000:
                targets.clear()
            can = targets[a.fingerprint] = any(
                matches_all(rule.target, a.labels) for rule in self.inhibit_rules
            )
        if not can:
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
    def _unchanged(self, g: Group, route: Route, entry: LogEntry | None, now: float) -> bool:
        """Whether flushing ``g`` again would decide exactly what its last flush did.

        After a flush a group holds only firing alerts (muted or not) and its log entry says
        what the receiver knows, so a flush with the same alerts in the same states and the
        same muting decides nothing: it only moves the group's timer. That holds until one
        of its alerts changes state (:attr:`_alert_gen`), the silences or acks change
        (:attr:`_mute_gen`), a silence starts or ends, a reminder falls due, or, with
        inhibit rules, any alert changes state while one of the group's can be a target.
        Maintenance windows follow event time: groups they can mute always flush.
        """
        stamp = self._flushed.get(g.key)
        if stamp is None:
            return False
        gen, mute_gen, wall = stamp
        if mute_gen != self._mute_gen or self._global_windows or route.mute_windows:
            return False
        if _reminder_due(entry, route, now):
            return False
        if self._silences:
            lo, hi = sorted((wall, self.wall()))
            if any(lo < s.starts_at <= hi or lo < s.ends_at <= hi for s in self._silences):
                return False
        if gen == self._gen:  # no alert changed state anywhere since
            return True
        alerts, seen, targets = self.alerts, self._alert_gen, self._targets
        inhibit = bool(self.inhibit_rules)
        for fp in g.fingerprints:
            if fp not in alerts or seen.get(fp, 0) > gen:
                return False
            if inhibit and targets.get(fp, True):
                return False  # another alert's change may inhibit it, or stop doing so
        return True

    def _reschedule(self, g: Group, route: Route, now: float) -> None:
        """The group's next flush, one ``group_interval`` from ``now``."""
        g.next_flush = now + route.group_interval
        heapq.heappush(self._dom(g.clock).groups, (g.next_flush, g.key))
        self._changes.groups[g.key] = g

    def _flush(self, g: Group, now: float, idle_before: float = -math.inf) -> list[Notification]:
        """Flush ``g`` at event time ``now``.

        ``idle_before``: nothing else that can change what the group decides (an
        observation, an alert's timer) runs in its domain before that time. An unchanged
        group's flushes until then would each only move its timer by ``group_interval``
        (a firing alert of a long episode: one flush every five minutes for weeks), so
        they are taken in one go: its timer lands on the first of them that is not
        before ``idle_before`` or at which a reminder is due, at the same times.
        """
        route = self._routes.get(g.route)
        if route is None:  # the route tree changed since this group was stored
            route = self.route
        nkey = f"{g.receiver}|{g.key}"
        entry = self.nflog.get(nkey)
        if self._unchanged(g, route, entry, now):
            step = route.group_interval
            if step > 0 and idle_before < math.inf:
                # The same additions as one flush after the other (same float times).
                nxt = now + step
                while nxt < idle_before and not _reminder_due(entry, route, nxt):
                    now, nxt = nxt, nxt + step
            self._reschedule(g, route, now)
            return []
        opts = self.receivers.get(g.receiver, ReceiverOptions())
        wall = self.wall() if self._silences else 0.0  # before any silence is read
        told_firing = set(entry.firing) if entry else set()
        firing: list[Alert] = []
        resolved: list[Alert] = []
        gone: set[str] = set()
        fps = g.fingerprints
        for fp in sorted(fps) if len(fps) > 1 else fps:
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
            entry = LogEntry(_sorted(firing_set), _sorted(resolved_set), now, seq, epoch)
            self.nflog[nkey] = entry
            self._changes.nflog[nkey] = entry
            self._changes.nflog_deleted.discard(nkey)
        if gone:
            g.fingerprints -= gone
        g.has_flushed = True
        if g.fingerprints:
            self._reschedule(g, route, now)
            self._flushed[g.key] = (self._gen, self._mute_gen, wall)
        else:
            self._flushed.pop(g.key, None)
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


def _reminder_due(entry: LogEntry | None, route: Route, now: float) -> bool:
    """Whether a flush at ``now`` may send a reminder (``repeat_interval`` passed)."""
    return entry is not None and entry.clock < now - route.repeat_interval


def _sorted(fps: set[str]) -> list[str]:
    return sorted(fps) if len(fps) > 1 else list(fps)


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
