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
rejected alerts are counted when the configuration under test still raises them.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSink, run_main
from typing_extensions import override

# Re-exported: the CLI and tests name them here.
from vigil.flows.evaluation.indicator_grading import (  # noqa: F401
    Feedback,
    SeriesResult,
    Window,
    _group,
    _ratio,
    feedback_records,
    label_key,
    load_labels,
    nab_scores,
    plot_series,
    read_feedback,
    safe_name,
    summarize,
    write_csv,
)
from vigil.flows.indicators.config import CsvColumns, IndicatorInput, IndicatorsConfig
from vigil.flows.indicators.flow import IndicatorScore, indicators_dataflow, series_files

from vigil.extras import have
from vigil.records import DeadLetter, Detection, RawLine


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
    if not isinstance(tmpl, IndicatorInput):  # a bus input: keep its parsing settings
        tmpl = IndicatorInput(
            paths=("-",), columns=tmpl.columns, series_name=tmpl.series_name, tz=tmpl.tz
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
    if plots and out is not None and not have("matplotlib"):
        print(
            "backtest: plots off (matplotlib is missing: pip install 'vigil-ioc[plots]')",
            file=sys.stderr,
        )
        plots = False
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
