"""Records of the indicator flow: points in, scores (backtests) and expiries out.

Its own module so parsing (:mod:`vigil.flows.indicators.parsing`), detection
(:mod:`vigil.flows.indicators.detection`) and the dataflow share them; re-exported by
:mod:`vigil.flows.indicators.flow`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigil.records import SeriesPoint

FEED = "indicators"
KIND = "indicator_anomaly"


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
