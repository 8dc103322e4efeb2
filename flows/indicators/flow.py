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
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any, cast
from zoneinfo import ZoneInfo

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from typing_extensions import override
from vigil.detectors.base import Explanation
from vigil.detectors.keyed import KeyedDetectors, KeyedDetectorsState
from vigil.flows.config.base import input_step_ids, shard_of
from vigil.flows.config.detectors import make_detector
from vigil.flows.errors import ConfigError
from vigil.flows.feed import FeedIO
from vigil.flows.guard import guard_batch, guard_logic
from vigil.flows.indicators.config import IndicatorInput, IndicatorRule, IndicatorsConfig

from vigil.records import DeadLetter, Detection, RawLine, SeriesPoint, Tally

log = logging.getLogger(__name__)

FEED = "indicators"
KIND = "indicator_anomaly"

# Dead-letter reasons: stable and low-cardinality (a metric label).
BAD_JSON = "bad json"
NOT_OBJECT = "not an object"
BAD_CSV_ROW = "bad csv row"
MISSING_SERIES = "missing field: series"
MISSING_TS = "missing field: ts"
MISSING_VALUE = "missing field: value"
BAD_NUMBER = "bad number"
NON_FINITE = "non-finite value"
BAD_TS = "bad timestamp"
NAIVE_TS = "timestamp without time zone"
BAD_LABELS = "bad labels"
TOO_LONG = "line too long"
#: Every dead-letter reason of this flow.
REASONS = (
    BAD_JSON,
    NOT_OBJECT,
    BAD_CSV_ROW,
    MISSING_SERIES,
    MISSING_TS,
    MISSING_VALUE,
    BAD_NUMBER,
    NON_FINITE,
    BAD_TS,
    NAIVE_TS,
    BAD_LABELS,
    TOO_LONG,
)


# ====================================================================== records
@dataclass(frozen=True, slots=True)
class IndicatorPoint:
    """One value of one indicator series. ``ts`` is float epoch seconds (UTC)."""

    series: str
    ts: float
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class IndicatorScore:
    """Every scored point, for backtests: the point, whether it was anomalous, and its rule.

    ``flagged`` is the rule's condition (score at or above the threshold, on the rule's
    side of the expected value); alerts are the subset that the re-alert interval lets
    through.
    """

    point: SeriesPoint
    flagged: bool
    rule: int


@dataclass(frozen=True, slots=True)
class SeriesExpired:
    """A series was forgotten (idle or evicted): its gauges can go."""

    series: str


# ====================================================================== parsing
class _Bad(Exception):
    """A record that cannot be read; ``args[0]`` is one of :data:`REASONS`."""


def parse_ts(v: Any, tz: ZoneInfo | None) -> float:
    """Epoch seconds from a number, a numeric string or an ISO 8601 string.

    A string without a zone takes ``tz``; without ``tz`` it is an error.

    Examples
    --------
    >>> parse_ts("2024-05-01T08:00:00+07:00", None)
    1714525200.0
    >>> parse_ts("2024-05-01 08:00:00", ZoneInfo("Asia/Ho_Chi_Minh"))
    1714525200.0
    >>> parse_ts(1714525200, None)
    1714525200.0
    >>> parse_ts("2024-05-01 08:00:00", None)
    Traceback (most recent call last):
    ...
    vigil.flows.indicators.flow._Bad: timestamp without time zone
    """
    if isinstance(v, bool):
        raise _Bad(BAD_TS)
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        s = v.strip()
        try:
            f = float(s)
        except ValueError:
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                raise _Bad(BAD_TS) from None
            if dt.tzinfo is None:
                if tz is None:
                    raise _Bad(NAIVE_TS) from None
                dt = dt.replace(tzinfo=tz)
            return dt.timestamp()
    else:
        raise _Bad(BAD_TS)
    if not math.isfinite(f):
        raise _Bad(BAD_TS)
    return f


def _value(v: Any) -> float:
    if v is None or v == "":
        raise _Bad(MISSING_VALUE)
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise _Bad(BAD_NUMBER)
    try:
        f = float(v)
    except ValueError:
        raise _Bad(BAD_NUMBER) from None
    if not math.isfinite(f):
        raise _Bad(NON_FINITE)
    return f


