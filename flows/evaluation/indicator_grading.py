"""Labels, grading and per-series outputs of indicator backtests (``vigil backtest``).

Reading anomaly windows and responder feedback, grading each series' alerts against them
(precision, recall, NAB scores) and writing its CSV and plot. Its own module so
:mod:`vigil.flows.evaluation.indicators` keeps the replay and the command; re-exported there.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from vigil.flows.indicators.flow import IndicatorScore, parse_ts

from vigil.records import Detection

Window = tuple[float, float]


# ====================================================================== labels
def _epoch(v: Any, tz: ZoneInfo) -> float:
    return parse_ts(v, tz)


def load_labels(path: str | Path, tz: str = "UTC") -> dict[str, list[Window]]:
    """Anomaly windows per label key, as epoch seconds.

    Parameters
    ----------
    path
        NAB-style JSON ``{key: [[start, end], ...]}`` or CSV ``series,start,end``.
    tz
        Zone of timestamps written without one (NAB's are local wall times of each file,
        read as UTC, as NAB does).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "w.csv"
    >>> _ = p.write_text("series,start,end\\nbeds,2024-05-01 00:00:00,2024-05-01 06:00:00\\n")
    >>> load_labels(p)
    {'beds': [(1714521600.0, 1714543200.0)]}
    """
    zone = ZoneInfo(tz)
    p = Path(path)
    out: dict[str, list[Window]] = {}
    if p.suffix == ".json":
        raw = json.loads(p.read_text(encoding="utf-8"))
        for key, wins in raw.items():
            out[key] = [(_epoch(s, zone), _epoch(e, zone)) for s, e in wins]
        return out
    with p.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["series"], []).append(
                (_epoch(row["start"], zone), _epoch(row["end"], zone))
            )
    return out


@dataclass
class Feedback:
    """Responder feedback: confirmed incidents (windows) and rejected alerts (times)."""

    confirmed: dict[str, list[Window]] = field(default_factory=dict)
    rejected: dict[str, list[float]] = field(default_factory=dict)


def read_feedback(records: Iterable[Mapping[str, Any]], window_s: float, tz: str) -> Feedback:
    """Turn feedback records into windows and rejected alert times (see module docstring)."""
    zone = ZoneInfo(tz)
    fb = Feedback()
    for rec in records:
        series = str(rec.get("series") or rec.get("entity") or "")
        verdict = str(rec.get("verdict", "")).lower()
        if not series or verdict not in ("true_positive", "false_positive"):
            continue
        if "start" in rec and "end" in rec:
            start, end = _epoch(rec["start"], zone), _epoch(rec["end"], zone)
        elif "ts" in rec:
            t = _epoch(rec["ts"], zone)
            start, end = t - window_s, t + window_s
        else:
            continue
        if verdict == "true_positive":
            fb.confirmed.setdefault(series, []).append((start, end))
        else:
            fb.rejected.setdefault(series, []).append((start + end) / 2)
    return fb


def feedback_records(path: str | Path | None) -> list[dict[str, Any]]:
    """Records from ``path`` (JSON lines)."""
    recs: list[dict[str, Any]] = []
    if path is not None:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                recs.append(json.loads(line))
    return recs


def label_key(series: str, keys: Iterable[str]) -> str | None:
    """The label key that names ``series`` (see the module docstring), or ``None``.

    Examples
    --------
    >>> label_key("nyc_taxi", ["realKnownCause/nyc_taxi.csv", "a.csv"])
    'realKnownCause/nyc_taxi.csv'
    >>> label_key("taxi", ["realKnownCause/nyc_taxi.csv"]) is None
    True
    """
    for k in keys:
        base = re.sub(r"\.(csv|jsonl)$", "", k)
        if base == series or base.endswith("/" + series) or series.endswith("/" + base):
            return k
    return None


# ====================================================================== grading
@dataclass
class SeriesResult:
    """Every point of one series, as arrays in time order, with its labels and alerts."""

    name: str
    ts: np.ndarray
    value: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    alert: np.ndarray
    rule: int
    windows: list[Window] = field(default_factory=list)
    labelled: bool = False
    rejected: list[float] = field(default_factory=list)

    def in_window(self) -> np.ndarray:
        inside = np.zeros(len(self.ts), dtype=bool)
        for s, e in self.windows:
            inside |= (self.ts >= s) & (self.ts <= e)
        return inside

    def grade(self) -> dict[str, Any]:
        alert_ts = self.ts[self.alert]
        hit = [any(s <= t <= e for s, e in self.windows) for t in alert_ts.tolist()]
        detected = sum(any(s <= t <= e for t in alert_ts.tolist()) for s, e in self.windows)
        still_rejected = sum(
            any(abs(t - r) <= 0.5 for t in alert_ts.tolist()) for r in self.rejected
        )
        return {
            "series": self.name,
            "points": len(self.ts),
            "flagged": int(self.flagged.sum()),
            "alerts": int(self.alert.sum()),
            "labelled": self.labelled,
            "windows": len(self.windows),
            "windows_detected": int(detected),
            "alerts_in_windows": int(sum(hit)),
            "rejected_alerts_still_raised": int(still_rejected),
        }


def _group(scores: Sequence[IndicatorScore], dets: Sequence[Detection]) -> dict[str, SeriesResult]:
    by: dict[str, list[IndicatorScore]] = {}
    for s in scores:
        by.setdefault(s.point.series, []).append(s)
    alerts: dict[str, set[float]] = {}
    for d in dets:
        alerts.setdefault(d.entity, set()).add(d.ts)
    out = {}
    for name, rows in by.items():
        rows.sort(key=lambda r: r.point.ts)
        a = alerts.get(name, set())
        p = [r.point for r in rows]
        out[name] = SeriesResult(
            name=name,
            ts=np.array([x.ts for x in p]),
            value=np.array([x.value for x in p]),
            expected=np.array([x.expected for x in p]),
            lower=np.array([x.lower for x in p]),
            upper=np.array([x.upper for x in p]),
            score=np.array([x.score for x in p]),
            flagged=np.array([r.flagged for r in rows], dtype=bool),
            alert=np.array([x.ts in a for x in p], dtype=bool),
            rule=rows[-1].rule,
        )
    return out


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def nab_scores(results: Mapping[str, SeriesResult], keys: Mapping[str, str]) -> dict[str, Any]:
    """NAB scores of the alerts (an alert is a detection), for every NAB profile.

    ``keys`` maps series to their key in the NAB windows file. Uses
    :mod:`vigil.flows.evaluation.nab`.
    """
    from vigil.flows.evaluation import nab

    res = {}
    wins = {}
    for name, key in keys.items():
        r = results[name]
        res[key] = (r.ts, r.alert.astype(np.float64))
        wins[key] = r.windows
    out: dict[str, Any] = {}
    for prof in nab.PROFILES:
        sc = nab.score_corpus(res, wins, prof, threshold=0.5)
        out[prof] = round(sc.score, 2)
    return out


def summarize(
    results: Mapping[str, SeriesResult], *, nab_keys: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Totals over every series, and over the labelled ones: precision, recall, NAB."""
    rows = [r.grade() for r in results.values()]
    lab = [g for g in rows if g["labelled"]]
    alerts_l = sum(g["alerts"] for g in lab)
    out: dict[str, Any] = {
        "series": len(rows),
        "points": sum(g["points"] for g in rows),
        "alerts": sum(g["alerts"] for g in rows),
        "flagged_points": sum(g["flagged"] for g in rows),
        "labelled_series": len(lab),
        "windows": sum(g["windows"] for g in lab),
        "windows_detected": sum(g["windows_detected"] for g in lab),
        "alerts_in_windows": sum(g["alerts_in_windows"] for g in lab),
        "precision": _ratio(sum(g["alerts_in_windows"] for g in lab), alerts_l),
        "recall": _ratio(sum(g["windows_detected"] for g in lab), sum(g["windows"] for g in lab)),
        "rejected_alerts_still_raised": sum(g["rejected_alerts_still_raised"] for g in rows),
        "per_series": rows,
    }
    if nab_keys:
        try:
            out["nab"] = nab_scores(results, nab_keys)
        except (ValueError, ImportError) as ex:  # windows not on row times; no scorer
            out["nab"] = {"error": str(ex)}
    return out


