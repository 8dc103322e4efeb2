"""The alerting pipeline's Prometheus metrics (names in :mod:`vigil.sinks.prometheus`).

Their own module: :class:`~vigil.sinks.alerting.service.AlertingService` updates them,
and nothing in them depends on how the pipeline runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from vigil.sinks.alerting.incidents import INCIDENT_STATES
from vigil.sinks.alerting.outbox import OutboxItem
from vigil.sinks.prometheus import (
    ALERTING_ALERTS,
    ALERTING_DELIVERIES,
    ALERTING_DELIVERY_LATENCY,
    ALERTING_INCIDENT_MEMBERS,
    ALERTING_INCIDENTS,
    ALERTING_NOTIFICATIONS,
    ALERTING_OUTBOX_DEPTH,
    SINK_FAILURES,
    get_or_create,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class AlertingMetrics:
    """The pipeline's Prometheus metrics (names in :mod:`vigil.sinks.prometheus`)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.alerts = get_or_create(
            Gauge,
            ALERTING_ALERTS,
            "Alerts by lifecycle state, severity and agency (at most 50 agencies, then other).",
            ("state", "severity", "agency"),
            registry,
        )
        self._shown: set[tuple[str, str, str]] = set()
        self._states_at = 0.0
        self.notifications = get_or_create(
            Counter,
            ALERTING_NOTIFICATIONS,
            "Notifications decided, by receiver and reason.",
            ("receiver", "reason"),
            registry,
        )
        self.outbox = get_or_create(
            Gauge,
            ALERTING_OUTBOX_DEPTH,
            "Outbox items by state (pending, dead).",
            ("state",),
            registry,
        )
        self.deliveries = get_or_create(
            Counter,
            ALERTING_DELIVERIES,
            "Delivery attempts by receiver, kind, outcome, reason.",
            ("receiver", "kind", "outcome", "reason"),
            registry,
        )
        try:
            self.latency = Histogram(
                ALERTING_DELIVERY_LATENCY,
                "Seconds from detection to the receiver's 2xx.",
                ("receiver",),
                registry=registry,
                buckets=LATENCY_BUCKETS,
            )
        except ValueError:
            self.latency = get_or_create(
                Histogram, ALERTING_DELIVERY_LATENCY, "", ("receiver",), registry
            )
        self.failures = get_or_create(
            Counter,
            SINK_FAILURES,
            "Alert deliveries that failed, by destination and reason.",
            ("sink", "reason"),
            registry,
        )

        self.incident_states = get_or_create(
            Gauge,
            ALERTING_INCIDENTS,
            "Incidents by state (open, updated, resolved).",
            ("state",),
            registry,
        )
        for state in INCIDENT_STATES:  # 0 until the first incident (not "no data")
            self.incident_states.labels(state)
        self.incident_members = get_or_create(
            Gauge,
            ALERTING_INCIDENT_MEMBERS,
            "Member alerts of unresolved incidents, by feed.",
            ("feed",),
            registry,
        )
        self._member_feeds: set[str] = set()

    def incidents(self, states: Mapping[str, int], members: Mapping[str, int]) -> None:
        """Set the incident gauges (feeds no longer in an incident are removed)."""
        for state, n in states.items():
            self.incident_states.labels(state).set(n)
        for feed, n in members.items():
            self.incident_members.labels(feed).set(n)
        for feed in self._member_feeds - set(members):
            self.incident_members.remove(feed)
        self._member_feeds = set(members)

    def delivered(self, item: OutboxItem, latency_s: float) -> None:
        self.deliveries.labels(item.receiver, item.kind, "delivered", "ok").inc()
        self.latency.labels(item.receiver).observe(latency_s)

    def failed(self, item: OutboxItem, outcome: str, reason: str) -> None:
        self.deliveries.labels(item.receiver, item.kind, outcome, reason).inc()
        if outcome == "dead_lettered":
            self.failures.labels(item.kind, reason).inc()

    def depth(self, pending: int, dead: int) -> None:
        self.outbox.labels("pending").set(pending)
        self.outbox.labels("dead").set(dead)

    def states(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Set the alerts gauge; label sets that no longer occur are removed."""
        for key, n in counts.items():
            self.alerts.labels(*key).set(n)
        for key in self._shown - set(counts):
            self.alerts.remove(*key)
        self._shown = set(counts)

    def states_due(self, now: float, every_s: float = 1.0) -> bool:
        """At most one gauge refresh per ``every_s`` (counting walks every alert)."""
        if now - self._states_at < every_s:
            return False
        self._states_at = now
        return True