def _file_series_name(template: str, origin: str) -> str:
    p = PurePath(origin.removeprefix("replay:"))
    return template.format(stem=p.stem, parent=p.parent.name, name=p.name)


class IndicatorParser:
    """Turns raw lines of one input into :class:`IndicatorPoint` or :class:`DeadLetter`.

    CSV files need their header row. A file read from its start gives it as its first
    line; a file resumed in the middle (after a restart) has its header read from the file
    itself, so the flow never loses track of its columns.

    Parameters
    ----------
    inp
        The input's settings (format, column names, time zone).

    Examples
    --------
    >>> from vigil.flows.indicators.config import IndicatorInput
    >>> p = IndicatorParser(IndicatorInput(paths=("x",), format="jsonl"))
    >>> p.parse(RawLine("jsonl", "x", '{"series": "a", "ts": 60, "value": "1.5"}'))
    IndicatorPoint(series='a', ts=60.0, value=1.5, labels=())
    >>> p.parse(RawLine("jsonl", "x", '{"series": "a", "ts": 60, "value": "NaN"}')).reason
    'non-finite value'
    """

    def __init__(self, inp: IndicatorInput) -> None:
        self.inp = inp
        self.tz = ZoneInfo(inp.tz) if inp.tz else None
        self._headers: dict[str, tuple[str, list[str]]] = {}  # origin -> (line, columns)
        self._names: dict[str, str] = {}  # origin -> series name (columns.series is None)

    def _series_of_file(self, origin: str) -> str:
        name = self._names.get(origin)
        if name is None:
            name = self._names[origin] = _file_series_name(self.inp.series_name, origin)
        return name

    def _header(self, raw: RawLine) -> tuple[str, list[str]] | None:
        """The (header line, columns) of the line's file; ``None`` if this line is it."""
        h = self._headers.get(raw.origin)
        if h is None:
            first: str | None = None
            try:
                with open(raw.origin.removeprefix("replay:"), encoding="utf-8") as f:
                    first = f.readline().rstrip("\r\n")
            except OSError:
                first = None  # not a file (a test source, a bus): this line is the header
            if first is None:
                first = raw.text
            h = self._headers[raw.origin] = (first, next(csv.reader([first]), []))
            if len(self._headers) > 10_000:
                self._headers.pop(next(iter(self._headers)))
        return None if raw.text == h[0] else h

    def parse(self, raw: RawLine) -> IndicatorPoint | DeadLetter | None:
        """One line; ``None`` for a CSV header line or a blank line."""
        if raw.oversize:
            return DeadLetter("indicators_parse", TOO_LONG, raw.text, raw.fmt, raw.origin)
        if not raw.text.strip():
            return None
        try:
            if self.inp.format == "csv":
                h = self._header(raw)
                if h is None:
                    return None
                row = next(csv.reader([raw.text]), [])
                if len(row) > len(h[1]):
                    raise _Bad(BAD_CSV_ROW)
                rec: dict[str, Any] = dict(zip(h[1], row, strict=False))
            else:
                try:
                    obj = orjson.loads(raw.text)
                except orjson.JSONDecodeError:
                    raise _Bad(BAD_JSON) from None
                if not isinstance(obj, dict):
                    raise _Bad(NOT_OBJECT)
                rec = obj
            return self._point(rec, raw.origin)
        except _Bad as ex:
            return DeadLetter(
                "indicators_parse", str(ex.args[0]), raw.text[:512], raw.fmt, raw.origin
            )

    def _point(self, rec: dict[str, Any], origin: str) -> IndicatorPoint:
        cols = self.inp.columns
        if cols.series is None:
            series = self._series_of_file(origin)
        else:
            s = rec.get(cols.series)
            if s is None or s == "":
                raise _Bad(MISSING_SERIES)
            series = str(s)
        ts_raw = rec.get(cols.ts)
        if ts_raw is None or ts_raw == "":
            raise _Bad(MISSING_TS)
        ts = parse_ts(ts_raw, self.tz)
        value = _value(rec.get(cols.value))
        labels: tuple[tuple[str, str], ...] = ()
        if self.inp.format == "csv":
            if cols.labels:
                labels = tuple((k, str(rec.get(k, ""))) for k in cols.labels)
        else:
            lab = rec.get("labels")
            if lab is not None:
                if not isinstance(lab, dict):
                    raise _Bad(BAD_LABELS)
                labels = tuple(sorted((str(k), str(v)) for k, v in lab.items()))
        return IndicatorPoint(series, ts, value, labels)


