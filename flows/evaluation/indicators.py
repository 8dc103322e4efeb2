"""Backtests: replay recorded indicator series through the live indicator flow and grade it.

``vigil backtest --config FILE --data FILE_OR_DIR [--labels FILE] [--out DIR]`` builds the
*same* dataflow as ``vigil run indicators``
(:func:`vigil.flows.indicators.flow.indicators_dataflow`,
same configuration section, same detectors, same re-alert rule), with the data files as
its inputs and in-memory sinks, and asks it for every scored point instead of the newest
one per series. Nothing about detection is re-implemented here: this module only reads
labels, counts, writes CSV and draws.

Outputs, per series: ``<out>/<series>.csv`` (every point with its expected value, band,
score, whether it was flagged and whether an alert was raised) and ``<out>/<series>.png``;
for the run: ``<out>/summary.json`` and a summary on stdout (alerts, precision and recall
against the labels, NAB scores when the labels are NAB windows).

Labels are anomaly windows, either NAB's ``combined_windows.json`` (``{file: [[start,
end], ...]}``) or a CSV with columns ``series,start,end``. A label key matches a series
when, without its extension, it equals the series name or ends with ``/<series>``
(``realKnownCause/nyc_taxi.csv`` matches the series ``nyc_taxi``).

Responder feedback (``--feedback FILE``, JSON lines) adds labels: ``{"series": ...,
"verdict": "true_positive" | "false_positive", "ts": ...}`` or with ``"start"``/``"end"``
instead of ``"ts"``. Confirmed incidents become windows (``ts`` +- ``feedback_window_s``);
rejected alerts are counted when the configuration under test still raises them. If the
alerting pipeline's feedback store exists (a module ``vigil.flows.feedback`` with
``load_feedback() -> Iterable[dict]`` in this format), its records are read too.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import importlib
import importlib.util
import json
import math
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSink, run_main
from typing_extensions import override
from vigil.flows.indicators.config import CsvColumns, IndicatorInput, IndicatorsConfig
from vigil.flows.indicators.flow import IndicatorScore, indicators_dataflow, parse_ts, series_files

from vigil.records import DeadLetter, Detection, RawLine

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
    """Records from ``path`` (JSON lines) and from the feedback store, if there is one."""
    recs: list[dict[str, Any]] = []
    if path is not None:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                recs.append(json.loads(line))
    if importlib.util.find_spec("vigil.flows.feedback") is not None:
        store = importlib.import_module("vigil.flows.feedback")
        if hasattr(store, "load_feedback"):
            recs.extend(dict(r) for r in store.load_feedback())
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


# ====================================================================== running
def inputs_for(cfg: IndicatorsConfig, files: Sequence[Path]) -> list[IndicatorInput]:
    """One input per file: the configured input's parsing settings, adapted to the file.

    Without a configured input, CSV columns default to ``timestamp``/``value`` and
    timestamps without a zone are read as UTC. A CSV file without the series column is
    one series named after the file.
    """
    tmpl = (
        cfg.inputs[0]
        if cfg.inputs
        else IndicatorInput(paths=("-",), columns=CsvColumns(ts="timestamp"), tz="UTC")
    )
    out = []
    for f in files:
        fmt = "csv" if f.suffix == ".csv" else "jsonl"
        cols = tmpl.columns
        if fmt == "csv":
            with f.open(encoding="utf-8") as fh:
                header = next(csv.reader([fh.readline()]), [])
            upd: dict[str, Any] = {}
            if cols.series is not None and cols.series not in header:
                upd["series"] = None
            if cols.ts not in header and "timestamp" in header:
                upd["ts"] = "timestamp"
            cols = cols.model_copy(update=upd)
            if cols.value not in header:
                continue  # not indicator data (e.g. a detector's results file)
        out.append(
            tmpl.model_copy(
                update={"paths": (str(f),), "format": fmt, "columns": cols, "follow": False}
            )
        )
    return out


class _Collect(DynamicSink[Any]):
    """Collects items; draws a progress bar on ``bar`` (a terminal) as points arrive."""

    def __init__(self, items: list[Any], total: int, bar: TextIO | None) -> None:
        self.items = items
        self.total = max(total, 1)
        self.bar = bar
        self._t0 = time.monotonic()
        self._last = 0.0

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CollectPart:
        return _CollectPart(self)

    def show(self, final: bool = False) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        if not final and now - self._last < 0.2:
            return
        self._last = now
        n = len(self.items)
        frac = min(n / self.total, 1.0)
        rate = n / max(now - self._t0, 1e-9)
        filled = int(30 * frac)
        print(
            f"\r  [{'#' * filled}{'.' * (30 - filled)}] {100 * frac:5.1f}%  "
            f"{n:,}/{self.total:,} points  {rate:,.0f} points/s",
            end="\n" if final else "",
            file=self.bar,
            flush=True,
        )


class _CollectPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: _Collect) -> None:
        self.owner = owner

    @override
    def write_batch(self, items: list[Any]) -> None:
        self.owner.items.extend(items)
        self.owner.show()


def _count_lines(files: Sequence[Path]) -> int:
    n = 0
    for f in files:
        with f.open("rb") as fh:
            n += sum(chunk.count(b"\n") for chunk in iter(functools.partial(fh.read, 1 << 20), b""))
    return n


def replay(
    cfg: IndicatorsConfig, inputs: Sequence[IndicatorInput], *, bar: TextIO | None = None
) -> tuple[list[IndicatorScore], list[Detection], list[DeadLetter]]:
    """Run the indicator dataflow over ``inputs``: every scored point, alert, dead letter.

    Parameters
    ----------
    cfg
        The indicator settings under test.
    inputs
        The files to replay, each with its parsing settings (see :func:`inputs_for`).
    bar
        Stream for a progress bar, or ``None``.
    """
    from vigil.sources.files import FileTailSource

    files = [Path(p) for inp in inputs for p in inp.paths]
    sources = [(FileTailSource(list(inp.paths), inp.format), inp) for inp in inputs]
    flow = Dataflow("backtest")
    s = indicators_dataflow(flow, cfg, sources, every_point=True)
    scores: list[IndicatorScore] = []
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    collect = _Collect(scores, _count_lines(files), bar)
    op.output("backtest_scores", s.scores, collect)
    op.output("backtest_alerts", s.detections, TestingSink(dets))
    op.output("backtest_dead", s.dead, TestingSink(dead))
    run_main(flow)
    collect.show(final=True)
    return scores, dets, dead


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


# ====================================================================== the command
def run_backtest(
    cfg: IndicatorsConfig,
    data: Sequence[str | Path],
    *,
    labels: str | Path | None = None,
    feedback: str | Path | None = None,
    out: str | Path | None = "backtest-out",
    series: str | None = None,
    plots: bool = True,
    bar: TextIO | None = None,
) -> dict[str, Any]:
    """Replay ``data`` through the indicator flow configured by ``cfg`` and grade it.

    Parameters
    ----------
    cfg
        The ``indicators`` configuration section under test (its rules and default; its
        first input, if any, says how to read the files).
    data
        Files or folders (searched recursively for ``*.csv`` and ``*.jsonl``).
    labels
        Anomaly windows (NAB JSON or ``series,start,end`` CSV).
    feedback
        Responder feedback, JSON lines (see the module docstring).
    out
        Folder for the per-series CSV and PNG files and ``summary.json``; ``None``: none.
    series
        Only series whose name matches this glob.
    plots
        Draw the PNGs.
    bar
        Stream for a progress bar (a terminal), or ``None``.

    Returns
    -------
    dict
        The summary (also written to ``summary.json``).
    """
    files = series_files(data)
    inputs = inputs_for(cfg, files)
    if not inputs:
        msg = f"no indicator data (.csv or .jsonl files) in {list(map(str, data))}"
        raise FileNotFoundError(msg)
    skipped = len(files) - len(inputs)  # files without a value column
    tz = (cfg.inputs[0].tz if cfg.inputs else None) or "UTC"
    if series is not None:
        # Files holding one series named after the file can be skipped before the replay.
        from vigil.flows.indicators.flow import _file_series_name

        inputs = [
            inp
            for inp in inputs
            if inp.columns.series is not None
            or fnmatch.fnmatchcase(_file_series_name(inp.series_name, inp.paths[0]), series)
        ]
    # Files of different eras replay side by side, and idle expiry compares a series' last
    # time with the newest time in its shard: it would forget series that are not idle.
    cfg = cfg.model_copy(update={"idle_ttl_s": math.inf})
    scores, dets, dead = replay(cfg, inputs, bar=bar)
    results = _group(scores, dets)
    if series is not None:
        results = {k: v for k, v in results.items() if fnmatch.fnmatchcase(k, series)}

    nab_keys: dict[str, str] = {}
    if labels is not None:
        wins = load_labels(labels, tz)
        for name, r in results.items():
            key = label_key(name, wins)
            if key is not None:
                r.windows = list(wins[key])
                r.labelled = True
                nab_keys[name] = key
        if Path(labels).suffix != ".json":
            nab_keys = {}
    fb_recs = feedback_records(feedback)
    if fb_recs:
        fb = read_feedback(fb_recs, max(cfg.realert_s, 1.0), tz)
        for key, ws in fb.confirmed.items():
            for name, r in results.items():
                if label_key(name, [key]) is not None:
                    r.windows += ws
                    r.labelled = True
        for key, ts in fb.rejected.items():
            for name, r in results.items():
                if label_key(name, [key]) is not None:
                    r.rejected += ts
                    r.labelled = True

    summary = summarize(results, nab_keys=nab_keys)
    summary["files"] = len(inputs)
    summary["files_skipped"] = skipped
    summary["dead_letters"] = len(dead)
    summary["dead_letter_reasons"] = sorted({d.reason for d in dead})
    rules = (*cfg.rules, cfg.default)
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, r in results.items():
            write_csv(r, out_dir / f"{safe_name(name)}.csv")
            if plots and len(r.ts):
                rule = rules[r.rule]
                g = r.grade()
                pr = ""
                if r.labelled:
                    prec = _ratio(g["alerts_in_windows"], g["alerts"])
                    pr = (
                        f"  |  windows detected {g['windows_detected']}/{g['windows']}, "
                        f"alerts in windows {g['alerts_in_windows']}/{g['alerts']}"
                        + (f" (precision {prec:.2f})" if prec is not None else "")
                    )
                title = (
                    f"{name}  -  {rule.detector.kind}, threshold {rule.threshold:g}, "
                    f"direction {rule.direction}{pr}"
                )
                plot_series(r, out_dir / f"{safe_name(name)}.png", title=title,
                            threshold=rule.threshold)  # fmt: skip
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def print_summary(summary: Mapping[str, Any], stream: TextIO = sys.stdout) -> None:
    """A table per series, then the totals."""
    rows = summary["per_series"]
    w = max([len(r["series"]) for r in rows] + [6])
    print(
        f"{'series':{w}}  {'points':>7}  {'alerts':>6}  {'windows':>7}  {'detected':>8}  "
        f"{'in window':>9}",
        file=stream,
    )
    for r in sorted(rows, key=lambda r: r["series"]):
        win = (
            f"{r['windows']:>7}  {r['windows_detected']:>8}"
            if r["labelled"]
            else f"{'-':>7}  {'-':>8}"
        )
        inw = f"{r['alerts_in_windows']:>9}" if r["labelled"] else f"{'-':>9}"
        print(f"{r['series']:{w}}  {r['points']:>7}  {r['alerts']:>6}  {win}  {inw}", file=stream)

    def pct(x: float | None) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"

    print(
        f"\n{summary['series']} series, {summary['points']:,} points, "
        f"{summary['alerts']} alerts raised ({summary['flagged_points']} points flagged), "
        f"{summary['dead_letters']} dead letters",
        file=stream,
    )
    if summary["labelled_series"]:
        print(
            f"against labels ({summary['labelled_series']} series, {summary['windows']} "
            f"windows): precision {pct(summary['precision'])} "
            f"({summary['alerts_in_windows']} alerts in windows), "
            f"recall {pct(summary['recall'])} ({summary['windows_detected']} windows detected)",
            file=stream,
        )
    if summary.get("rejected_alerts_still_raised"):
        print(
            f"responder-rejected alerts still raised: {summary['rejected_alerts_still_raised']}",
            file=stream,
        )
    nab = summary.get("nab")
    if nab:
        if "error" in nab:
            print(f"NAB scores: not computed ({nab['error']})", file=stream)
        else:
            print(
                "NAB scores of the alerts: " + ", ".join(f"{k} {v:.1f}" for k, v in nab.items()),
                file=stream,
            )


def raw_lines_of(path: Path, fmt: str) -> list[RawLine]:
    """The lines of a file as the flow's sources read them (for tests and notebooks)."""
    return [RawLine(fmt, str(path), t) for t in path.read_text(encoding="utf-8").splitlines()]