# ====================================================================== outputs
def safe_name(series: str) -> str:
    """A file name for a series.

    >>> safe_name("realKnownCause/nyc taxi")
    'realKnownCause__nyc_taxi'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", series.replace("/", "__"))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def write_csv(r: SeriesResult, path: Path) -> None:
    """Every point of ``r``: time, value, expected, band, score, flagged, alert, labelled."""
    inside = r.in_window()
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["timestamp", "ts", "value", "expected", "lower", "upper", "score", "flagged",
             "alert", "in_window"]
        )  # fmt: skip
        for i in range(len(r.ts)):
            w.writerow(
                [
                    _iso(float(r.ts[i])),
                    repr(float(r.ts[i])),
                    repr(float(r.value[i])),
                    repr(float(r.expected[i])),
                    repr(float(r.lower[i])),
                    repr(float(r.upper[i])),
                    f"{float(r.score[i]):.6g}",
                    int(r.flagged[i]),
                    int(r.alert[i]),
                    int(inside[i]),
                ]
            )


def plot_series(r: SeriesResult, path: Path, *, title: str, threshold: float) -> None:
    """A PNG a person can read: value and expected band, flags, alerts, labelled windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    t = np.array([datetime.fromtimestamp(x, UTC) for x in r.ts.tolist()])
    fig, (ax, axs) = plt.subplots(
        2, 1, figsize=(13, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    lo = np.where(np.isfinite(r.lower), r.lower, np.nan)
    hi = np.where(np.isfinite(r.upper), r.upper, np.nan)
    # Keep the value readable: a band far wider than the data must not squash it.
    vmin, vmax = float(np.nanmin(r.value)), float(np.nanmax(r.value))
    pad = 0.15 * (vmax - vmin or abs(vmax) or 1.0)
    ylo, yhi = vmin - pad, vmax + pad
    for k, (s, e) in enumerate(r.windows):
        ax.axvspan(
            datetime.fromtimestamp(s, UTC),
            datetime.fromtimestamp(e, UTC),
            color="tab:green",
            alpha=0.15,
            lw=0,
            label="labelled anomaly window" if k == 0 else None,
        )
    ax.fill_between(t, lo, hi, color="tab:blue", alpha=0.15, lw=0, label="expected band")
    ax.plot(t, r.value, color="0.25", lw=0.7, label="value")
    ax.plot(t, r.expected, color="tab:blue", lw=1.1, ls="--", zorder=3, label="expected")
    f = r.flagged & ~r.alert
    if f.any():
        ax.scatter(t[f], r.value[f], s=10, color="tab:orange", zorder=3, label="flagged")
    if r.alert.any():
        ax.scatter(
            t[r.alert], r.value[r.alert], s=60, marker="v", color="tab:red", zorder=4,
            edgecolor="black", linewidth=0.5, label=f"alert ({int(r.alert.sum())})",
        )  # fmt: skip
    ax.set_ylim(ylo, yhi)
    ax.set_ylabel("value")
    ax.set_title(title, fontsize=11, loc="left")
    ax.legend(loc="upper left", fontsize=8, ncol=3, framealpha=0.85)
    ax.grid(alpha=0.3)

    for s, e in r.windows:
        axs.axvspan(
            datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC),
            color="tab:green", alpha=0.15, lw=0,
        )  # fmt: skip
    axs.plot(t, r.score, color="tab:purple", lw=0.7, label="score")
    axs.axhline(threshold, color="tab:red", lw=0.8, ls=":", label=f"threshold {threshold:g}")
    top = float(np.nanmax(r.score)) if len(r.score) else 1.0
    axs.set_ylim(0, max(threshold * 1.5, min(top, threshold * 4)) or 1.0)
    axs.set_ylabel("score")
    axs.set_xlabel("time (UTC)")
    axs.legend(loc="upper left", fontsize=8, ncol=2, framealpha=0.85)
    axs.grid(alpha=0.3)
    loc = mdates.AutoDateLocator()
    axs.xaxis.set_major_locator(loc)
    axs.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