Parsed = tuple[str, list[IndicatorPoint]] | DeadLetter | Tally


def make_parse_batch(inp: IndicatorInput, shards: int) -> Callable[[list[RawLine]], list[Parsed]]:
    """The parse step: a batch of lines to ``(shard, [points])`` groups, dead letters, a tally."""
    parser = IndicatorParser(inp)
    shard_cache: dict[str, str] = {}

    def parse_batch(raws: list[RawLine]) -> list[Parsed]:
        out: list[Parsed] = []
        groups: dict[str, list[IndicatorPoint]] = {}
        ok = dead = 0
        for raw in raws:
            r = parser.parse(raw)
            if r is None:
                ok += 1
            elif type(r) is IndicatorPoint:
                ok += 1
                key = shard_cache.get(r.series)
                if key is None:
                    if len(shard_cache) > 100_000:
                        shard_cache.clear()
                    key = shard_cache[r.series] = shard_of(r.series, shards)
                g = groups.get(key)
                if g is None:
                    groups[key] = [r]
                else:
                    g.append(r)
            else:
                dead += 1
                out.append(cast(DeadLetter, r))
        out.extend(groups.items())
        lines: dict[tuple[str, str], int] = {}
        if ok:
            lines[(inp.format, "parsed")] = ok
        if dead:
            lines[(inp.format, "dead_lettered")] = dead
        out.append(Tally("indicators_parse", lines=lines))
        return out

    return parse_batch


# ====================================================================== detection
def rule_hit(rule: IndicatorRule, x: float, e: Explanation) -> bool:
    """Whether ``x``, explained by ``e``, is anomalous under ``rule``."""
    if not e.score >= rule.threshold:
        return False
    if rule.direction == "up":
        return x > e.expected
    if rule.direction == "down":
        return x < e.expected
    return True


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else ("-inf" if x < 0 else "inf")


@dataclass(frozen=True, slots=True)
class IndicatorState:
    """A shard's learned state: per-rule baselines and per-series alert state.

    ``keyed`` holds ``(rule pattern, detector kind, KeyedDetectorsState)`` so that after a
    configuration change each baseline returns to the rule it belongs to (or is dropped
    when that rule or its detector kind is gone). ``series`` holds ``(series, last seen,
    time of the last alert or None)``, least recently seen first.
    """

    keyed: tuple[tuple[str, str, KeyedDetectorsState], ...]
    series: tuple[tuple[str, float, float | None], ...]
    clock: float
    last_expire: float


class _Series:
    __slots__ = ("alerted", "last", "rule")

    def __init__(self, rule: int, last: float, alerted: float | None) -> None:
        self.rule = rule
        self.last = last
        self.alerted = alerted  # event time of the series' last alert


