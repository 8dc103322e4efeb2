"""The health flow: Vigil watches itself and alerts through its own pipeline.

Every ``interval_s`` the monitor reads the in-process metrics every flow keeps (the
:class:`vigil.sinks.prometheus.FlowMetrics` counters and the alert sink's failure counter, all on
the run's ``CollectorRegistry``) and checks four conditions:

==========================  =================================================  ==========
kind                        holds while                                        entity
==========================  =================================================  ==========
``source_silent``           a source (flow and input format) that has sent      ``flow/format``
                            lines sent none for ``silence_s`` (dead man's
                            switch)
``watermark_lag``           wall time minus the newest event time of a flow     flow
                            exceeds ``watermark_lag_s``
``dead_letter_ratio``       dead-lettered / read lines of a flow over the       flow
                            last ``window_s`` exceed ``dead_letter_ratio``
                            (with at least ``min_lines`` read)
``alert_delivery_failures`` an alert receiver failed ``delivery_failures``      receiver
                            times or more in the last ``window_s``
==========================  =================================================  ==========

A condition becomes a :class:`vigil.records.Detection` with ``feed="engine"`` when it starts
to hold, and again every ``repeat_s`` (default a minute) while it holds, so a receiver that
missed one still learns about it; it is re-armed once it clears. The detections join every
other flow's on the way to the alert sink, and are counted in
``vigil_detections_total{feed="engine"}``.

The same conditions ship as Prometheus alert rules (``deploy/prometheus/rules.yml``) for
sites that alert from Prometheus; this flow covers sites that do not run one, and reaches
the same receivers as every other Vigil alert. A failing webhook cannot carry the news of
its own failure: delivery failures still reach the alerts file and the terminal.

Run it beside other flows: ``vigil run security health --config vigil.yaml``. Its source
never ends, so a run that includes it keeps going after finite inputs (a replay) are done.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from prometheus_client import CollectorRegistry
from typing_extensions import override
from vigil.flows.feed import FeedIO
from vigil.flows.health.config import HealthConfig
from vigil.sinks.prometheus import ALERTING_DELIVERIES, EVENT_TIME, LINES, SINK_FAILURES

from vigil.records import DeadLetter, Detection

FEED = "engine"
SOURCE_SILENT = "source_silent"
WATERMARK_LAG = "watermark_lag"
DEAD_LETTER_RATIO = "dead_letter_ratio"
DELIVERY_FAILURES = "alert_delivery_failures"
KINDS: tuple[str, ...] = (SOURCE_SILENT, WATERMARK_LAG, DEAD_LETTER_RATIO, DELIVERY_FAILURES)


@dataclass(frozen=True)
class Totals:
    """What the monitor reads at one instant.

    Parameters
    ----------
    lines
        ``(flow, format, outcome)`` -> lines read so far.
    event_time
        flow -> newest event time (epoch seconds).
    failures
        receiver (or legacy sink) -> failed alert delivery attempts so far: deliveries of
        the alerting pipeline whose outcome is not ``delivered`` (retried or
        dead-lettered), plus the older alert sink's failures.
    """

    lines: dict[tuple[str, str, str], float] = field(default_factory=dict)
    event_time: dict[str, float] = field(default_factory=dict)
    failures: dict[str, float] = field(default_factory=dict)


def read_totals(registry: CollectorRegistry) -> Totals:
    """Read the counters Vigil's sinks keep on ``registry`` (public ``collect()`` API only).

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> from vigil.sinks.prometheus import FlowMetrics
    >>> r = CollectorRegistry()
    >>> FlowMetrics("security", registry=r).lines.labels("security", "ssh", "parsed").inc(3)
    >>> read_totals(r).lines
    {('security', 'ssh', 'parsed'): 3.0}
    """
    wanted = (LINES, EVENT_TIME, SINK_FAILURES, ALERTING_DELIVERIES)
    out = Totals()
    for metric in registry.restricted_registry(list(wanted)).collect():
        for s in metric.samples:
            if s.name == LINES:
                key = (s.labels["flow"], s.labels["format"], s.labels["outcome"])
                out.lines[key] = s.value
            elif s.name == EVENT_TIME:
                out.event_time[s.labels["flow"]] = s.value
            elif s.name == SINK_FAILURES:
                sink = s.labels["sink"]
                out.failures[sink] = out.failures.get(sink, 0.0) + s.value
            elif s.name == ALERTING_DELIVERIES and s.labels.get("outcome") != "delivered":
                rcv = s.labels["receiver"]
                out.failures[rcv] = out.failures.get(rcv, 0.0) + s.value
    return out


@dataclass(frozen=True)
class _Condition:
    kind: str
    entity: str
    observed: float
    threshold: float
    window_s: float
    summary: str
    description: str


class HealthMonitor:
    """Checks the engine's conditions each time :meth:`check` is called.

    Parameters
    ----------
    cfg
        Bounds.
    read
        Returns the current :class:`Totals`.
    now
        Wall clock (epoch seconds); tests pass a fake one.

    Examples
    --------
    >>> t = [1000.0]
    >>> totals = Totals(lines={("security", "ssh", "parsed"): 10.0})
    >>> mon = HealthMonitor(HealthConfig(silence_s=60), lambda: totals, now=lambda: t[0])
    >>> mon.check()
    []
    >>> t[0] += 61
    >>> [(d.kind, d.entity, d.feed) for d in mon.check()]
    [('source_silent', 'security/ssh', 'engine')]
    >>> t[0] += 30; mon.check()   # still silent, but reported less than a minute ago
    []
    >>> t[0] += 30; [d.kind for d in mon.check()]
    ['source_silent']
    """

    def __init__(
        self,
        cfg: HealthConfig,
        read: Callable[[], Totals],
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._read = read
        self._now = now
        t0 = now()
        self._source_seen: dict[str, tuple[float, float]] = {}  # source -> (count, since)
        # Counters start at zero with the process, so the history starts there too.
        self._history: deque[tuple[float, Totals]] = deque([(t0, Totals())])
        self._active: dict[tuple[str, str], float] = {}  # condition -> last reported at

    def check(self) -> list[Detection]:
        """Read the totals, evaluate every condition, return the detections due now."""
        now = self._now()
        cur = self._read()
        self._history.append((now, cur))
        while len(self._history) > 2 and self._history[1][0] <= now - self.cfg.window_s:
            self._history.popleft()  # keep one sample at or before the window's start
        base = self._history[0][1]
        conds = [
            *self._silent(now, cur),
            *self._lag(now, cur),
            *self._dead_ratio(cur, base),
            *self._failures(cur, base),
        ]
        out = []
        holding = set()
        for c in conds:
            key = (c.kind, c.entity)
            holding.add(key)
            last = self._active.get(key)
            if last is None or now - last >= self.cfg.repeat_s:
                self._active[key] = now
                out.append(self._detection(c, now))
        for key in list(self._active):
            if key not in holding:
                del self._active[key]  # cleared: the next occurrence is reported at once
        return out

    def _detection(self, c: _Condition, now: float) -> Detection:
        return Detection(
            kind=c.kind,
            entity=c.entity,
            severity=self.cfg.severity,
            ts=now,
            observed=c.observed,
            threshold=c.threshold,
            summary=c.summary,
            description=c.description,
            window_s=c.window_s,
            feed=FEED,
        )

    def _silent(self, now: float, cur: Totals) -> Iterable[_Condition]:
        bound = self.cfg.silence_s
        per_source: dict[str, float] = {}
        for (flow, fmt, _outcome), n in cur.lines.items():
            per_source[f"{flow}/{fmt}"] = per_source.get(f"{flow}/{fmt}", 0.0) + n
        for src, n in per_source.items():
            seen = self._source_seen.get(src)
            if seen is None or n != seen[0]:
                self._source_seen[src] = (n, now)
                continue
            quiet = now - seen[1]
            if bound is not None and quiet >= bound:
                yield _Condition(
                    SOURCE_SILENT,
                    src,
                    quiet,
                    bound,
                    bound,
                    f"source {src} silent for {quiet:.0f} s",
                    f"no line from {src} for {quiet:.0f} s (bound {bound:g} s); "
                    f"{n:.0f} lines before that",
                )

    def _lag(self, now: float, cur: Totals) -> Iterable[_Condition]:
        bound = self.cfg.watermark_lag_s
        if bound is None:
            return
        for flow, newest in cur.event_time.items():
            lag = now - newest
            if newest > 0 and lag > bound:
                yield _Condition(
                    WATERMARK_LAG,
                    flow,
                    lag,
                    bound,
                    0.0,
                    f"{flow} event time lags wall time by {lag:.0f} s",
                    f"newest event of flow {flow} is {lag:.0f} s behind wall time "
                    f"(bound {bound:g} s)",
                )

    def _dead_ratio(self, cur: Totals, base: Totals) -> Iterable[_Condition]:
        bound = self.cfg.dead_letter_ratio
        if bound is None:
            return
        read: dict[str, float] = {}
        dead: dict[str, float] = {}
        for key, n in cur.lines.items():
            flow, _fmt, outcome = key
            d = n - base.lines.get(key, 0.0)
            read[flow] = read.get(flow, 0.0) + d
            if outcome == "dead_lettered":
                dead[flow] = dead.get(flow, 0.0) + d
        for flow, n in read.items():
            ratio = dead.get(flow, 0.0) / n if n else 0.0
            if n >= self.cfg.min_lines and ratio > bound:
                yield _Condition(
                    DEAD_LETTER_RATIO,
                    flow,
                    ratio,
                    bound,
                    self.cfg.window_s,
                    f"{flow}: {ratio:.1%} of lines dead-lettered",
                    f"{dead.get(flow, 0.0):.0f} of {n:.0f} lines of flow {flow} went to "
                    f"dead letters in the last {self.cfg.window_s:g} s (bound {bound:.1%})",
                )

    def _failures(self, cur: Totals, base: Totals) -> Iterable[_Condition]:
        bound = self.cfg.delivery_failures
        if bound is None:
            return
        for sink, n in cur.failures.items():
            d = n - base.failures.get(sink, 0.0)
            if d >= bound:
                yield _Condition(
                    DELIVERY_FAILURES,
                    sink,
                    d,
                    bound,
                    self.cfg.window_s,
                    f"alert delivery to {sink} failing",
                    f"{d:.0f} failed deliveries to {sink} in the last "
                    f"{self.cfg.window_s:g} s (bound {bound})",
                )


class _HealthPartition(StatefulSourcePartition[Detection, None]):
    def __init__(self, monitor: HealthMonitor, interval_s: float, ticks: int | None) -> None:
        self._monitor = monitor
        self._interval = timedelta(seconds=interval_s)
        self._next = datetime.now(UTC) + self._interval
        self._ticks = ticks

    @override
    def next_batch(self) -> list[Detection]:
        # Called when next_awake has passed: never blocks, never sleeps.
        if self._ticks is not None:
            if self._ticks <= 0:
                raise StopIteration
            self._ticks -= 1
        self._next = datetime.now(UTC) + self._interval
        return self._monitor.check()

    @override
    def next_awake(self) -> datetime | None:
        return self._next

    @override
    def snapshot(self) -> None:
        return None  # conditions are re-evaluated from live metrics after a restart


class HealthSource(FixedPartitionedSource[Detection, None]):
    """A source of engine-health detections that wakes every ``cfg.interval_s``.

    One partition, so exactly one worker runs the monitor however many there are.

    Parameters
    ----------
    cfg
        Bounds.
    read
        Returns the current totals (:func:`read_totals` on the run's registry).
    now
        Wall clock for the monitor.
    ticks
        Stop after this many checks (for tests); ``None``, the default, runs forever.
    """

    def __init__(
        self,
        cfg: HealthConfig,
        read: Callable[[], Totals],
        *,
        now: Callable[[], float] = time.time,
        ticks: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.read = read
        self.now = now
        self.ticks = ticks

    @override
    def list_parts(self) -> list[str]:
        return ["health"]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _HealthPartition:
        monitor = HealthMonitor(self.cfg, self.read, now=self.now)
        return _HealthPartition(monitor, self.cfg.interval_s, self.ticks)


@dataclass(frozen=True)
class HealthOut:
    """Streams the health flow hands the composition root."""

    detections: Stream[Detection]
    dead: Stream[DeadLetter]


def build(flow: Dataflow, source: HealthSource, metrics_sink: Any) -> HealthOut:
    """Add the health steps to ``flow``: input, metrics, and the detection stream."""
    dets = op.input("health_in", flow, source)
    op.output("health_metrics", dets, metrics_sink)
    # The monitor cannot fail on data, so its dead-letter stream is always empty.
    dead = cast(Stream[DeadLetter], op.filter_map("health_no_dead", dets, lambda _d: None))
    return HealthOut(dets, dead)


def attach(flow: Dataflow, io: FeedIO) -> HealthOut:
    """The feed's ``attach``: watch every feed of this run through ``io.registry``."""
    cfg: HealthConfig = io.section("health")
    registry = io.registry
    source = HealthSource(cfg, lambda: read_totals(registry))
    return build(flow, source, io.metrics_sink("health"))
