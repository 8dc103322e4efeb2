"""The volume baseline: event rates per tumbling window against a baseline per series.

Its own module because it is its own stateful step (``volume``, one logic per log source)
with its own snapshot, :class:`VolumeSnapshot`, independent of the per-source rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bytewax.operators import StatefulBatchLogic
from vigil.detectors.base import Detector, Explanation
from vigil.flows.config.detectors import make_detector
from vigil.flows.security.config import SecurityConfig
from vigil.flows.security.episodes import _EVIDENCE_TOP, FEED, _fmt_n

from vigil.records import Detection, SeriesPoint, Watermark

_MAX_EMPTY_WINDOWS = 10_000

#: A volume episode holds this many windows after its last anomalous one: one normal
#: window inside a surge does not end it (which would page twice for one surge).
_VOLUME_HOLD_WINDOWS = 3
_TOP_SOURCES = 50  # contributors kept per open window


@dataclass(frozen=True, slots=True)
class VolumeSnapshot:
    open_buckets: tuple[tuple[float, tuple[tuple[str, int], ...]], ...]
    next_bucket: float | None
    detectors: tuple[tuple[str, Any], ...]  # (series, detector snapshot)
    #: (series, start, value at start, peak, peak time, last anomalous window end)
    active: tuple[tuple[str, float, float, float, float, float], ...]
    dataset: str = ""
    tops: tuple[tuple[float, tuple[tuple[str, int], ...]], ...] = ()


class VolumeBaseline:
    """Overall event rates per tumbling window against an EWMA z-score baseline per series.

    Tallies from any number of workers are summed per window; a window is closed once the
    newest window seen is ``allowed_lateness_s`` past its end. Windows with no events count
    as zero, so a feed that drops is noticed too. An anomaly is an episode: it starts at
    the first anomalous window, holds ``_VOLUME_HOLD_WINDOWS`` windows past the last one,
    and names the window's top contributing sources. Series that measure the same thing in
    a log source (every Zeek event is a connection) raise one alert, naming both.
    """

    def __init__(
        self,
        cfg: SecurityConfig,
        *,
        detector_factory: Callable[[], Detector[Any]] | None = None,
    ) -> None:
        vr = cfg.rules.volume
        self.rule = vr
        self.tumbling_s = cfg.tumbling_s
        self.lateness = cfg.allowed_lateness_s
        self.hold_s = _VOLUME_HOLD_WINDOWS * cfg.tumbling_s
        d = vr.detector
        self._factory = detector_factory or (lambda: make_detector(d))
        self._open: dict[float, dict[str, int]] = {}
        self._tops: dict[float, dict[str, int]] = {}
        self._next: float | None = None  # start of the first window not yet closed
        self._dets: dict[str, Detector[Any]] = {}
        self._episodes: dict[str, list[float]] = {}  # series -> start, v0, peak, peak_ts, last
        self.dataset = ""  # series are named "<dataset>.<series>"

    def snapshot(self) -> VolumeSnapshot:
        return VolumeSnapshot(
            tuple((b, tuple(c.items())) for b, c in self._open.items()),
            self._next,
            tuple((k, d.snapshot()) for k, d in self._dets.items()),
            tuple((k, *v) for k, v in sorted(self._episodes.items())),  # type: ignore[misc]
            self.dataset,
            tuple((b, tuple(c.items())) for b, c in self._tops.items()),
        )

    def restore(self, s: VolumeSnapshot) -> None:
        self._open = {b: dict(c) for b, c in s.open_buckets}
        self._next = s.next_bucket
        for k, st in s.detectors:
            det = self._factory()
            det.restore(st)
            self._dets[k] = det
        self._episodes = {a[0]: list(a[1:]) for a in s.active}
        self.dataset = s.dataset
        self._tops = {b: dict(c) for b, c in s.tops}

    def promise(self) -> float | None:
        """No detection from now on ends before this (the end of the first open window)."""
        return None if self._next is None else self._next + self.tumbling_s

    def add_sources(self, tops: dict[float, dict[str, int]]) -> None:
        """Count events per source address per window (for an anomaly's contributors)."""
        for b, c in tops.items():
            if self._next is not None and b < self._next:
                continue
            tgt = self._tops.setdefault(b, {})
            for k, v in c.items():
                tgt[k] = tgt.get(k, 0) + v
            if len(tgt) > 4 * _TOP_SOURCES:
                keep = sorted(tgt.items(), key=lambda kv: -kv[1])[:_TOP_SOURCES]
                self._tops[b] = dict(keep)

    def add(
        self, buckets: dict[float, dict[str, int]], dataset: str = ""
    ) -> list[SeriesPoint | Detection]:
        if dataset:
            self.dataset = dataset
        for b, counts in buckets.items():
            if self._next is not None and b < self._next:
                continue  # too late for its window: already closed (counted as late upstream)
            tgt = self._open.setdefault(b, {})
            for k, v in counts.items():
                tgt[k] = tgt.get(k, 0) + v
        if not self._open:
            return []
        newest = max(self._open)
        return self._close_until(newest - self.lateness)

    def flush(self) -> list[SeriesPoint | Detection]:
        if not self._open:
            return []
        return self._close_until(max(self._open) + self.tumbling_s)

    def _close_until(self, limit: float) -> list[SeriesPoint | Detection]:
        """Close, in order, every window that ends at or before ``limit``, empty ones too.

        Every window is scored and learned; only the newest point of each series is
        returned (gauges show the latest value), plus any detections.
        """
        out: list[SeriesPoint | Detection] = []
        latest: dict[str, tuple[float, float, Explanation]] = {}
        step = self.tumbling_s
        if self._next is None:
            self._next = min(self._open)
        upcoming = min(self._open) if self._open else math.inf
        while self._next + step <= limit:
            b = self._next
            counts = self._open.pop(b, None)
            if counts is not None:
                upcoming = min(self._open) if self._open else math.inf
            elif upcoming - b > _MAX_EMPTY_WINDOWS * step and upcoming != math.inf:
                # A jump in event time (clock error, a gap of weeks): do not score
                # thousands of empty windows; resume at the next window with data.
                self._next = upcoming
                continue
            self._score(b, counts or {}, self._tops.pop(b, {}), out, latest)
            self._next = b + step
        for b in [b for b in self._tops if b < self._next]:
            del self._tops[b]
        prefix = self.dataset
        for series, (end, x, e) in latest.items():
            name = f"{prefix}.{series}" if prefix else series
            out.append(SeriesPoint(FEED, name, end, x, e.expected, e.lower, e.upper, e.score))
        return out

    def _score(
        self,
        b: float,
        counts: dict[str, int],
        tops: dict[str, int],
        out: list[SeriesPoint | Detection],
        latest: dict[str, tuple[float, float, Explanation]],
    ) -> None:
        vr = self.rule
        end = b + self.tumbling_s
        hits: dict[tuple[float, float], list[tuple[str, float, Explanation]]] = {}
        series: str
        for series in vr.series:
            x = float(counts.get(series, 0))
            det = self._dets.get(series)
            if det is None:
                if not x:
                    # A series this log source has never produced (HTTP errors in an SSH
                    # log): no baseline, no gauge, until its first event.
                    continue
                det = self._dets[series] = self._factory()
            e = det.explain_one(x, end)
            det.learn_one(x, end)
            latest[series] = (end, x, e)
            if vr.enabled and e.score >= vr.threshold and max(x, e.expected) >= vr.min_count:
                # Identical series (same count, same baseline) are one finding.
                hits.setdefault((x, round(e.expected, 6)), []).append((series, x, e))
        for same in hits.values():
            series, x, e = same[0]
            self._detect(series, [s for s, _, _ in same[1:]], x, e, end, tops, out)

    def _detect(
        self,
        series: str,
        also: list[str],
        x: float,
        e: Explanation,
        end: float,
        tops: dict[str, int],
        out: list[SeriesPoint | Detection],
    ) -> None:
        vr = self.rule
        prefix = self.dataset
        ep = self._episodes.get(series)
        if ep is not None and end > ep[4] + self.hold_s:
            ep = None
        if ep is None:
            ep = self._episodes[series] = [end, x, x, end, end]
        else:
            ep[4] = end
            if abs(x - e.expected) > abs(ep[2] - e.expected):
                ep[2], ep[3] = x, end
        name = f"{prefix}.{series}" if prefix else series
        direction = "above" if x > e.expected else "below"
        same = f" (same as {', '.join(f'{prefix}.{a}' if prefix else a for a in also)})"
        top = sorted(tops.items(), key=lambda kv: (-kv[1], kv[0]))[:_EVIDENCE_TOP]
        out.append(
            Detection(
                kind="volume_anomaly",
                entity=name,
                severity=vr.severity,
                ts=end,
                observed=x,
                threshold=vr.threshold,
                window_s=self.tumbling_s,
                summary=f"{name} rate {direction} baseline",
                description=(
                    f"{_fmt_n(x)} {series} in {_fmt_n(self.tumbling_s)} s{same if also else ''}, "
                    f"expected {e.expected:.1f} (band {max(e.lower, 0):.1f} to {e.upper:.1f}); "
                    f"score {e.score:.1f} >= {_fmt_n(vr.threshold)}"
                ),
                expected=e.expected,
                lower=e.lower,
                upper=e.upper,
                start=ep[0],
                hold_s=self.hold_s,
                start_value=ep[1],
                peak=ep[2],
                peak_ts=ep[3],
                first_seen=ep[0] - self.tumbling_s,
                evidence=(("sources", tuple(top)),) if top else (),
                # The rules' clock: volume alerts are muted by attack alerts of their log
                # source (inhibition), which is only the same at any speed on one clock.
                clock=f"{FEED}/{prefix}" if prefix else FEED,
                log_source=prefix,
            )
        )


Buckets = dict[float, dict[str, int]]
Tops = dict[float, dict[str, int]]  # window start -> source address -> events


class VolumeLogic(
    StatefulBatchLogic[
        tuple[str, Buckets, Tops], "SeriesPoint | Detection | Watermark", VolumeSnapshot
    ]
):
    """The volume baseline of one dataset (each log source has its own rates and clock).

    After each batch it promises (:class:`~vigil.records.Watermark`) that its next
    detection ends no earlier than the first window not yet closed. It is a producer of
    the log source's clock like the rules' shards, so in a replay that clock waits for
    windows to close (``allowed_lateness_s``); a live clock follows the wall clock."""

    def __init__(self, vb: VolumeBaseline, producers: int = 0) -> None:
        self.vb = vb
        self.producers = producers

    def on_batch(
        self, values: list[tuple[str, Buckets, Tops]]
    ) -> tuple[list[SeriesPoint | Detection | Watermark], bool]:
        merged: dict[float, dict[str, int]] = {}
        dataset = values[0][0] if values else ""
        for _ds, bs, tops in values:
            for b, c in bs.items():
                tgt = merged.setdefault(b, {})
                for k, v in c.items():
                    tgt[k] = tgt.get(k, 0) + v
            self.vb.add_sources(tops)
        out: list[SeriesPoint | Detection | Watermark] = []
        out.extend(self.vb.add(merged, dataset))
        promise = self.vb.promise()
        if promise is not None:
            out.append(Watermark(f"{FEED}/{self.vb.dataset}", "volume", promise, self.producers))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[SeriesPoint | Detection | Watermark], bool]:
        return list(self.vb.flush()), StatefulBatchLogic.RETAIN

    def snapshot(self) -> VolumeSnapshot:
        return self.vb.snapshot()