class IndicatorDetectors:
    """The indicator detection of one shard: a baseline per series, alerts with re-arm.

    Plain Python, no bytewax: the flow's stateful step wraps it, and tests and backtests
    can drive it directly. Each point is scored, then learned (prequential).

    Parameters
    ----------
    cfg
        The indicator settings (rules, re-alert interval, idle expiry, limits).

    Examples
    --------
    >>> from vigil.flows.indicators.config import IndicatorsConfig
    >>> cfg = IndicatorsConfig.model_validate({"default": {"threshold": 4, "warmup": 5,
    ...     "detector": {"kind": "ewma_zscore", "alpha": 0.2, "grace_period": 5}}})
    >>> det = IndicatorDetectors(cfg)
    >>> pts = [IndicatorPoint("beds", 3600.0 * i, 50.0 + i % 3) for i in range(20)]
    >>> out = det.process(pts + [IndicatorPoint("beds", 72000.0, 90.0)])
    >>> [d.description for d in out if isinstance(d, Detection)]
    ['beds: 90 vs expected 50.92 (band 47.85 to 53.99); score 50.97 >= 4']
    """

    def __init__(self, cfg: IndicatorsConfig) -> None:
        self.cfg = cfg
        self.rules: tuple[IndicatorRule, ...] = (*cfg.rules, cfg.default)
        self._keyed = [self._new_keyed(r) for r in self.rules]
        self._series: dict[str, _Series] = {}  # least recently seen first
        self._clock = -math.inf
        self._last_expire = -math.inf
        self._expire_every = cfg.idle_ttl_s / 8
        self.errors: list[DeadLetter] = []

    def _new_keyed(self, rule: IndicatorRule) -> KeyedDetectors:
        dcfg = rule.detector
        return KeyedDetectors(
            lambda: make_detector(dcfg),
            idle_ttl_s=self.cfg.idle_ttl_s,
            max_keys=self.cfg.max_series_per_shard,
            warmup=rule.warmup,
            fallback=rule.fallback,
        )

    def rule_index(self, series: str) -> int:
        """Index into :attr:`rules` of the first rule whose pattern matches ``series``."""
        for i, r in enumerate(self.cfg.rules):
            if fnmatch.fnmatchcase(series, r.match):
                return i
        return len(self.rules) - 1

    def __len__(self) -> int:
        return len(self._series)

    # ------------------------------------------------------------ state
    def snapshot(self) -> IndicatorState:
        return IndicatorState(
            tuple(
                (r.match, r.detector.kind, k.snapshot())
                for r, k in zip(self.rules, self._keyed, strict=True)
            ),
            tuple((name, s.last, s.alerted) for name, s in self._series.items()),
            self._clock,
            self._last_expire,
        )

    def restore(self, state: IndicatorState) -> None:
        saved = {(m, kind): ks for m, kind, ks in state.keyed}
        for r, k in zip(self.rules, self._keyed, strict=True):
            ks = saved.get((r.match, r.detector.kind))
            if ks is not None:
                k.restore(ks)
        self._series = {
            name: _Series(self.rule_index(name), last, alerted)
            for name, last, alerted in state.series[-self.cfg.max_series_per_shard :]
        }
        self._clock = state.clock
        self._last_expire = state.last_expire

    # ------------------------------------------------------------ processing
    def process(self, points: Iterable[IndicatorPoint], *, every_point: bool = False) -> list[Any]:
        """Score and learn every point in order.

        Returns detections and series points (the newest per series, for gauges) or, with
        ``every_point``, an :class:`IndicatorScore` per point (for backtests), followed by
        a :class:`SeriesExpired` for each series forgotten.
        """
        out: list[Any] = []
        latest: dict[str, SeriesPoint] = {}
        series_map = self._series
        rules = self.rules
        realert = self.cfg.realert_s
        clock = self._clock
        for p in points:
            name, x, ts = p.series, p.value, p.ts
            s = series_map.get(name)
            if s is None:
                if len(series_map) >= self.cfg.max_series_per_shard:
                    old = next(iter(series_map))
                    del series_map[old]
                    out.append(SeriesExpired(old))
                s = series_map[name] = _Series(self.rule_index(name), ts, None)
            else:
                del series_map[name]  # re-insert: dict order is least recently seen first
                series_map[name] = s
                if ts > s.last:
                    s.last = ts
            if ts > clock:
                clock = ts
            rule = rules[s.rule]
            keyed = self._keyed[s.rule]
            try:
                e = keyed.explain_one(name, x, ts)
                keyed.learn_one(name, x, ts)
            except Exception as ex:  # a detector bug must not stop the flow
                self.errors.append(
                    DeadLetter("indicators_detect", type(ex).__name__, repr(p)[:512], "", "")
                )
                continue
            hit = rule_hit(rule, x, e)
            sp = SeriesPoint(FEED, name, ts, x, e.expected, e.lower, e.upper, e.score)
            if every_point:
                out.append(IndicatorScore(sp, hit, s.rule))
            else:
                latest[name] = sp
            # At most one alert per series per realert_s, whether the condition held all
            # along or flickered: a value hovering at the threshold must not page anyone
            # at every crossing.
            if hit and (s.alerted is None or ts - s.alerted >= realert):
                s.alerted = ts
                out.append(self._detection(p, rule, e))
        self._clock = clock
        out.extend(latest.values())
        if clock - self._last_expire >= self._expire_every:
            out.extend(self.expire(clock))
        return out

    def expire(self, now_ts: float) -> list[SeriesExpired]:
        """Forget series idle for more than ``idle_ttl_s`` before ``now_ts``."""
        self._last_expire = now_ts
        horizon = now_ts - self.cfg.idle_ttl_s
        idle = [n for n, s in self._series.items() if s.last < horizon]
        for n in idle:
            del self._series[n]
        for k in self._keyed:
            k.expire(now_ts)
        return [SeriesExpired(n) for n in idle]

    def _detection(self, p: IndicatorPoint, rule: IndicatorRule, e: Explanation) -> Detection:
        x = p.value
        direction = "above" if x > e.expected else "below"
        return Detection(
            kind=KIND,
            entity=p.series,
            severity=rule.severity,
            ts=p.ts,
            observed=x,
            threshold=rule.threshold,
            summary=f"{p.series} {direction} its baseline",
            description=(
                f"{p.series}: {_fmt(x)} vs expected {_fmt(e.expected)} (band {_fmt(e.lower)} to "
                f"{_fmt(e.upper)}); score {e.score:.2f} >= {_fmt(rule.threshold)}"
            ),
            feed=FEED,
            expected=e.expected,
            lower=e.lower,
            upper=e.upper,
            extra=(*p.labels, ("detector", rule.detector.kind)),
        )


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
    sources: Sequence[tuple[Source[RawLine], IndicatorInput]],
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
def make_sources(cfg: IndicatorsConfig) -> list[tuple[Source[RawLine], IndicatorInput]]:
    """One file source per configured input, with the settings its lines are parsed by."""
    from vigil.sources.files import FileTailSource

    return [
        (
            FileTailSource(
                inp.paths,
                inp.format,
                follow=inp.follow,
                max_line_bytes=inp.max_line_bytes,
                start_at_end=inp.start_at_end,
            ),
            inp,
        )
        for inp in cfg.inputs
    ]


