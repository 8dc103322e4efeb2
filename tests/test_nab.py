"""The NAB scorer: reproduces NAB's published scores and hand-computed cases."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

import numpy as np
import pytest
from vigil.flows.evaluation import nab

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"

# The dataset README's scores for the shipped reference results, from NAB's own scorer.
REFERENCE = {
    "numenta": {"standard": 72.4, "reward_low_FP_rate": 65.7, "reward_low_FN_rate": 76.7},
    "windowedGaussian": {
        "standard": 47.1,
        "reward_low_FP_rate": 32.7,
        "reward_low_FN_rate": 54.3,
    },
}


@pytest.fixture(scope="module")
def dev() -> tuple[list[str], dict[str, list[tuple[np.datetime64, np.datetime64]]]]:
    if not (DATA / "dev_files.txt").exists():
        pytest.skip("NAB dev data not available")
    files = (DATA / "dev_files.txt").read_text().split()
    return files, nab.load_windows(DATA / "dev_combined_windows.json")


@pytest.mark.parametrize("detector", sorted(REFERENCE))
def test_reproduces_reference_scores(detector: str, dev) -> None:
    files, windows = dev
    results = nab.load_corpus_results(DATA / "reference_results" / detector, detector, files)
    for profile, expected in REFERENCE[detector].items():
        got = nab.score_corpus(results, windows, profile)
        assert abs(got.score - expected) < 0.1, (detector, profile, got.score)
        # The optimiser's corpus total equals the per-file scoring at its threshold.
        thr, raw = nab.optimize_threshold(results, windows, profile)
        assert thr == got.threshold
        assert raw == pytest.approx(got.raw, abs=1e-9)


# --------------------------------------------------------------------------- hand cases

N = 200  # rows; probation is the first 30
TS = [float(60 * i) for i in range(N)]
WINDOW = (TS[100], TS[119])  # 20 rows


def one_file(hits: dict[int, float]) -> dict[str, list[tuple[float, float]]]:
    return {"f": [(t, hits.get(i, 0.0)) for i, t in enumerate(TS)]}


def test_detection_at_window_start_earns_a_tp() -> None:
    res = nab.score_corpus(one_file({100: 1.0}), {"f": [WINDOW]}, "standard", threshold=0.5)
    assert res.raw == pytest.approx(1.0)
    assert res.score == pytest.approx(100.0)
    assert (res.detected, res.missed, res.false_positives) == (1, 0, 0)


def test_later_detection_earns_less_and_only_the_first_counts() -> None:
    mid = nab.score_corpus(one_file({110: 1.0}), {"f": [WINDOW]}, threshold=0.5).raw
    # Relative position of row 110: -(119 - 110 + 1) / 20 = -0.5.
    assert mid == pytest.approx(nab.scaled_sigmoid(-0.5) / nab.scaled_sigmoid(-1.0))
    both = nab.score_corpus(one_file({110: 1.0, 115: 1.0}), {"f": [WINDOW]}, threshold=0.5)
    assert both.raw == pytest.approx(mid)


def test_detection_far_outside_costs_a_fp() -> None:
    for profile in nab.PROFILES.values():
        res = nab.score_corpus(one_file({50: 1.0}), {"f": []}, profile, threshold=0.5)
        assert res.raw == pytest.approx(-profile.a_fp)
        assert res.false_positives == 1


def test_false_positive_just_after_a_window_costs_less() -> None:
    hits = {100: 1.0, 121: 1.0}
    res = nab.score_corpus(one_file(hits), {"f": [WINDOW]}, "standard", threshold=0.5)
    # Row 121 is 2 rows past the right edge (row 119): position 2 / (20 - 1).
    cost = nab.scaled_sigmoid(2 / 19) * 0.11
    assert -0.11 < cost < 0.0
    assert res.raw == pytest.approx(1.0 + cost)


def test_no_detection_costs_a_fn_per_window() -> None:
    windows = {"f": [WINDOW, (TS[150], TS[159])]}
    for profile in nab.PROFILES.values():
        res = nab.score_corpus(one_file({}), windows, profile, threshold=0.5)
        assert res.raw == pytest.approx(-2 * profile.a_fn)
        assert res.score == pytest.approx(0.0)
        assert res.missed == 2


def test_probationary_rows_are_not_scored() -> None:
    res = nab.score_corpus(one_file({10: 1.0}), {"f": []}, threshold=0.5)
    assert res.raw == 0.0
    assert nab.probationary_length(N) == 30


def test_optimiser_prefers_the_highest_of_equal_thresholds() -> None:
    thr, raw = nab.optimize_threshold(one_file({100: 0.9, 101: 0.8}), {"f": [WINDOW]})
    assert (thr, raw) == (0.9, pytest.approx(1.0))
    # Nothing worth detecting: the optimiser keeps NAB's "never" threshold of 1.1.
    assert nab.optimize_threshold(one_file({50: 0.9}), {"f": []}) == (1.1, 0.0)


def test_timestamp_kinds_agree() -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    aware = [start + dt.timedelta(minutes=i) for i in range(N)]
    text = [t.strftime("%Y-%m-%d %H:%M:%S") for t in aware]
    epoch = [t.timestamp() for t in aware]
    scores = [1.0 if i == 105 else 0.0 for i in range(N)]
    raws = set()
    for stamps in (aware, text, epoch):
        res = nab.score_corpus(
            {"f": list(zip(stamps, scores, strict=True))},
            {"f": [(stamps[100], stamps[119])]},
            threshold=0.5,
        )
        raws.add(round(res.raw, 12))
    assert len(raws) == 1


def test_window_end_must_be_a_row() -> None:
    with pytest.raises(ValueError, match="window end"):
        nab.score_corpus(one_file({}), {"f": [(TS[100], 1e12)]}, threshold=0.5)


# --------------------------------------------------------------------------- oracle


def _reference_sweep(files, profile):  # type: ignore[no-untyped-def]
    """A literal, row-by-row rendering of NAB's sweep (calcSweepScore +
    calcScoreByThreshold) to check the vectorised one against."""
    rows = []
    max_tp = nab.scaled_sigmoid(-1.0)
    for name, ts, scores, wins in files:
        wins = list(wins)
        prob = nab.probationary_length(len(ts))
        cur = cur_name = None
        right = width = prev_right = prev_width = None
        for i, (t, s) in enumerate(zip(ts, scores, strict=True)):
            if wins and t == wins[0][0]:
                cur = wins.pop(0)
                cur_name = f"{name}|{cur[0]}"
                right = ts.index(cur[1])
                width = float(right - ts.index(cur[0]) + 1)
            if cur is not None:
                w = nab.scaled_sigmoid(-(right - i + 1) / width) * profile.a_tp / max_tp
            elif prev_right is None:
                w = -1.0 * profile.a_fp
            else:
                w = nab.scaled_sigmoid(abs(prev_right - i) / (prev_width - 1)) * profile.a_fp
            rows.append((s, w, cur_name if i >= prob else "probationary"))
            if cur is not None and t == cur[1]:
                prev_right, prev_width = i, width
                cur = cur_name = None
    rows = sorted((r for r in rows if r[2] != "probationary"), key=lambda r: r[0], reverse=True)
    parts = {"fp": 0.0}
    for r in rows:
        if r[2] is not None:
            parts[r[2]] = -profile.a_fn
    out, thr = [], 1.1
    for s, w, name in rows:
        if s != thr:
            out.append((thr, sum(parts.values())))
            thr = s
        if name is None:
            parts["fp"] += w
        else:
            parts[name] = max(parts[name], w)
    out.append((thr, sum(parts.values())))
    best = max(range(len(out)), key=lambda k: (out[k][1], -k))
    return out[best]


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_sweep_matches_a_literal_one(seed: int) -> None:
    rng = random.Random(seed)
    files, results, windows = [], {}, {}
    for k in range(3):
        n = rng.randint(60, 300)
        ts = [float(i) for i in range(n)]
        # Coarse scores so that ties between rows are common.
        scores = [round(rng.random() ** 3, 1) for _ in range(n)]
        wins = []
        start = rng.randint(5, 40)
        while start + 10 < n:
            end = min(n - 1, start + rng.randint(2, 25))
            wins.append((ts[start], ts[end]))
            start = end + rng.randint(1, 60)
        name = f"f{k}"
        files.append((name, ts, scores, wins))
        results[name] = list(zip(ts, scores, strict=True))
        windows[name] = wins
    for profile in nab.PROFILES.values():
        thr, raw = nab.optimize_threshold(results, windows, profile)
        ref_thr, ref_raw = _reference_sweep(files, profile)
        assert math.isclose(raw, ref_raw, abs_tol=1e-9)
        assert thr == ref_thr
        scored = nab.score_corpus(results, windows, profile)
        assert math.isclose(scored.raw, ref_raw, abs_tol=1e-9)
