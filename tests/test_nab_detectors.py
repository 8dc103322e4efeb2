"""The NAB detectors keep the detector contract and find what a user would expect."""

from __future__ import annotations

import dataclasses
import inspect
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vigil.detectors.base import Detector, Explanation
from vigil.detectors.contextual import ContextualAnomaly
from vigil.detectors.ensemble import ResonanceEnsemble
from vigil.detectors.ewma import EWMAZScore
from vigil.detectors.knn_cad import KNNCAD
from vigil.detectors.likelihood import AnomalyLikelihood, log_likelihood
from vigil.detectors.resonance import AdaptiveResonance
from vigil.flows.evaluation import nab

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"

# Short probationary periods and windows, so that a few dozen values reach every path.
FACTORIES: dict[str, Callable[[], Detector[Any]]] = {
    "resonance": lambda: AdaptiveResonance(input_min=-10.0, input_max=10.0, probationary_period=20),
    "resonance-running-range": lambda: AdaptiveResonance(probationary_period=20, window=4),
    "ensemble": lambda: ResonanceEnsemble(probationary_period=20, gate_window=10, range_rest=5),
    "contextual": lambda: ContextualAnomaly(probationary_period=20),
    "contextual-fixed-range": lambda: ContextualAnomaly(
        input_min=-5.0, input_max=5.0, rest_period=3
    ),
    "knn_cad": lambda: KNNCAD(probationary_period=20, dim=4, k=3),
    "likelihood": lambda: AnomalyLikelihood(
        EWMAZScore(alpha=0.3, grace_period=3),
        learning_period=5,
        estimation_samples=5,
        historic_window=30,
        reestimation_period=4,
        averaging_window=3,
    ),
    "likelihood-log-knn": lambda: AnomalyLikelihood(
        KNNCAD(probationary_period=10, dim=3, k=2),
        learning_period=5,
        estimation_samples=10,
        reestimation_period=7,
        log_scale=True,
    ),
}

values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
# Mostly small values around a level, with occasional huge ones: random walks reach the
# learning paths, the huge values the edge cases.
streams = st.lists(
    st.one_of(st.floats(min_value=-3.0, max_value=3.0), values), min_size=30, max_size=70
)
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(det: Detector[Any], xs: list[float]) -> list[float]:
    out = []
    for i, x in enumerate(xs):
        out.append(det.score_one(x, float(i)))
        det.learn_one(x, float(i))
    return out


