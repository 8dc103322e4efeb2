"""Prometheus metrics of the public-service queue flow.

Labels are ``agency`` and ``service`` (``_all`` for the agency as a whole), and ``channel``
for arrivals by channel: all folded to a configured top-N by the flow, so the label sets
are bounded. Request ids never reach this module (the records carry none).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from vigil.sinks.prometheus import (
    QUEUE_ARRIVALS,
    QUEUE_BACKLOG,
    QUEUE_BREACHES,
    QUEUE_CHANNEL_ARRIVALS,
    QUEUE_COMPLETIONS,
    QUEUE_ON_TIME,
    QUEUE_OVERDUE,
    QUEUE_PROCESSING,
    get_or_create,
)

from vigil.records import QueueStats

log = logging.getLogger(__name__)

ALL = "_all"
_QUANTILES = (("0.5", "p50_s"), ("0.9", "p90_s"), ("0.99", "p99_s"))


class QueueMetrics:
    """Counters and gauges per agency and service, on one registry.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> reg = CollectorRegistry()
    >>> m = QueueMetrics(registry=reg)
    >>> m.record([QueueStats(3600.0, 3600.0, "PWD", "", 5, 3, 12, 2, 1, 2, 0.5,
    ...                      60.0, 120.0, 180.0, channels=(("app", 4), ("call", 1)))])
    >>> reg.get_sample_value("vigil_queue_backlog_requests", {"agency": "PWD", "service": "_all"})
    12.0
    >>> reg.get_sample_value("vigil_queue_channel_arrivals_total",
    ...                      {"agency": "PWD", "channel": "app"})
    4.0
    >>> reg.get_sample_value("vigil_queue_processing_seconds",
    ...                      {"agency": "PWD", "service": "_all", "quantile": "0.9"})
    120.0
    """

    def __init__(self, *, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        lab = ("agency", "service")
        self.arrivals = get_or_create(Counter, QUEUE_ARRIVALS, "Requests received.", lab, r)
        self.completions = get_or_create(Counter, QUEUE_COMPLETIONS, "Requests completed.", lab, r)
        self.channels = get_or_create(
            Counter,
            QUEUE_CHANNEL_ARRIVALS,
            "Requests received by intake channel.",
            ("agency", "channel"),
            r,
        )
        self.breaches = get_or_create(
            Counter, QUEUE_BREACHES, "Deadlines passed while the request was open.", lab, r
        )
        self.backlog = get_or_create(
            Gauge, QUEUE_BACKLOG, "Open requests at the end of the latest window.", lab, r
        )
        self.overdue = get_or_create(
            Gauge, QUEUE_OVERDUE, "Open requests past their deadline.", lab, r
        )
        self.on_time = get_or_create(
            Gauge,
            QUEUE_ON_TIME,
            "Share of completions on time over the trailing window, among those with a "
            "deadline or an on-time flag (unset without either).",
            lab,
            r,
        )
        self.processing = ProcessingQuantiles.on(r)

    def record(self, items: list[Any]) -> None:
        latest: dict[tuple[str, str], QueueStats] = {}
        for s in items:
            if type(s) is not QueueStats:
                continue
            svc = s.service or ALL
            if s.arrivals:
                self.arrivals.labels(s.agency, svc).inc(s.arrivals)
            if s.completions:
                self.completions.labels(s.agency, svc).inc(s.completions)
            if s.breaches:
                self.breaches.labels(s.agency, svc).inc(s.breaches)
            for ch, n in s.channels:
                self.channels.labels(s.agency, ch).inc(n)
            latest[(s.agency, svc)] = s  # gauges show the newest window only
        for (agency, svc), s in latest.items():
            self.backlog.labels(agency, svc).set(s.backlog)
            self.overdue.labels(agency, svc).set(s.overdue)
            if not math.isnan(s.on_time_rate):
                self.on_time.labels(agency, svc).set(s.on_time_rate)
            qs = {q: getattr(s, attr) for q, attr in _QUANTILES}
            self.processing.set(agency, svc, {q: v for q, v in qs.items() if not math.isnan(v)})


class ProcessingQuantiles(Collector):
    """``vigil_queue_processing_seconds`` as a summary: the trailing window's quantiles
    (from the flow's KLL sketch), one series per agency, service and ``quantile``.

    A gauge cannot carry a ``quantile`` label (``promtool check metrics`` rejects it), and
    a prometheus_client ``Summary`` computes no quantiles, so this collector exposes the
    sketch's own. No ``_sum``/``_count``: completions are ``vigil_queue_completions_total``.
    One per registry (:meth:`on`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], dict[str, float]] = {}

    @classmethod
    def on(cls, registry: CollectorRegistry) -> ProcessingQuantiles:
        with _REGISTERING:
            existing = getattr(registry, "_names_to_collectors", {}).get(QUEUE_PROCESSING)
            if isinstance(existing, cls):
                return existing
            c = cls()
            registry.register(c)
            return c

    def describe(self) -> list[Metric]:
        return [Metric(QUEUE_PROCESSING, _PROCESSING_DOC, "summary")]

    def set(self, agency: str, service: str, quantiles: dict[str, float]) -> None:
        if quantiles:
            with self._lock:
                self._values[(agency, service)] = dict(quantiles)

    def collect(self) -> list[Metric]:
        m = Metric(QUEUE_PROCESSING, _PROCESSING_DOC, "summary")
        with self._lock:
            items = sorted(self._values.items())
        for (agency, service), qs in items:
            for q, v in sorted(qs.items()):
                m.add_sample(
                    QUEUE_PROCESSING, {"agency": agency, "service": service, "quantile": q}, v
                )
        return [m]


_PROCESSING_DOC = "Processing-time quantiles over the trailing window (KLL sketch)."
_REGISTERING = threading.Lock()


class QueueMetricsSink(DynamicSink[QueueStats]):
    """A bytewax sink feeding :class:`QueueMetrics` (one per process, built lazily)."""

    def __init__(self, *, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._metrics: QueueMetrics | None = None

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        if self._metrics is None:
            self._metrics = QueueMetrics(registry=self.registry)
        return _Partition(self._metrics)


class _Partition(StatelessSinkPartition[QueueStats]):
    def __init__(self, metrics: QueueMetrics) -> None:
        self.metrics = metrics

    def write_batch(self, items: list[QueueStats]) -> None:
        try:
            self.metrics.record(items)
        except Exception:  # metrics must never stop the flow
            log.exception("queue metrics update failed")
