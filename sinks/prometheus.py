"""Prometheus exposition of what the flows see and find.

Metric names are module constants: dashboards import them, so renaming a metric breaks a
test rather than a panel. Labels are bounded sets only (flow, format, reason, kind,
severity, series). The one exception is the top-K offender gauge set, whose ``entity``
label holds at most ``top_k`` values per detection kind at any time: label sets that leave
the top K are removed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from datasketches import frequent_items_error_type, frequent_strings_sketch
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from vigil.records import DeadLetter, Detection, SeriesPoint, Tally

# No ``_created`` series: each counter and histogram would carry a second gauge (329 on
# the demo's page) that Prometheus ignores unless created-timestamp ingestion is on, and
# that clutters Grafana's metric browser. Counter resets are detected without them.
disable_created_metrics()

log = logging.getLogger(__name__)

LINES = "vigil_lines_total"
DEAD_LETTERS = "vigil_dead_letters_total"
EVENTS = "vigil_events_total"
LATE_EVENTS = "vigil_late_events_total"
DETECTIONS = "vigil_detections_total"
SERIES_VALUE = "vigil_series_value"
SERIES_EXPECTED = "vigil_series_expected"
SERIES_LOWER = "vigil_series_lower"
SERIES_UPPER = "vigil_series_upper"
SERIES_SCORE = "vigil_series_score"
TOP_OFFENDER = "vigil_top_offender_weight"
EVENT_TIME = "vigil_event_time_seconds"
LAST_BATCH = "vigil_last_batch_timestamp_seconds"
#: Detector latency: wall time a detection step spent on one batch, by ``flow`` and ``step``.
DETECTOR_SECONDS = "vigil_detector_seconds"
#: Failures of any alert destination, by ``sink`` and a stable ``reason``.
SINK_FAILURES = "vigil_sink_failures_total"
#: Media flow (flows/media/metrics.py): mentions by ``entity``, ``source``, ``sentiment``.
MEDIA_MENTIONS = "vigil_media_mentions_total"
#: Media items by ``source`` and ``kind`` (``story``: first copy, ``copy``: near-duplicate).
MEDIA_ITEMS = "vigil_media_items_total"
#: Emerging stories (groups of bursting terms) found.
MEDIA_STORIES = "vigil_media_emerging_stories_total"
#: The top bursting terms (``rank``, ``term``; at most ``top_k`` label sets): z-score.
MEDIA_TOP_TERMS = "vigil_media_top_term_score"
#: Media items per second (wall clock) over the last few seconds of processing.

#: Public-service queues (sinks/queues.py), by ``agency`` and ``service`` (``_all`` = the
#: agency as a whole; both folded to a configured top-N, beyond it ``other``).
QUEUE_ARRIVALS = "vigil_queue_arrivals_total"
QUEUE_COMPLETIONS = "vigil_queue_completions_total"
#: Arrivals by ``agency`` and intake ``channel``.
QUEUE_CHANNEL_ARRIVALS = "vigil_queue_channel_arrivals_total"
QUEUE_BREACHES = "vigil_queue_deadline_breaches_total"
QUEUE_BACKLOG = "vigil_queue_backlog_requests"
QUEUE_OVERDUE = "vigil_queue_overdue_requests"
QUEUE_ON_TIME = "vigil_queue_on_time_ratio"
#: Processing-time quantiles (``quantile`` 0.5, 0.9, 0.99) over the trailing window.
QUEUE_PROCESSING = "vigil_queue_processing_seconds"

#: Alerting pipeline (sinks/alerting): alerts by lifecycle ``state`` (pending, firing,
#: resolved) right now.
ALERTING_ALERTS = "vigil_alerting_alerts"
#: Notifications decided, by ``receiver`` and ``reason`` (first_notification, new_alerts,
#: some_resolved, all_resolved, repeat).
ALERTING_NOTIFICATIONS = "vigil_alerting_notifications_total"
#: Outbox items by ``state``: ``pending`` (waiting or being retried) and ``dead``.
ALERTING_OUTBOX_DEPTH = "vigil_alerting_outbox_items"
#: Delivery attempts by ``receiver``, ``kind``, ``outcome`` (delivered, retried,
#: dead_lettered) and ``reason`` (ok, timeout, transport_error, http_429, http_4xx ...).
ALERTING_DELIVERIES = "vigil_alerting_deliveries_total"
#: Seconds from the detection to the receiver's 2xx, by ``receiver``.
ALERTING_DELIVERY_LATENCY = "vigil_alerting_delivery_latency_seconds"
#: Incidents (alerts of several feeds joined, sinks/alerting/incidents.py) by ``state``
#: (open, updated, resolved).
ALERTING_INCIDENTS = "vigil_incidents"
#: Member alerts of unresolved incidents, by ``feed``.
ALERTING_INCIDENT_MEMBERS = "vigil_incident_members"

METRIC_NAMES: tuple[str, ...] = (
    LINES,
    DEAD_LETTERS,
    EVENTS,
    LATE_EVENTS,
    DETECTIONS,
    SERIES_VALUE,
    SERIES_EXPECTED,
    SERIES_LOWER,
    SERIES_UPPER,
    SERIES_SCORE,
    TOP_OFFENDER,
    EVENT_TIME,
    LAST_BATCH,
    DETECTOR_SECONDS,
    SINK_FAILURES,
    MEDIA_MENTIONS,
    MEDIA_ITEMS,
    MEDIA_STORIES,
    MEDIA_TOP_TERMS,
    QUEUE_ARRIVALS,
    QUEUE_COMPLETIONS,
    QUEUE_CHANNEL_ARRIVALS,
    QUEUE_BREACHES,
    QUEUE_BACKLOG,
    QUEUE_OVERDUE,
    QUEUE_ON_TIME,
    QUEUE_PROCESSING,
    ALERTING_ALERTS,
    ALERTING_NOTIFICATIONS,
    ALERTING_OUTBOX_DEPTH,
    ALERTING_DELIVERIES,
    ALERTING_DELIVERY_LATENCY,
    ALERTING_INCIDENTS,
    ALERTING_INCIDENT_MEMBERS,
)

C = TypeVar("C", Counter, Gauge, Histogram)


def get_or_create(
    cls: type[C],
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    registry: Any,
    **kwargs: Any,
) -> C:
    """Register a metric, or return the one already registered under ``name``.

    Two sinks (or two workers of one process) share one registry; the second registration
    would raise ``Duplicated timeseries``. ``prometheus_client`` has no public lookup, so
    this reads the registry's name index, and only after a registration failed.
    """
    try:
        return cls(name, documentation, labels, registry=registry, **kwargs)
    except ValueError:
        names = getattr(registry, "_names_to_collectors", {})
        existing = names.get(name)
        if isinstance(existing, cls) and tuple(existing._labelnames) == labels:
            return existing
        raise


class FlowMetrics:
    """All flow metrics on one registry. Thread-safe (prometheus_client is).

    Parameters
    ----------
    flow
        Value of the ``flow`` label.
    registry
        Where to register; tests pass a fresh ``CollectorRegistry()``.
    top_k
        Offenders kept per detection kind in the top-K gauge set.
    """

    def __init__(
        self, flow: str, *, registry: CollectorRegistry = REGISTRY, top_k: int = 10
    ) -> None:
        self.flow = flow
        self.top_k = top_k
        r = registry
        self.lines = get_or_create(
            Counter,
            LINES,
            "Input lines by format and outcome (parsed or dead_lettered).",
            ("flow", "format", "outcome"),
            r,
        )
        self.dead = get_or_create(
            Counter,
            DEAD_LETTERS,
            "Records sent to the dead-letter path, by step and reason.",
            ("flow", "step", "reason"),
            r,
        )
        self.events = get_or_create(
            Counter,
            EVENTS,
            "Normalized events by dataset and action.",
            ("flow", "dataset", "action"),
            r,
        )
        self.late = get_or_create(
            Counter,
            LATE_EVENTS,
            "Events that arrived behind the watermark (still processed).",
            ("flow",),
            r,
        )
        self.detections = get_or_create(
            Counter,
            DETECTIONS,
            "Detections by feed, kind and severity.",
            ("feed", "kind", "severity"),
            r,
        )
        self.value = get_or_create(
            Gauge, SERIES_VALUE, "Latest value of a monitored series.", ("feed", "series"), r
        )
        self.expected = get_or_create(
            Gauge, SERIES_EXPECTED, "Baseline's expected value.", ("feed", "series"), r
        )
        self.lower = get_or_create(
            Gauge, SERIES_LOWER, "Lower edge of the expected band.", ("feed", "series"), r
        )
        self.upper = get_or_create(
            Gauge, SERIES_UPPER, "Upper edge of the expected band.", ("feed", "series"), r
        )
        self.score = get_or_create(
            Gauge, SERIES_SCORE, "Anomaly score of the latest value.", ("feed", "series"), r
        )
        self.top = get_or_create(
            Gauge,
            TOP_OFFENDER,
            "Top-K offenders per detection kind (summed observed values); bounded label set.",
            ("kind", "entity"),
            r,
        )
        self.event_time = get_or_create(
            Gauge,
            EVENT_TIME,
            "Newest event time seen (watermark lag = time() - this).",
            ("flow",),
            r,
        )
        self.last_batch = get_or_create(
            Gauge, LAST_BATCH, "Wall time of the last batch a flow processed.", ("flow",), r
        )
        self.detector_seconds = get_or_create(
            Histogram,
            DETECTOR_SECONDS,
            "Wall time a detection step spent on one batch (detector latency).",
            ("flow", "step"),
            r,
            buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self._lock = threading.Lock()
        # Plain running totals for the terminal progress line.
        self.total_lines = 0
        self.total_dead = 0
        self.total_quality = 0  # rows set aside for their data quality (queue feed)
        self.total_events = 0
        self.total_detections = 0
        self._newest = 0.0
        self._sketches: dict[str, frequent_strings_sketch] = {}
        self._shown: dict[str, set[str]] = {}
        # Series a dashboard divides by exist at 0, so a ratio panel shows 0 rather than
        # "no data": late events from start-up, both line outcomes of a format from its
        # first line on (see record).
        self.late.labels(flow)
        self._formats: set[str] = set()

    def record(self, items: list[Any]) -> None:
        """Account for a batch of telemetry records of any kind the flows emit."""
        f = self.flow
        newest = 0.0
        top_changed: set[str] = set()
        points: dict[tuple[str, str], SeriesPoint] = {}
        for it in items:
            t = type(it)
            if t is Tally:
                for fmt, _ in it.lines:
                    if fmt not in self._formats:
                        self._formats.add(fmt)
                        for outcome in ("parsed", "dead_lettered"):
                            self.lines.labels(f, fmt, outcome)
                for (fmt, outcome), n in it.lines.items():
                    self.lines.labels(f, fmt, outcome).inc(n)
                    self.total_lines += n
                    if outcome == "dead_lettered":
                        self.total_dead += n
                    elif outcome == "data_quality":
                        self.total_quality += n
                for (ds, action), n in it.events.items():
                    self.events.labels(f, ds, action).inc(n)
                    self.total_events += n
                if it.late:
                    self.late.labels(f).inc(it.late)
                secs = it.gauges.get("seconds")
                if secs is not None:
                    self.detector_seconds.labels(f, it.step).observe(secs)
                for per_ds in it.buckets.values():
                    newest = max(newest, max(per_ds))
            elif t is DeadLetter:
                self.dead.labels(f, it.step, it.reason).inc()
            elif t is Detection:
                self.detections.labels(it.feed, it.kind, it.severity).inc()
                self.total_detections += 1
                if ("entity_is", "user_name") not in it.extra:  # nothing personal in labels
                    self._offender(it)
                    top_changed.add(it.kind)
            elif t is SeriesPoint:
                points[(it.feed, it.series)] = it  # gauges show the newest only
                newest = max(newest, it.ts)
        for lab, p in points.items():
            self.value.labels(*lab).set(p.value)
            self.expected.labels(*lab).set(p.expected)
            self.lower.labels(*lab).set(p.lower)
            self.upper.labels(*lab).set(p.upper)
            self.score.labels(*lab).set(p.score)
        if newest:
            with self._lock:  # gauges have no max(): keep our own under the lock
                if newest > self._newest:
                    self._newest = newest
                    self.event_time.labels(f).set(newest)
        self.last_batch.labels(f).set(time.time())
        for kind in top_changed:
            self._publish_top(kind)

    def _offender(self, d: Detection) -> None:
        with self._lock:
            sk = self._sketches.get(d.kind)
            if sk is None:
                sk = self._sketches[d.kind] = frequent_strings_sketch(6)
            sk.update(d.entity, max(1, int(d.observed)))

    def _publish_top(self, kind: str) -> None:
        with self._lock:
            sk = self._sketches[kind]
            items = sk.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES)
            items = sorted(items, key=lambda x: -x[1])[: self.top_k]
            # No rank label: a rank that changes hands would start a new series each
            # time; a dashboard ranks with topk() instead.
            shown = {e[0] for e in items}
            for entity in self._shown.get(kind, set()) - shown:
                self.top.remove(kind, entity)
            for entity, est, _lb, _ub in items:
                self.top.labels(kind, entity).set(est)
            self._shown[kind] = shown


class MetricsSink(DynamicSink[Any]):
    """A bytewax sink that feeds telemetry records into :class:`FlowMetrics`."""

    def __init__(self, metrics: FlowMetrics) -> None:
        self.metrics = metrics

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MetricsPartition:
        return _MetricsPartition(self.metrics)


class _MetricsPartition(StatelessSinkPartition[Any]):
    def __init__(self, metrics: FlowMetrics) -> None:
        self.metrics = metrics

    def write_batch(self, items: list[Any]) -> None:
        try:
            self.metrics.record(items)
        except Exception:  # metrics must never stop the flow
            log.exception("metrics update failed")


def serve(
    host: str, port: int, registry: CollectorRegistry = REGISTRY
) -> tuple[int, Callable[[], None]]:
    """Serve ``/metrics`` on ``host:port`` (port 0 picks a free one).

    Returns the bound port and a function that stops the server.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address[1]

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return int(bound), stop
