"""One alert's lifecycle in the alerting engine: pending, firing, resolved, deleted.

:class:`Lifecycle` is a mixin of :class:`~vigil.sinks.alerting.engine.AlertEngine`. Its own
module: how an observation opens or extends an episode, what an alert's timers do when
they are due, and the groups a firing alert joins; the engine decides *when* (watermarks).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vigil.sinks.alerting.model import Alert, Transition
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.state import Changes, Group, Observation, _Domain
from vigil.sinks.alerts import fingerprint

#: Annotations an update does not replace: the text at ``startsAt`` states the start.
START_ANNOTATIONS = frozenset(
    {"summary", "description", "observed", "value_at_start", "first_seen", "threshold"}
)


class Lifecycle:
    """Alert lifecycles of :class:`~vigil.sinks.alerting.engine.AlertEngine` (a mixin).

    The attributes are set by the engine's ``__init__``.
    """

    route: Route
    alerts: dict[str, Alert]
    groups: dict[str, Group]
    for_s: float
    keep_firing_for_s: float
    resolved_retention_s: float
    _changes: Changes
    _counts: dict[str, int]
    _transitions: list[Transition]
    _inhibit_index: list[dict[tuple[str, ...], list[str]]] | None
    _gen: int
    _alert_gen: dict[str, int]

    if TYPE_CHECKING:

        def _dom(self, name: str) -> _Domain: ...

        def alert_dict(
            self, a: Alert, language: str = "en", *, update: bool = False
        ) -> dict[str, Any]: ...

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
            self._alert_gen.pop(fp, None)  # gone: a group holding it sees it missing
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
        self._alert_gen.pop(fp, None)
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
            self._changes.groups_deleted.discard(key)  # emptied earlier in this step
            # Alertmanager: an alert that started longer than group_wait ago, joining a group
            # that has not flushed yet, makes it flush now.
            if not g.has_flushed and a.active_at + route.group_wait <= now < g.next_flush:
                g.next_flush = now
                heapq.heappush(dom.groups, (now, key))
            self._changes.groups[key] = g

    def _transition(self, a: Alert, old: str, now: float, *, new: str | None = None) -> None:
        self._inhibit_index = None  # firing sources may have changed
        self._gen += 1
        self._alert_gen[a.fingerprint] = self._gen
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
