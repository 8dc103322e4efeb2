"""Detection of the indicator flow: a baseline per series, alerts with re-arm (no bytewax).

:class:`IndicatorDetectors` holds one shard's state as plain Python (its snapshot is
:class:`IndicatorState`); the live flow and ``vigil backtest`` run the same object. Its
own module so :mod:`vigil.flows.indicators.flow` keeps the dataflow wiring; re-exported
there, where recovery snapshots written before the split find :class:`IndicatorState`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vigil.detectors.base import Explanation
from vigil.detectors.keyed import KeyedDetectors, KeyedDetectorsState
from vigil.flows.config.detectors import make_detector
from vigil.flows.indicators.config import IndicatorRule, IndicatorsConfig
from vigil.flows.indicators.records import FEED, KIND, IndicatorPoint, IndicatorScore, SeriesExpired

from vigil.records import DeadLetter, Detection, SeriesPoint


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
