"""Incidents: alerts of different feeds about one situation, joined after grouping.

A media storm about the health department, a surge of applications at its counter and a
flood of requests against its portal are one incident, not three pages. The
:class:`Correlator` sees every alert that changed state in an engine step and ties an
alert to others that share a *correlation key* within ``window_s`` of event time:

- ``agency=<value>``: the alert's ``agency`` label (a routing label);
- ``link=<name>``: the alert matches one of the label matcher sets of a configured
  :class:`Link` (this portal host, this media entity and this queue agency belong to the
  Department of Health).

Alerts tied together form a *cluster*; a cluster becomes an incident (it is listed and
notified) once its members come from at least two feeds. Lifecycle: ``open`` when it
forms, ``updated`` when a member joins or changes state, ``resolved`` when every member
is resolved. A member is one episode of an alert (``fingerprint@startsAt``): an alert
that fires again later is a new member. An announced incident that resolved takes no new
members; the next episode starts a new cluster.

Severity is the highest member's, raised one step (capped at ``critical``) while firing
members of at least two feeds agree; a resolved incident keeps the severity it had.

Times are the alerts' own event times (``startsAt``, ``endsAt``, last seen). A cluster
takes an alert when the alert starts between ``window_s`` before the cluster's first start
and ``window_s`` after its last activity. Incident ids are a hash of the first member, so
a replay decides the same ids and the notifications the same idempotency keys.

Examples
--------
>>> c = Correlator(window_s=3600, links=[Link.parse("Health", [{"feed": "media",
...     "entity": "so_y_te"}, {"feed": "service_queues", "agency": "SYT"}])])
>>> q = Alert("fq", {"alertname": "arrival_surge", "feed": "service_queues",
...     "entity": "SYT", "agency": "SYT", "severity": "warning"}, {}, "firing",
...     1000.0, 1000.0, 1000.0, 1000.0)
>>> [ch.reason for ch in c.apply([q])]       # one feed: a cluster, not an incident
[]
>>> m = Alert("fm", {"alertname": "media_negative_surge", "feed": "media",
...     "entity": "so_y_te", "severity": "high"}, {}, "firing", 1600.0, 1600.0, 1600.0, 1600.0)
>>> [(ch.reason, ch.incident.severity) for ch in c.apply([m])]
[('incident_opened', 'critical')]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vigil.sinks.alerting.model import Alert, Matcher, Notification
from vigil.sinks.alerts import ZERO_TIME, _rfc3339

SEVERITIES: tuple[str, ...] = ("info", "warning", "high", "critical")
#: Incident states (a bounded set: the ``state`` label of the incidents gauge).
INCIDENT_STATES: tuple[str, ...] = ("open", "updated", "resolved")
#: Why an incident is notified (the ``reason`` label of the notifications counter).
INCIDENT_REASONS: tuple[str, ...] = ("incident_opened", "incident_updated", "incident_resolved")
_INF = float("inf")


def raise_severity(severity: str, steps: int = 1) -> str:
    """``severity`` raised ``steps`` levels, capped at ``critical``.

    >>> raise_severity("warning"), raise_severity("critical"), raise_severity("odd")
    ('high', 'critical', 'warning')
    """
    rank = SEVERITIES.index(severity) if severity in SEVERITIES else 0
    return SEVERITIES[min(rank + steps, len(SEVERITIES) - 1)]


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


@dataclass(frozen=True, slots=True)
class Link:
    """Entities of several feeds that belong together (``alerting.incidents.links``).

    ``selectors``: an alert belongs to the link when it matches every matcher of one of
    them.
    """

    name: str
    selectors: tuple[tuple[Matcher, ...], ...]

    @classmethod
    def parse(cls, name: str, selectors: Iterable[Mapping[str, str] | Sequence[str]]) -> Link:
        """From label maps (``{feed: media, entity: so_y_te}``, equality) or matcher
        strings (``["feed=media", "entity=~so_y_te|bo_y_te"]``)."""
        out: list[tuple[Matcher, ...]] = []
        for sel in selectors:
            if isinstance(sel, Mapping):
                out.append(tuple(Matcher(str(k), "=", str(v)) for k, v in sel.items()))
            else:
                out.append(tuple(Matcher.parse(s) for s in sel))
        return cls(name, tuple(out))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(all(m.matches(labels) for m in sel) for sel in self.selectors)


@dataclass(slots=True)
class Member:
    """One alert episode of an incident (a line of its timeline)."""

    key: str  # fingerprint@int(startsAt): the alert's dedup key
    fingerprint: str
    feed: str
    alertname: str
    entity: str
    severity: str
    state: str
    starts_at: float
    ends_at: float | None
    last_seen: float
    labels: dict[str, str] = field(default_factory=dict)

    def activity(self) -> float:
        return self.ends_at if self.ends_at is not None else self.last_seen

    def timeline_entry(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "feed": self.feed,
            "alertname": self.alertname,
            "entity": self.entity,
            "severity": self.severity,
            "status": self.state,
            "startsAt": _rfc3339(self.starts_at),
            "endsAt": _rfc3339(self.ends_at) if self.ends_at is not None else ZERO_TIME,
        }

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _MEMBER_FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Member:
        return cls(**{f: d[f] for f in _MEMBER_FIELDS if f in d})


_MEMBER_FIELDS = tuple(Member.__dataclass_fields__)


@dataclass(slots=True)
class Incident:
    """A cluster of alerts; an incident once ``announced`` (members of >= 2 feeds)."""

    id: str
    keys: list[str]
    members: dict[str, Member]
    state: str = "open"
    severity: str = "info"
    announced: bool = False
    seq: int = 0  # notifications decided so far
    opened_at: float = 0.0  # event time of the first member's start
    resolved_at: float | None = None
    created: int = 0  # creation order (the oldest cluster wins a tie)
    last_at: float = -_INF  # newest member activity (kept up to date: members can be many)

    @property
    def name(self) -> str:
        """The link's name, else the agency, of the first key."""
        keys = sorted(self.keys, key=lambda k: (not k.startswith("link="), k))
        return keys[0].split("=", 1)[-1] if keys else ""

    def feeds(self, *, firing_only: bool = False) -> list[str]:
        return sorted(
            {m.feed for m in self.members.values() if not firing_only or m.state == "firing"}
        )

    def last_activity(self) -> float:
        return self.last_at

    def first_start(self) -> float:
        return min((m.starts_at for m in self.members.values()), default=_INF)

    def all_resolved(self) -> bool:
        return all(m.state == "resolved" for m in self.members.values())

    def timeline(self) -> list[dict[str, Any]]:
        ms = sorted(self.members.values(), key=lambda m: (m.starts_at, m.key))
        return [m.timeline_entry() for m in ms]

    def summary(self) -> dict[str, Any]:
        """The ``incident`` object of a webhook payload (and of ``vigil incidents show``)."""
        return {
            "id": self.id,
            "name": self.name,
            "keys": sorted(self.keys),
            "state": self.state,
            "severity": self.severity,
            "feeds": self.feeds(),
            "startsAt": _rfc3339(self.opened_at),
            "endsAt": _rfc3339(self.resolved_at) if self.resolved_at is not None else ZERO_TIME,
            "sequence": self.seq,
            "timeline": self.timeline(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "keys": sorted(self.keys),
            "members": {k: m.to_dict() for k, m in self.members.items()},
            "state": self.state,
            "severity": self.severity,
            "announced": self.announced,
            "seq": self.seq,
            "opened_at": self.opened_at,
            "resolved_at": self.resolved_at,
            "created": self.created,
            "last_at": self.last_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Incident:
        inc = cls._from_dict(d)
        if "last_at" not in d:
            inc.last_at = max((m.activity() for m in inc.members.values()), default=-_INF)
        return inc

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> Incident:
        return cls(
            id=str(d["id"]),
            keys=list(d.get("keys", ())),
            members={k: Member.from_dict(v) for k, v in d.get("members", {}).items()},
            state=str(d.get("state", "open")),
            severity=str(d.get("severity", "info")),
            announced=bool(d.get("announced", False)),
            seq=int(d.get("seq", 0)),
            opened_at=float(d.get("opened_at", 0.0)),
            resolved_at=None if d.get("resolved_at") is None else float(d["resolved_at"]),
            created=int(d.get("created", 0)),
            last_at=float(d.get("last_at", -_INF)),
        )


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """An incident to notify, and why (one of :data:`INCIDENT_REASONS`)."""

    incident: Incident
    reason: str


class Correlator:
    """Joins alerts of different feeds into incidents (see the module docstring).

    Parameters
    ----------
    window_s
        How far apart (event time) alerts of one incident may start.
    links
        Entities tied together by name.
    agency_label, feed_label
        Labels that carry the agency (a correlation key) and the feed.
    retention_s
        Resolved incidents are forgotten this long (event time) after they resolved.
    max_clusters
        Bound on the clusters kept (the oldest single-feed clusters go first).
    """

    def __init__(
        self,
        *,
        window_s: float = 3600.0,
        links: Iterable[Link] = (),
        agency_label: str = "agency",
        feed_label: str = "feed",
        retention_s: float = 7 * 86400.0,
        max_clusters: int = 10_000,
    ) -> None:
        self.window_s = window_s
        self.links = tuple(links)
        self.agency_label = agency_label
        self.feed_label = feed_label
        self.retention_s = retention_s
        self.max_clusters = max_clusters
        self.incidents: dict[str, Incident] = {}
        self._by_member: dict[str, str] = {}
        self._newest: dict[str, float] = {}  # feed -> newest event time seen
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self._created = 0

    # -- state -----------------------------------------------------------------------------
    def load(self, incidents: Mapping[str, Incident]) -> None:
        """Replace all state (a restart, or another process committed)."""
        self.incidents = dict(incidents)
        self._by_member = {k: i.id for i in self.incidents.values() for k in i.members}
        self._created = max((i.created for i in self.incidents.values()), default=0)
        self._newest = {}
        for inc in self.incidents.values():
            for m in inc.members.values():
                self._newest[m.feed] = max(self._newest.get(m.feed, -_INF), m.activity())
        self._changed.clear()
        self._deleted.clear()

    def drain_changes(self) -> tuple[dict[str, Incident], set[str]]:
        """Incidents changed and deleted since the last call (the store persists them)."""
        up = {k: self.incidents[k] for k in self._changed if k in self.incidents}
        gone = self._deleted - up.keys()  # deleted, then opened again: the newer wins
        self._changed.clear()
        self._deleted.clear()
        return up, gone

    def listed(self) -> list[Incident]:
        """Announced incidents, newest first."""
        return sorted(
            (i for i in self.incidents.values() if i.announced), key=lambda i: -i.opened_at
        )

    def in_incident(self, member_key: str) -> bool:
        """Whether the alert episode ``fingerprint@startsAt`` belongs to an incident."""
        iid = self._by_member.get(member_key)
        inc = self.incidents.get(iid) if iid is not None else None
        return inc is not None and inc.announced

    def keys_of(self, labels: Mapping[str, str]) -> list[str]:
        """Correlation keys of an alert's labels."""
        keys = [f"link={ln.name}" for ln in self.links if ln.matches(labels)]
        agency = labels.get(self.agency_label, "")
        if agency:
            keys.append(f"agency={agency}")
        return keys

    # -- correlation -----------------------------------------------------------------------
    def apply(self, alerts: Iterable[Alert]) -> list[IncidentChange]:
        """Take alerts whose state changed in one step; return the incidents to notify
        (at most one change per incident and step)."""
        touched: dict[str, bool] = {}  # incident id -> a member joined or changed
        for a in alerts:
            if a.state == "pending":
                continue
            feed = a.labels.get(self.feed_label, "")
            self._newest[feed] = max(self._newest.get(feed, -_INF), a.last_seen)
            key = f"{a.fingerprint}@{int(a.active_at)}"
            iid = self._by_member.get(key)
            if iid is not None and iid in self.incidents:
                m = self.incidents[iid].members[key]
                if m.state != a.state or m.ends_at != a.ends_at:
                    m.state, m.ends_at, m.last_seen = a.state, a.ends_at, a.last_seen
                    inc = self.incidents[iid]
                    inc.last_at = max(inc.last_at, m.activity())
                    touched[iid] = True
                continue
            keys = self.keys_of(a.labels)
            if not keys:
                continue
            inc = self._home(a, keys)
            m = inc.members[key] = _member(a, key, feed)
            inc.keys = sorted({*inc.keys, *keys})
            inc.opened_at = min(inc.opened_at, a.active_at)
            inc.last_at = max(inc.last_at, m.activity())
            self._by_member[key] = inc.id
            touched[inc.id] = True
        out: list[IncidentChange] = []
        for iid in touched:
            found = self.incidents.get(iid)
            if found is None:
                continue
            self._changed.add(iid)
            change = self._lifecycle(found)
            if change is not None:
                out.append(change)
        self._prune()
        return out

    def _home(self, a: Alert, keys: list[str]) -> Incident:
        """The cluster ``a`` joins: an open incident sharing a key within the window, else
        the oldest such cluster (other matching clusters not yet incidents are merged into
        it), else a new one."""
        lo_ok = a.active_at + self.window_s
        hits = [
            inc
            for inc in self.incidents.values()
            if not (inc.announced and inc.state == "resolved")
            and set(keys) & set(inc.keys)
            and inc.opened_at <= lo_ok
            and a.active_at <= inc.last_activity() + self.window_s
        ]
        if not hits:
            self._created += 1
            key = f"{a.fingerprint}@{int(a.active_at)}"
            iid = "inc-" + hashlib.sha256(key.encode()).hexdigest()[:12]
            inc = Incident(iid, list(keys), {}, opened_at=a.active_at, created=self._created)
            self.incidents[iid] = inc
            return inc
        hits.sort(key=lambda i: (not i.announced, i.created))
        home, rest = hits[0], hits[1:]
        for other in rest:
            if other.announced:
                continue  # two incidents never merge; the alert joins the older one
            home.members.update(other.members)
            home.keys = sorted({*home.keys, *other.keys})
            home.opened_at = min(home.opened_at, other.opened_at)
            home.last_at = max(home.last_at, other.last_at)
            for k in other.members:
                self._by_member[k] = home.id
            del self.incidents[other.id]
            self._changed.discard(other.id)
            self._deleted.add(other.id)
        return home

    def _lifecycle(self, inc: Incident) -> IncidentChange | None:
        if len(inc.feeds()) < 2:
            return None  # a cluster of one feed is not an incident
        if inc.all_resolved():
            inc.state = "resolved"
            inc.resolved_at = inc.last_at
            reason = "incident_resolved"
        else:
            top = max((m.severity for m in inc.members.values()), key=_rank)
            agree = len(inc.feeds(firing_only=True)) >= 2
            inc.severity = raise_severity(top) if agree else top
            reason = "incident_updated" if inc.announced else "incident_opened"
            inc.state = "updated" if inc.announced else "open"
        inc.announced = True
        inc.seq += 1
        return IncidentChange(inc, reason)

    def _prune(self) -> None:
        if not self.incidents:
            return
        horizon = min(self._newest.values(), default=-_INF)
        for iid, inc in list(self.incidents.items()):
            if not inc.all_resolved():
                continue
            keep_s = self.retention_s if inc.announced else self.window_s
            if inc.last_activity() + keep_s < horizon:
                self._forget(iid)
        if len(self.incidents) > self.max_clusters:
            latent = sorted(
                (i for i in self.incidents.values() if not i.announced), key=lambda i: i.created
            )
            for inc in latent[: len(self.incidents) - self.max_clusters]:
                self._forget(inc.id)

    def _forget(self, iid: str) -> None:
        inc = self.incidents.pop(iid)
        for k in inc.members:
            self._by_member.pop(k, None)
        self._changed.discard(iid)
        self._deleted.add(iid)

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Announced incidents by state, and members of unresolved incidents by feed (for
        the gauges: bounded label sets)."""
        states = dict.fromkeys(INCIDENT_STATES, 0)
        members: dict[str, int] = {}
        for inc in self.incidents.values():
            if not inc.announced:
                continue
            states[inc.state] = states.get(inc.state, 0) + 1
            if inc.state != "resolved":
                for m in inc.members.values():
                    members[m.feed or "none"] = members.get(m.feed or "none", 0) + 1
        return states, members


def _member(a: Alert, key: str, feed: str) -> Member:
    lab = a.labels
    return Member(
        key=key,
        fingerprint=a.fingerprint,
        feed=feed,
        alertname=lab.get("alertname", ""),
        entity=lab.get("entity", ""),
        severity=lab.get("severity", "info"),
        state=a.state,
        starts_at=a.active_at,
        ends_at=a.ends_at,
        last_seen=a.last_seen,
        labels=dict(lab),
    )


def incident_notification(
    change: IncidentChange,
    receiver: str,
    alerts: Sequence[dict[str, Any]],
    *,
    detected_wall: float = 0.0,
) -> Notification:
    """The notification of one incident change: its member alerts as the alerts of an
    Alertmanager-like payload, the incident itself in ``extra["incident"]``."""
    inc = change.incident
    group_key = f"incident:{inc.id}"
    raw = f"{receiver}\x00{group_key}\x00{inc.seq}".encode()
    return Notification(
        id=hashlib.sha256(raw).hexdigest()[:32],
        receiver=receiver,
        group_key=group_key,
        seq=inc.seq,
        reason=change.reason,
        status="resolved" if inc.state == "resolved" else "firing",
        group_labels={"incident": inc.id, "alertname": f"incident {inc.name}"},
        alerts=tuple(alerts),
        clock=inc.last_activity(),
        detected_wall=detected_wall,
        extra={"incident": inc.summary()},
    )


def member_alert_dict(m: Member) -> dict[str, Any]:
    """A member as a payload alert when the engine has forgotten the alert itself."""
    return {
        "update": False,
        "status": "resolved" if m.state == "resolved" else "firing",
        "labels": dict(m.labels),
        "annotations": {},
        "startsAt": _rfc3339(m.starts_at),
        "endsAt": _rfc3339(m.ends_at) if m.ends_at is not None else ZERO_TIME,
        "generatorURL": "",
        "fingerprint": m.fingerprint,
        "dedup_key": m.key,
    }


def correlate_step(
    correlator: Correlator,
    alerts: Mapping[str, Alert],
    changed: Iterable[str],
    notes: list[Notification],
    *,
    receiver: str,
    alert_dict: Any,
    suppress_members: bool = True,
) -> list[Notification]:
    """One engine step's notifications with incidents: the alerts whose state changed
    (``changed`` fingerprints) are correlated; each incident change becomes one
    notification to ``receiver``; with ``suppress_members``, alerts of incidents are taken
    out of their groups' notifications (a group left empty is not sent)."""
    seen: set[str] = set()
    batch: list[Alert] = []
    for fp in changed:
        a = alerts.get(fp)
        if a is not None and fp not in seen:
            seen.add(fp)
            batch.append(a)
    changes = correlator.apply(batch) if batch else []
    out: list[Notification] = []
    for n in notes:
        if not suppress_members:
            out.append(n)
            continue
        keep = tuple(a for a in n.alerts if not correlator.in_incident(a.get("dedup_key", "")))
        if len(keep) == len(n.alerts):
            out.append(n)
        elif keep:
            out.append(_with_alerts(n, keep))
    for ch in changes:
        dicts = []
        for m in sorted(ch.incident.members.values(), key=lambda m: (m.starts_at, m.key)):
            a = alerts.get(m.fingerprint)
            same = a is not None and f"{a.fingerprint}@{int(a.active_at)}" == m.key
            dicts.append(alert_dict(a) if same else member_alert_dict(m))
        wall = min(
            (a.detected_wall for fp in seen if (a := alerts.get(fp)) and a.detected_wall),
            default=0.0,
        )
        out.append(incident_notification(ch, receiver, dicts, detected_wall=wall))
    return out


def _with_alerts(n: Notification, alerts: tuple[dict[str, Any], ...]) -> Notification:
    status = "firing" if any(a.get("status") == "firing" for a in alerts) else "resolved"
    return Notification(
        n.id, n.receiver, n.group_key, n.seq, n.reason, status, n.group_labels, alerts,
        n.clock, n.detected_wall, n.extra,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class IncidentSettings:
    """What the service needs to correlate: the correlator, the receiver of incident
    notifications, and whether member alerts leave their groups' notifications."""

    correlator: Correlator
    receiver: str = "default"
    suppress_members: bool = True
