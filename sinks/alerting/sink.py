"""The alerting pipeline's bytewax sink: every worker's partition feeds one service.

Its own module: the bytewax side (partitions, reference counting of the process's one
:class:`~vigil.sinks.alerting.service.AlertingService`) apart from the pipeline itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from vigil.records import Detection, Watermark

if TYPE_CHECKING:
    from vigil.sinks.alerting.service import AlertingService

log = logging.getLogger(__name__)


class AlertingSink(DynamicSink["Detection | Watermark"]):
    """Every worker's detections go to one :class:`~.service.AlertingService` per process.

    The service is created by ``factory`` when the first partition is built and closed
    when the last one is (so a finite run flushes and drains before it ends).
    """

    def __init__(self, factory: Callable[[], AlertingService]) -> None:
        self.factory = factory
        self._service: AlertingService | None = None
        self._refs = 0
        self._guard = threading.Lock()

    def acquire(self) -> AlertingService:
        with self._guard:
            if self._service is None:
                self._service = self.factory()
                self._service.start()
            self._refs += 1
            return self._service

    def release(self) -> None:
        with self._guard:
            self._refs -= 1
            if self._refs > 0 or self._service is None:
                return
            service, self._service = self._service, None
        service.close()

    @override
    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Detection | Watermark]:
        return _AlertingPartition(self)


class _AlertingPartition(StatelessSinkPartition["Detection | Watermark"]):
    def __init__(self, sink: AlertingSink) -> None:
        self._sink = sink
        self._service = sink.acquire()

    @override
    def write_batch(self, items: list[Detection | Watermark]) -> None:
        try:
            self._service.observe(items)
        except Exception:  # a sink must not stop the dataflow
            log.exception("alerting: could not process %d detection(s)", len(items))
            self._service.metrics.failures.labels("alerting", "internal_error").inc()

    @override
    def close(self) -> None:
        self._sink.release()
