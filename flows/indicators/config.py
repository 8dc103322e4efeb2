"""Configuration section of the indicator flow (flows/indicators/flow.py).

::

    indicators:
      inputs:
        - kind: file
          paths: ["/data/indicators/*.jsonl"]
          format: jsonl                  # or csv (see CsvColumns)
          tz: Asia/Ho_Chi_Minh           # for timestamps written without a zone
        - kind: redis_stream             # or the bus (vigil ingest --feed indicators)
          url: redis://127.0.0.1:6379/0
          stream: vigil:indicators
      rules:                             # first matching pattern wins
        - match: "health.*"
          detector: {kind: rolling_mad, window: 48}
          threshold: 4
        - match: "edoc.processing_time.*"
          direction: up
          detector: {kind: seasonal, period: week_hour}
      default: {detector: {kind: ensemble}}   # the default; threshold 0.25
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator
from vigil.flows.bus_inputs import BusSettings
from vigil.flows.config.base import Frozen, InputName, Severity, kind_or, known_zone
from vigil.flows.config.detectors import DetectorConfig, EnsembleConfig

#: Detectors whose score is a probability-like value in [0, 1].
UNIT_SCORES = frozenset({"ensemble", "likelihood"})
#: Their default alert threshold: tuned on NAB's dev half (0.15-0.3 score 60-61).
UNIT_THRESHOLD = 0.25


class CsvColumns(Frozen):
    """Which CSV column (or JSON key) holds each field of an indicator record.

    ``series: null`` takes the series name from the file instead (see
    :attr:`IndicatorInput.series_name`), for files that hold one series each.
    """

    series: str | None = "series"
    ts: str = "ts"
    value: str = "value"
    #: Columns copied into the record's labels (CSV); JSON records carry a ``labels`` object.
    labels: tuple[str, ...] = ()


class IndicatorInput(Frozen):
    """Read indicator records from files (JSON lines or CSV with a header row).

    JSON lines: ``{"series": "...", "ts": ..., "value": ..., "labels": {...}}``, with the keys
    renamed by ``columns``. ``ts`` is epoch seconds (a number) or an ISO 8601 string.
    """

    kind: Literal["file"] = "file"
    name: str | None = InputName
    paths: tuple[str, ...] = Field(min_length=1)
    format: Literal["jsonl", "csv"] = "jsonl"
    follow: bool = False
    start_at_end: bool = False
    max_line_bytes: int = Field(default=65536, ge=512)
    columns: CsvColumns = CsvColumns()
    series_name: str = Field(
        default="{stem}",
        description="series name when columns.series is null: {stem} file name without "
        "extension, {parent} its folder's name",
    )
    tz: str | None = Field(
        default=None,
        description="zone of timestamps written without one; null: such records are dead-lettered",
    )

    _tz = field_validator("tz")(known_zone)


class IndicatorStreamInput(BusSettings):
    """Read indicator records from the bus (Redis Streams), one record per entry.

    An entry's text is one record as a JSON object: a JSON line as it was (``fmt`` ``json``)
    or a CSV row as ``{column: value}`` (``fmt`` ``csv_row``), as ``vigil ingest --feed
    indicators`` writes them. ``columns``, ``series_name`` and ``tz`` read them as they
    read a file's records; ``{stem}`` is the producer's file name (the entry's origin).
    """

    kind: Literal["redis_stream"] = "redis_stream"
    name: str | None = InputName
    stream: str = "vigil:indicators"
    columns: CsvColumns = CsvColumns()
    series_name: str = "{stem}"
    tz: str | None = None

    _tz = field_validator("tz")(known_zone)


IndicatorInputConfig = Annotated[
    Annotated[IndicatorInput, Tag("file")] | Annotated[IndicatorStreamInput, Tag("redis_stream")],
    Discriminator(kind_or("file")),  # no kind: a file input (before the bus)
]


class IndicatorRule(Frozen):
    """How the series matching ``match`` (an fnmatch glob) are judged.

    A value is *anomalous* when its score is at least ``threshold`` and it lies on the
    ``direction`` side of the expected value.
    """

    match: str = "*"
    # The resonance ensemble: on NAB's dev half its alerts score 61.0 (standard), where
    # the best cheap detector (EWMA z-score, alpha 0.01, threshold 6) scores 45.4 with
    # 3.6x the alerts (README, "Backtests"). It costs ~18k points/s per core, which KPI
    # series (a value a minute or slower) never approach.
    detector: DetectorConfig = EnsembleConfig()
    threshold: float = Field(
        default=UNIT_THRESHOLD,
        gt=0,
        description="score at or above which to alert (default: 0.25 for detectors "
        "scoring in [0, 1] (ensemble, likelihood), 6 for the others)",
    )
    direction: Literal["both", "up", "down"] = "both"
    severity: Severity = "warning"
    warmup: int = Field(
        default=30, ge=0, description="values a series' own baseline learns before it judges"
    )
    fallback: Literal["none", "group"] = Field(
        default="none",
        description="judge a warming series by nobody (no alerts) or by the baseline of "
        "all series of this rule in its shard",
    )

    @model_validator(mode="before")
    @classmethod
    def _threshold_fits_the_detector(cls, data: Any) -> Any:
        """A rule that names a detector but no threshold gets one on that detector's scale."""
        if isinstance(data, dict) and data.get("threshold") is None and "detector" in data:
            det = data["detector"]
            kind = det.get("kind") if isinstance(det, dict) else getattr(det, "kind", None)
            data = {**data, "threshold": UNIT_THRESHOLD if kind in UNIT_SCORES else 6.0}
        return data


class IndicatorsConfig(Frozen):
    """Settings of the indicator flow (flows/indicators/flow.py)."""

    inputs: tuple[IndicatorInputConfig, ...] = ()
    rules: tuple[IndicatorRule, ...] = ()
    default: IndicatorRule = IndicatorRule()
    realert_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        description="at most one alert per series in this many seconds of event time",
    )
    idle_ttl_s: float = Field(
        default=7 * 86400.0, gt=0, description="forget a series' baseline after this idle time"
    )
    shards: int = Field(default=16, ge=1, le=4096)
    max_series_per_shard: int = Field(
        default=100_000, ge=1, description="baselines kept per shard; least recent evicted"
    )
    max_exported_series: int = Field(
        default=2000,
        ge=1,
        description="series exported as gauges per process (bounded label set)",
    )


def _rule_line(r: IndicatorRule) -> str:
    params = ", ".join(
        f"{k}={v}" for k, v in r.detector.model_dump(exclude_defaults=True).items() if k != "kind"
    )
    kind = r.detector.kind + (f" ({params})" if params else "")
    return f"{r.match!r}: {kind}, threshold {r.threshold:g}, direction {r.direction}"


def explain(section: IndicatorsConfig) -> list[str]:
    """What ``vigil check-config`` says about the indicator section: which detector runs."""
    out = [f"indicators inputs: {len(section.inputs)}"]
    out += [f"  rule {_rule_line(r)}" for r in section.rules]
    out.append(f"  every other series {_rule_line(section.default)}")
    return out
