"""Run one detector configuration over NAB's development files and score it the NAB way.

Usage::

    python bench/nab.py --detector ensemble            # writes results/nab/ensemble/...
    python bench/nab.py --detector resonance --out /tmp/res --jobs 1
    python bench/nab.py --check-reference              # scores the shipped reference outputs

Reporting rules (NAB's): one configuration for every file; each file is run on its own,
from a fresh detector, in file order, scoring each row before learning it; the first
``min(floor(0.15 n), 750)`` rows are the probationary period, whose scores are written
as 0. Like NAB's own detectors, a detector may be told each file's value range
(``input_min``/``input_max``, the data's minimum and maximum) and its probationary
period; nothing else about the file. Results are written in NAB's format,
``<out>/<category>/<name>_<file>.csv`` with ``timestamp,anomaly_score``, and scored with
:mod:`vigil.flows.evaluation.nab` (threshold optimised per profile over the corpus). The last line
printed is a JSON object with the three profile scores and the throughput.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from vigil.detectors import nab  # noqa: E402
from vigil.detectors.base import Detector  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "nab"

# A factory gets what NAB lets a detector know about a file: its value range and its
# probationary period.
Factory = Callable[[float, float, int], Detector[Any]]


def _resonance(lo: float, hi: float, prob: int) -> Detector[Any]:
    from vigil.detectors.resonance import AdaptiveResonance

    return AdaptiveResonance(input_min=lo, input_max=hi, probationary_period=prob)


def _ensemble(lo: float, hi: float, prob: int) -> Detector[Any]:
    from vigil.detectors.ensemble import ResonanceEnsemble

    return ResonanceEnsemble(input_min=lo, input_max=hi, probationary_period=prob)


def _knn_cad(lo: float, hi: float, prob: int) -> Detector[Any]:
    from vigil.detectors.knn_cad import KNNCAD

    return KNNCAD(probationary_period=prob)


def _contextual(lo: float, hi: float, prob: int) -> Detector[Any]:
    from vigil.detectors.contextual import ContextualAnomaly

    return ContextualAnomaly(input_min=lo, input_max=hi, probationary_period=prob)


def _contextual_likelihood(lo: float, hi: float, prob: int) -> Detector[Any]:
    from vigil.detectors.contextual import ContextualAnomaly
    from vigil.detectors.likelihood import AnomalyLikelihood

    # Raw contextual scores (no rest period), post-processed as Numenta's NAB detector
    # does: learning period half the probation, log-scaled likelihood.
    inner = ContextualAnomaly(
        input_min=lo, input_max=hi, probationary_period=prob, base_threshold=2.0
    )
    return AnomalyLikelihood(
        inner, learning_period=prob // 2, estimation_samples=prob - prob // 2, log_scale=True
    )


class _Squashed:
    """A z-score detector mapped into [0, 1] (1 - exp(-z / scale)): the speed and quality
    baseline every run is compared with."""

    def __init__(self, det: Any, scale: float = 4.0) -> None:
        self.det, self.scale = det, scale

    def score_one(self, x: float) -> float:
        return 1.0 - math.exp(-self.det.score_one(x) / self.scale)

    def learn_one(self, x: float) -> None:
        self.det.learn_one(x)


def _ewma(lo: float, hi: float, prob: int) -> Detector[Any]:
    from vigil.detectors.ewma import EWMAZScore

    return _Squashed(EWMAZScore(alpha=0.05, grace_period=min(prob, 100)))  # type: ignore[return-value]


BASELINE = "ewma"

DETECTORS: dict[str, Factory] = {
    "ewma": _ewma,
    "contextual": _contextual,
    "contextual_likelihood": _contextual_likelihood,
    "ensemble": _ensemble,
    "resonance": _resonance,
    "knn_cad": _knn_cad,
}


def _read_data(path: Path) -> tuple[list[str], list[float]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [(r[0], float(r[1])) for r in reader]
    return [r[0] for r in rows], [r[1] for r in rows]


def run_file(args: tuple[str, str, Path, Path]) -> tuple[str, list[float], float]:
    """Run the named detector on one data file; write and return its scores."""
    detector, rel, data_dir, out_dir = args
    stamps, values = _read_data(data_dir / rel)
    n = len(values)
    prob = int(nab.probationary_length(n))
    det = DETECTORS[detector](min(values), max(values), prob)
    scores = []
    t0 = time.process_time()
    for i, x in enumerate(values):
        s = det.score_one(x)
        det.learn_one(x)
        if not (0.0 <= s <= 1.0) or math.isnan(s):
            msg = f"{detector} on {rel} row {i}: score {s!r} outside [0, 1]"
            raise ValueError(msg)
        scores.append(s if i >= prob else 0.0)
    elapsed = time.process_time() - t0
    cat, fname = rel.split("/")
    path = out_dir / cat / f"{detector}_{fname}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "anomaly_score"])
        w.writerows(zip(stamps, scores, strict=True))
    return rel, scores, elapsed


def _score(results: dict[str, Any], windows: dict[str, Any]) -> dict[str, float]:
    out = {}
    for profile in nab.PROFILES:
        res = nab.score_corpus(results, windows, profile)
        out[profile] = round(res.score, 3)
        print(
            f"  {profile:<20} {res.score:7.2f}  threshold={res.threshold:.6g}  "
            f"windows {res.detected}/{res.detected + res.missed}  FP rows {res.false_positives}"
        )
    return out


def check_reference(data_dir: Path) -> dict[str, dict[str, float]]:
    """Score the reference detectors shipped with the dataset."""
    files = (data_dir / "dev_files.txt").read_text().split()
    windows = nab.load_windows(data_dir / "dev_combined_windows.json")
    report = {}
    for name in ("numenta", "windowedGaussian"):
        print(name)
        results = nab.load_corpus_results(data_dir / "reference_results" / name, name, files)
        report[name] = _score(results, windows)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", default="ensemble", choices=sorted(DETECTORS))
    ap.add_argument("--out", type=Path, default=None, help="default: results/nab/<name>")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--check-reference", action="store_true")
    args = ap.parse_args(argv)

    if args.check_reference:
        report = check_reference(args.data)
        print(json.dumps(report))
        return 0

    out = args.out or Path("results") / "nab" / args.detector
    files = (args.data / "dev_files.txt").read_text().split()
    windows = nab.load_windows(args.data / "dev_combined_windows.json")
    measured = {}
    for name in dict.fromkeys([args.detector, BASELINE]):
        measured[name] = _run(name, files, windows, args, out if name == args.detector else None)
    main_pps = measured[args.detector]["points_per_s"]
    base_pps = measured[BASELINE]["points_per_s"]
    ratio = main_pps / base_pps if base_pps else math.nan
    print(
        f"speed against the {BASELINE} baseline measured in the same run: {ratio:.3f} "
        f"({main_pps:,.0f} vs {base_pps:,.0f} points/s per core); baseline standard score "
        f"{measured[BASELINE]['standard']:.2f}"
    )
    print(
        json.dumps(
            {
                "detector": args.detector,
                **{k: v for k, v in measured[args.detector].items()},
                "baseline": BASELINE,
                "baseline_standard": measured[BASELINE]["standard"],
                "baseline_points_per_s": base_pps,
                "speed_ratio": round(ratio, 4),
            }
        )
    )
    return 0


def _run(
    name: str, files: list[str], windows: Any, args: argparse.Namespace, out: Path | None
) -> dict[str, float]:
    """Run one detector over every file (in parallel), score it, print its figures."""
    out_dir = out or Path(tempfile.mkdtemp(prefix=f"nab-{name}-"))
    jobs = [(name, rel, args.data, out_dir) for rel in files]
    # Longest files first, so two workers finish together.
    jobs.sort(key=lambda j: -(args.data / j[1]).stat().st_size)
    t0 = time.perf_counter()
    if args.jobs > 1:
        with Pool(args.jobs) as pool:
            done = pool.map(run_file, jobs, chunksize=1)
    else:
        done = [run_file(j) for j in jobs]
    wall = time.perf_counter() - t0
    stamps = {rel: nab.load_series(args.data / rel)[0] for rel in files}
    results = {rel: (stamps[rel], np.asarray(s)) for rel, s, _ in done}
    points = sum(len(s) for _, s, _ in done)
    cpu = sum(e for _, _, e in done)
    print(f"{name}: {len(files)} files, {points} points, results in {out_dir}")
    scores = _score(results, windows)
    pps = points / cpu if cpu > 0 else math.inf
    print(f"  throughput {pps:,.0f} points/s per core ({wall:.1f} s wall, {args.jobs} jobs)")
    if out is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {**scores, "points_per_s": round(pps)}


if __name__ == "__main__":
    raise SystemExit(main())
