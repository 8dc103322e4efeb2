"""The indicator flow: numeric series in, baselines, bands and anomaly alerts out.

::

    lines (JSON lines / CSV) --parse--> IndicatorPoint --group by shard of series--> detect
        |                                                                              |
        +--> dead letters, tallies                  SeriesPoint (gauges), Detection <--+

Records are ``{series, ts, value, labels}``. Each series is judged by the first rule whose
glob matches its name (``indicators.rules``, then ``indicators.default``), with its own
baseline: one detector per series, kept in a :class:`~vigil.detectors.keyed.KeyedDetectors` per
rule (warm-up, group fallback, idle expiry, bounded memory).

As in the security flow, points travel per *shard* of the series name, in lists: bytewax
keeps one logic object (and one snapshot) per key, so a hundred thousand series must not
become a hundred thousand keys. :class:`IndicatorDetectors` holds a shard's state as a
plain Python object: the live flow and ``vigil backtest``
(flows/evaluation/indicators.py) run the very
same object through the very same dataflow (:func:`indicators_dataflow`).

This module wires the dataflow; records, parsing and detection live in
:mod:`~vigil.flows.indicators.records`, :mod:`~vigil.flows.indicators.parsing` and
:mod:`~vigil.flows.indicators.detection`, and are re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from typing_extensions import override
from vigil.flows.config.base import input_step_ids
from vigil.flows.errors import ConfigError
from vigil.flows.feed import FeedIO, standalone_flow
from vigil.flows.guard import guard_batch, guard_logic
from vigil.flows.indicators.config import IndicatorInput, IndicatorsConfig, IndicatorStreamInput

# Re-exported: tests, backtests and recovery snapshots (IndicatorState) name them here.
from vigil.flows.indicators.detection import (  # noqa: F401
    IndicatorDetectors,
    IndicatorState,
    rule_hit,
)
from vigil.flows.indicators.parsing import (  # noqa: F401
    BAD_CSV_ROW,
    BAD_JSON,
    BAD_LABELS,
    BAD_NUMBER,
    BAD_TS,
    MISSING_SERIES,
    MISSING_TS,
    MISSING_VALUE,
    NAIVE_TS,
    NON_FINITE,
    NOT_OBJECT,
    REASONS,
    TOO_LONG,
    IndicatorParser,
    Parsed,
    _file_series_name,
    make_parse_batch,
    parse_ts,
)
from vigil.flows.indicators.records import (  # noqa: F401
    FEED,
    KIND,
    IndicatorPoint,
    IndicatorScore,
    SeriesExpired,
)

from vigil.records import DeadLetter, Detection, RawLine, SeriesPoint, Tally

log = logging.getLogger(__name__)

#: The input settings a source's lines are parsed by (a file's or the bus').
IndicatorInputs: TypeAlias = IndicatorInput | IndicatorStreamInput


# ====================================================================== bytewax glue
class IndicatorLogic(StatefulBatchLogic[list[IndicatorPoint], Any, IndicatorState]):
    """One shard of series. Takes lists of points; emits detections, points, dead letters."""

    def __init__(self, det: IndicatorDetectors, every_point: bool) -> None:
        self.det = det
        self.every_point = every_point

    @override
    def on_batch(self, values: list[list[IndicatorPoint]]) -> tuple[list[Any], bool]:
        det = self.det
        out: list[Any] = []
        for pts in values:
            out.extend(det.process(pts, every_point=self.every_point))
        if det.errors:
            out.extend(det.errors)
            det.errors.clear()
        return out, StatefulBatchLogic.RETAIN

    @override
    def on_eof(self) -> tuple[list[Any], bool]:
        return [], StatefulBatchLogic.RETAIN

    @override
    def snapshot(self) -> IndicatorState:
        return self.det.snapshot()


@dataclass(frozen=True)
class IndicatorStreams:
    """What the pipeline produces. ``scores`` carries :class:`IndicatorScore` (backtests)."""

    detections: Stream[Detection]
    dead: Stream[DeadLetter]
    telemetry: Stream[Any]
    scores: Stream[IndicatorScore]


def indicators_dataflow(
    flow: Dataflow,
    cfg: IndicatorsConfig,
    sources: Sequence[tuple[Source[RawLine], IndicatorInputs]],
    *,
    every_point: bool = False,
) -> IndicatorStreams:
    """Add the indicator pipeline to ``flow``: one parse step per input, one detect step.

    Parameters
    ----------
    flow
        The dataflow to add to.
    cfg
        The indicator settings.
    sources
        Each source with the input settings its lines are parsed by.
    every_point
        Emit an :class:`IndicatorScore` for every point on ``scores`` (backtests) instead
        of the newest :class:`SeriesPoint` per series and batch on ``telemetry`` (gauges).
    """
    if not sources:
        msg = "indicators flow needs at least one input (indicators.inputs is empty)"
        raise ConfigError(msg)
    parsed_streams = []
    ids = input_step_ids("indicators", [inp for _, inp in sources], len(sources))
    for i, (src, inp) in enumerate(sources):
        raw = op.input(ids[i], flow, src)
        parsed_streams.append(
            op.flat_map_batch(
                f"indicators_parse_{i}",
                raw,
                guard_batch(f"indicators_parse_{i}", FEED, make_parse_batch(inp, cfg.shards)),
            )
        )
    parsed = (
        parsed_streams[0]
        if len(parsed_streams) == 1
        else op.merge("indicators_parsed", *parsed_streams)
    )
    b = op.branch("indicators_is_points", parsed, lambda x: type(x) is tuple)
    keyed = cast(Stream[tuple[str, list[IndicatorPoint]]], b.trues)
    rest = op.branch("indicators_is_dead", b.falses, lambda x: type(x) is DeadLetter)
    dead = cast(Stream[DeadLetter], rest.trues)
    tallies = cast(Stream[Tally], rest.falses)

    def builder(resume: IndicatorState | None) -> IndicatorLogic:
        det = IndicatorDetectors(cfg)  # hyperparameters from today's config ...
        if resume is not None:
            det.restore(resume)  # ... learned state from the snapshot
        return IndicatorLogic(det, every_point)

    # Never rename "indicators_detect": recovery state is stored under it.
    detected = op.key_rm(
        "indicators_unkey",
        op.stateful_batch(
            "indicators_detect", keyed, guard_logic("indicators_detect", FEED, builder)
        ),
    )
    is_det = op.branch("indicators_is_detection", detected, lambda x: type(x) is Detection)
    detections = cast(Stream[Detection], is_det.trues)
    is_dl = op.branch("indicators_is_detect_dead", is_det.falses, lambda x: type(x) is DeadLetter)
    all_dead = op.merge("indicators_dead", dead, cast(Stream[DeadLetter], is_dl.trues))
    is_score = op.branch("indicators_is_score", is_dl.falses, lambda x: type(x) is IndicatorScore)
    telemetry = op.merge("indicators_telemetry", tallies, is_score.falses, detections, all_dead)
    return IndicatorStreams(
        detections, all_dead, telemetry, cast(Stream[IndicatorScore], is_score.trues)
    )


# ====================================================================== metrics
class CappedSeriesSink(DynamicSink[Any]):
    """Telemetry to the metrics sink, exporting at most ``max_series`` series as gauges.

    The cap holds per process (one Prometheus endpoint): the first ``max_series`` series
    seen are exported; points of further series are still scored and alerted on, but not
    exported, and counted in :attr:`dropped` (with one warning). A forgotten series
    (:class:`SeriesExpired`) has its gauges removed and frees its place.

    Parameters
    ----------
    inner
        The metrics sink (``FlowIO.metrics_sink("indicators")``).
    max_series
        Most series exported at once.
    """

    def __init__(self, inner: Any, max_series: int) -> None:
        self.inner = inner
        self.max_series = max_series
        self.exported: set[str] = set()
        self.dropped = 0
        self._lock = threading.Lock()

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CappedPartition:
        return _CappedPartition(self, self.inner.build(step_id, worker_index, worker_count))


class _CappedPartition(StatelessSinkPartition[Any]):
    def __init__(self, owner: CappedSeriesSink, inner: StatelessSinkPartition[Any]) -> None:
        self.owner = owner
        self.inner = inner

    @override
    def write_batch(self, items: list[Any]) -> None:
        o = self.owner
        keep: list[Any] = []
        gone: list[str] = []
        with o._lock:
            for it in items:
                t = type(it)
                if t is SeriesPoint:
                    if it.series not in o.exported:
                        if len(o.exported) >= o.max_series:
                            if o.dropped == 0:
                                log.warning(
                                    "indicator series over the export limit are not exported",
                                    extra={"max_exported_series": o.max_series},
                                )
                            o.dropped += 1
                            continue
                        o.exported.add(it.series)
                    keep.append(it)
                elif t is SeriesExpired:
                    if it.series in o.exported:
                        o.exported.discard(it.series)
                        gone.append(it.series)
                else:
                    keep.append(it)
        if gone:
            self._remove(gone)
        self.inner.write_batch(keep)

    def _remove(self, series: list[str]) -> None:
        m = getattr(self.owner.inner, "metrics", None)
        if m is None:
            return
        for name in series:
            for g in (m.value, m.expected, m.lower, m.upper, m.score):
                with contextlib.suppress(KeyError):  # never exported by this process
                    g.remove(FEED, name)

    @override
    def close(self) -> None:
        self.inner.close()


# ====================================================================== composition
def make_sources(
    cfg: IndicatorsConfig, environ: Mapping[str, str] | None = None
) -> list[tuple[Source[RawLine], IndicatorInputs]]:
    """One source per configured input (files or the bus), with the settings its lines
    are parsed by."""
    from vigil.flows.bus_inputs import redis_stream_source
    from vigil.sources.files import FileTailSource

    out: list[tuple[Source[RawLine], IndicatorInputs]] = []
    for inp in cfg.inputs:
        if isinstance(inp, IndicatorStreamInput):
            out.append((redis_stream_source(inp, environ, fmt="json"), inp))
            continue
        src = FileTailSource(
            inp.paths,
            inp.format,
            follow=inp.follow,
            max_line_bytes=inp.max_line_bytes,
            start_at_end=inp.start_at_end,
        )
        out.append((src, inp))
    return out


def attach(flow: Dataflow, io: FeedIO) -> IndicatorStreams:
    """Add the indicator flow to ``flow`` (the feed's ``attach``, :mod:`vigil.flows.feed`).

    Gauges go to ``io.metrics_sink("indicators")``, capped at
    ``indicators.max_exported_series`` series; detections and dead letters are returned
    for the caller to route.
    """
    cfg: IndicatorsConfig = io.section("indicators")
    s = indicators_dataflow(flow, cfg, make_sources(cfg, io.environ))
    sink = CappedSeriesSink(io.metrics_sink(FEED), cfg.max_exported_series)
    op.output("indicators_metrics_out", s.telemetry, sink)
    return s


def build_flow(
    cfg: IndicatorsConfig,
    sources: Sequence[tuple[Source[RawLine], IndicatorInputs]],
    alert_sink: Sink[Detection],
    dead_sink: Sink[DeadLetter],
    metrics_sink: Sink[Any],
    *,
    name: str = "indicators",
) -> Dataflow:
    """The indicator dataflow on its own; sources and sinks are passed in (tests)."""

    def add(flow: Dataflow) -> IndicatorStreams:
        s = indicators_dataflow(flow, cfg, sources)
        op.output("indicators_metrics_out", s.telemetry, metrics_sink)
        return s

    return standalone_flow(name, add, alert_sink, dead_sink)


def series_files(paths: Iterable[str | Path]) -> list[Path]:
    """Indicator data files under ``paths`` (files, or folders searched recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in (".csv", ".jsonl"))
        elif p.is_file():
            out.append(p)
    return out
