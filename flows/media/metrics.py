"""Prometheus metrics of the media flow.

Common telemetry (tallies of items read, dead letters, detections, the per-entity volume
series) goes to the flow's :class:`vigil.sinks.prometheus.FlowMetrics`; the media records
(:class:`~vigil.flows.media.records.MediaTally`,
:class:`~vigil.flows.media.records.EmergingStory`) to
the metrics named ``MEDIA_*`` in :mod:`vigil.sinks.prometheus`. Labels are bounded: entities
come from the watch list, sources from the configured inputs, sentiment has three values,
and the top-terms gauge holds at most ``top_k`` label sets (others are removed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from typing_extensions import override
from vigil.flows.media.records import EmergingStory, MediaTally
from vigil.sinks.prometheus import (
    MEDIA_ITEMS,
    MEDIA_MENTIONS,
    MEDIA_STORIES,
    MEDIA_TOP_TERMS,
    FlowMetrics,
    get_or_create,
)

log = logging.getLogger(__name__)


class MediaMetrics:
    """The media metrics on one registry.

    Parameters
    ----------
    flow_metrics
        The flow's common metrics (lines, dead letters, detections, series).
    registry
        Where to register the media metrics.
    top_k
        Size of the top-terms gauge set.
    now
        Wall clock (monotonic), for items per second.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> reg = CollectorRegistry()
    >>> m = MediaMetrics(FlowMetrics("media", registry=reg), registry=reg)
    >>> m.record([MediaTally(mentions={("vl", "press", "negative"): 3},
    ...                      top_terms=(("ngap", 5.0),))])
    >>> reg.get_sample_value("vigil_media_mentions_total",
    ...     {"entity": "vl", "source": "press", "sentiment": "negative"})
    3.0
    >>> reg.get_sample_value("vigil_media_top_term_score", {"term": "ngap"})
    5.0
    """

    def __init__(
        self,
        flow_metrics: FlowMetrics,
        *,
        registry: CollectorRegistry = REGISTRY,
        top_k: int = 10,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flow = flow_metrics
        self.top_k = top_k
        self.now = now
        r = registry
        self.mentions = get_or_create(
            Counter,
            MEDIA_MENTIONS,
            "Media items mentioning a watched entity, by source and sentiment.",
            ("entity", "source", "sentiment"),
            r,
        )
        self.items = get_or_create(
            Counter,
            MEDIA_ITEMS,
            "Media items by source and kind (story = first copy, copy = near-duplicate).",
            ("source", "kind"),
            r,
        )
        self.stories = get_or_create(
            Counter, MEDIA_STORIES, "Emerging stories found (bursting terms grouped).", (), r
        )
        self.top = get_or_create(
            Gauge,
            MEDIA_TOP_TERMS,
            "Top bursting terms by z-score; bounded label set.",
            ("term",),
            r,
        )
        self._lock = threading.Lock()
        self._shown: set[str] = set()

    def record(self, items: list[Any]) -> None:
        """Account for a batch of telemetry of the media flow."""
        common: list[Any] = []

        for it in items:
            t = type(it)
            if t is MediaTally:
                for (e, src, sent), n in it.mentions.items():
                    self.mentions.labels(e, src, sent).inc(n)
                for (src, kind), n in it.items.items():
                    self.items.labels(src, kind).inc(n)

                if it.late:
                    self.flow.late.labels(self.flow.flow).inc(it.late)
                if it.emerging:
                    self.stories.inc(it.emerging)
                if it.top_terms is not None:
                    self._publish_top(it.top_terms)
            elif t is EmergingStory:
                continue
            else:
                common.append(it)  # Tally, DeadLetter, Detection, SeriesPoint
        if common:
            self.flow.record(common)

    def _publish_top(self, top: tuple[tuple[str, float], ...]) -> None:
        if not top:
            # Nothing bursting now: keep showing the last bursting terms (a wall display
            # should say what the last story was about, not go blank).
            return
        with self._lock:
            # No rank label (a rank changing hands would start new series): topk() ranks.
            shown = {t for t, _ in top[: self.top_k]}
            for term in self._shown - shown:
                self.top.remove(term)
            for term, score in top[: self.top_k]:
                self.top.labels(term).set(score)
            self._shown = shown


class MediaMetricsSink(DynamicSink[Any]):
    """A bytewax sink feeding :class:`MediaMetrics` (never raises)."""

    def __init__(
        self, flow_metrics: FlowMetrics, *, registry: CollectorRegistry = REGISTRY, top_k: int = 10
    ) -> None:
        self.metrics = MediaMetrics(flow_metrics, registry=registry, top_k=top_k)

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.metrics)


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, metrics: MediaMetrics) -> None:
        self.metrics = metrics

    @override
    def write_batch(self, items: list[Any]) -> None:
        try:
            self.metrics.record(items)
        except Exception:  # metrics must never stop the flow
            log.exception("media metrics update failed")