def attach(flow: Dataflow, io: FeedIO) -> IndicatorStreams:
    """Add the indicator flow to ``flow`` (the feed's ``attach``, :mod:`vigil.flows.feed`).

    Gauges go to ``io.metrics_sink("indicators")``, capped at
    ``indicators.max_exported_series`` series; detections and dead letters are returned
    for the caller to route.
    """
    cfg: IndicatorsConfig = io.section("indicators")
    s = indicators_dataflow(flow, cfg, make_sources(cfg))
    sink = CappedSeriesSink(io.metrics_sink(FEED), cfg.max_exported_series)
    op.output("indicators_metrics_out", s.telemetry, sink)
    return s


def build_flow(
    cfg: IndicatorsConfig,
    sources: Sequence[tuple[Source[RawLine], IndicatorInput]],
    alert_sink: Sink[Detection],
    dead_sink: Sink[DeadLetter],
    metrics_sink: Sink[Any],
    *,
    name: str = "indicators",
) -> Dataflow:
    """The indicator dataflow on its own; sources and sinks are passed in (tests)."""
    flow = Dataflow(name)
    s = indicators_dataflow(flow, cfg, sources)
    op.output("indicators_metrics_out", s.telemetry, metrics_sink)
    op.output("alerts_out", s.detections, alert_sink)
    op.output("dead_out", s.dead, dead_sink)
    return flow


def series_files(paths: Iterable[str | Path]) -> list[Path]:
    """Indicator data files under ``paths`` (files, or folders searched recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in (".csv", ".jsonl"))
        elif p.is_file():
            out.append(p)
    return out