def plain(value: object) -> bool:
    """Only floats, ints, bools, strings, None, tuples and frozen dataclasses of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, tuple):
        return all(plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        frozen = type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
        return frozen and all(plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


@pytest.mark.parametrize("name", sorted(FACTORIES))
@SETTINGS
@given(xs=streams)
def test_scores_are_finite_and_in_unit_interval(name: str, xs: list[float]) -> None:
    det = FACTORIES[name]()
    for i, x in enumerate(xs):
        s = det.score_one(x, float(i))
        e = det.explain_one(x, float(i))
        assert isinstance(e, Explanation)
        assert math.isfinite(s) and 0.0 <= s <= 1.0
        assert e.score == s
        det.learn_one(x, float(i))


@pytest.mark.parametrize("name", sorted(FACTORIES))
@SETTINGS
@given(xs=streams)
def test_score_one_is_pure(name: str, xs: list[float]) -> None:
    probed, plain_run = FACTORIES[name](), FACTORIES[name]()
    for i, x in enumerate(xs):
        before = pickle.dumps(probed.snapshot())
        first = probed.score_one(x, float(i))
        probed.score_one(x + 1.0, float(i))  # a look at another value changes nothing
        assert probed.score_one(x, float(i)) == first
        assert pickle.dumps(probed.snapshot()) == before
        assert plain_run.score_one(x, float(i)) == first
        probed.learn_one(x, float(i))
        plain_run.learn_one(x, float(i))


@pytest.mark.parametrize("name", sorted(FACTORIES))
@SETTINGS
@given(xs=streams, cut=st.integers(min_value=0, max_value=69))
def test_snapshot_pickle_restore_gives_identical_future(
    name: str, xs: list[float], cut: int
) -> None:
    cut = min(cut, len(xs))
    original = FACTORIES[name]()
    run(original, xs[:cut])
    snap = original.snapshot()
    assert plain(snap)
    frozen = pickle.dumps(snap)
    restored = FACTORIES[name]()
    restored.restore(pickle.loads(frozen))
    assert run(restored, xs[cut:]) == run(original, xs[cut:])
    # The snapshot did not change while the original learned more.
    assert pickle.dumps(snap) == frozen


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_same_config_same_scores(name: str) -> None:
    rng = np.random.default_rng(7)
    xs = (np.sin(np.arange(300) / 5.0) + 0.1 * rng.standard_normal(300)).tolist()
    xs[250] = 6.0
    assert run(FACTORIES[name](), xs) == run(FACTORIES[name](), xs)


@pytest.mark.parametrize(
    "cls", [AdaptiveResonance, ResonanceEnsemble, ContextualAnomaly, KNNCAD, AnomalyLikelihood]
)
def test_hyperparameters_are_stored_unchanged(cls: type) -> None:
    sig = inspect.signature(cls)
    args = {"detector": EWMAZScore()} if cls is AnomalyLikelihood else {}
    det = cls(**args)
    for pname, p in sig.parameters.items():
        expected = args.get(pname, p.default)
        assert getattr(det, pname) is expected or getattr(det, pname) == expected


# --------------------------------------------------------------------------- likelihood


def test_likelihood_follows_numentas_estimator() -> None:
    """Check the first fitted steps against a direct computation."""
    rng = np.random.default_rng(3)
    raw = np.clip(0.2 + 0.1 * rng.standard_normal(60), 0.0, 1.0)

    class Replay:
        """A detector that replays fixed raw scores (the value is the row number)."""

        def score_one(self, x: float, ts: float | None = None) -> float:
            return float(raw[int(x)])

        def explain_one(self, x: float, ts: float | None = None) -> Explanation:
            return Explanation.warming(x)

        def learn_one(self, x: float, ts: float | None = None) -> None:
            pass

        def snapshot(self) -> None:
            return None

        def restore(self, state: None) -> None:
            pass

    learn, est, avg = 10, 20, 5
    det = AnomalyLikelihood(
        Replay(),
        learning_period=learn,
        estimation_samples=est,
        averaging_window=avg,
        reestimation_period=1000,
    )
    got = run(det, [float(i) for i in range(45)])
    assert got[: learn + est] == [0.5] * (learn + est)
    # Moving averages restarted at the first row; the fit skips the learning period.
    mov = np.array([raw[max(0, i - avg + 1) : i + 1].mean() for i in range(45)])
    fit = mov[learn : learn + est]
    mean, std = max(fit.mean(), 0.03), math.sqrt(max(fit.var(), 0.0003))
    for i in range(learn + est, 45):
        x = mov[i] if mov[i] >= mean else 2 * mean - mov[i]
        tail = 0.5 * math.erfc((x - mean) / std / 1.4142)
        assert got[i] == pytest.approx(1.0 - tail, abs=1e-12)


def test_likelihood_reports_a_run_of_extremes_at_full_strength_once() -> None:
    det = AnomalyLikelihood(
        EWMAZScore(alpha=0.05, grace_period=5),
        learning_period=20,
        estimation_samples=100,
        averaging_window=1,
    )
    rng = np.random.default_rng(0)
    xs = [*(10.0 + rng.standard_normal(300)).tolist(), 60.0, 60.0]
    got = run(det, xs)
    assert max(got[:300]) < 0.99999
    assert got[300] > 0.99999  # the first extreme value is "red"...
    assert got[301] == pytest.approx(0.999)  # ...the next one only "yellow"
    assert log_likelihood(got[300]) > 0.5


def test_likelihood_of_a_flat_series_is_unremarkable() -> None:
    inner = KNNCAD(probationary_period=5, dim=2, k=1)
    det = AnomalyLikelihood(inner, learning_period=5, estimation_samples=10)
    got = run(det, [3.0] * 40 + [3.0 + 1e-4])
    assert max(got) < 0.501  # the "null" distribution: everything is about even


# --------------------------------------------------------------------------- quality


def nab_file(rel: str) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    if not (DATA / rel).exists():
        pytest.skip("NAB dev data not available")
    ts, values = nab.load_series(DATA / rel)
    windows = nab.load_windows(DATA / "dev_combined_windows.json")[rel]
    in_window = nab.sweep_file(rel, ts, np.zeros(len(ts)), windows).window >= 0
    return ts, values, int(nab.probationary_length(len(values))), in_window


QUALITY: dict[str, Callable[[float, float, int], Detector[Any]]] = {
    "ensemble": lambda lo, hi, p: ResonanceEnsemble(
        input_min=lo, input_max=hi, probationary_period=p
    ),
    "resonance": lambda lo, hi, p: AdaptiveResonance(
        input_min=lo, input_max=hi, probationary_period=p
    ),
    "contextual": lambda lo, hi, p: ContextualAnomaly(
        input_min=lo, input_max=hi, probationary_period=p
    ),
    "knn_cad": lambda lo, hi, p: KNNCAD(probationary_period=p),
}


@pytest.mark.parametrize("name", sorted(QUALITY))
def test_top_score_on_a_real_series_is_in_a_labelled_window(name: str) -> None:
    """On an AWS CPU series with two labelled windows, the strongest alarm is in one."""
    _, values, prob, in_window = nab_file("realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv")
    det = QUALITY[name](float(values.min()), float(values.max()), prob)
    scores = np.array(run(det, values.tolist()))
    scores[:prob] = 0.0
    top = np.flatnonzero(scores == scores.max())
    assert scores.max() > 0.0
    # KNN-CAD's conformal scores saturate at 1.0, so several rows can share the top.
    assert in_window[top].any() if name == "knn_cad" else in_window[top].all()
