"""Detectors against direct recomputation (numpy, sklearn) and the behaviour a user notices."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from vigil.detectors.base import Explanation
from vigil.detectors.cusum import CUSUM
from vigil.detectors.ewma import EWMAZScore
from vigil.detectors.isolation_forest import WindowedIsolationForest
from vigil.detectors.mad import RollingMAD
from vigil.detectors.page_hinkley import PageHinkley
from vigil.detectors.seasonal import SeasonalBaseline
from vigil.detectors.threshold import RateThreshold, StaticThreshold


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).astimezone(UTC).timestamp()


# ------------------------------------------------------------------ EWMAZScore
def test_ewma_mean_and_var_match_numpy_at_every_step() -> None:
    alpha = 0.1
    xs = np.random.default_rng(0).normal(20.0, 4.0, 300)
    det = EWMAZScore(alpha=alpha, grace_period=0)
    for n, x in enumerate(xs, start=1):
        det.learn_one(float(x))
        # Exponential weights with the first value carrying the remaining mass.
        w = alpha * (1 - alpha) ** np.arange(n - 1, -1, -1)
        w[0] = (1 - alpha) ** (n - 1)
        seen = xs[:n]
        mean = np.sum(w * seen)
        var = np.sum(w * (seen - mean) ** 2)
        s = det.snapshot()
        assert s.n == n
        assert s.mean == pytest.approx(mean, rel=1e-12)
        assert s.var == pytest.approx(var, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ RollingMAD
def test_rolling_mad_matches_numpy_median_and_mad_at_every_step() -> None:
    window = 25
    xs = np.random.default_rng(1).standard_t(3, 400) * 5 + 100  # heavy tails
    det = RollingMAD(window=window, grace_period=10)
    for i, x in enumerate(xs):
        e = det.explain_one(float(x))
        if i < 10:
            assert e == Explanation.warming(float(x))
        else:
            w = xs[max(0, i - window) : i]
            med = np.median(w)
            scale = 1.4826 * np.median(np.abs(w - med))
            assert e.expected == pytest.approx(med, rel=1e-12)
            assert e.score == pytest.approx(abs(x - med) / scale, rel=1e-9)
            assert e.upper - e.expected == pytest.approx(4.0 * scale, rel=1e-9)
        det.learn_one(float(x))


def test_rolling_mad_falls_back_to_mean_absolute_deviation_when_mad_is_zero() -> None:
    det = RollingMAD(window=10, grace_period=1)
    window = [5.0] * 7 + [6.0, 4.0, 9.0]  # more than half identical: MAD = 0
    for x in window:
        det.learn_one(x)
    mean_abs_dev = np.mean(np.abs(np.array(window) - 5.0))
    assert det.score_one(8.0) == pytest.approx(3.0 / (1.2533 * mean_abs_dev))


def test_rolling_mad_ignores_a_burst_of_outliers_in_its_window() -> None:
    rng = np.random.default_rng(2)
    det = RollingMAD(window=100, grace_period=30)
    for x in rng.normal(50.0, 2.0, 100):
        det.learn_one(float(x))
    for _ in range(10):  # a burst: 10 % of the window
        det.learn_one(500.0)
    window = np.array(det.snapshot().values)
    assert det.explain_one(50.0).expected == pytest.approx(50.0, abs=1.5)
    # A 5-sigma value still scores about 4, where a plain z-score no longer notices it.
    assert det.score_one(60.0) > 3.5
    assert abs(60.0 - window.mean()) / window.std() < 1


# ------------------------------------------------------------------ SeasonalBaseline
@pytest.mark.parametrize(
    ("iso", "week_hour", "day_hour"),
    [
        ("2024-01-01T00:30:00+00:00", 7, 7),  # Monday 07:30 in Ho Chi Minh City (UTC+7)
        ("2024-01-07T16:59:59+00:00", 6 * 24 + 23, 23),  # Sunday 23:59:59 local
        ("2024-01-07T17:00:00+00:00", 0, 0),  # Monday 00:00 local, still Sunday in UTC
        ("2024-06-15T12:00:00+07:00", 5 * 24 + 12, 12),  # Saturday noon local
    ],
)
def test_seasonal_slot_is_local_hour_of_week(iso: str, week_hour: int, day_hour: int) -> None:
    ts = _ts(iso)
    assert SeasonalBaseline(period="week_hour").slot(ts) == week_hour
    assert SeasonalBaseline(period="day_hour").slot(ts) == day_hour


def test_seasonal_slot_follows_daylight_saving_time() -> None:
    berlin = SeasonalBaseline(period="day_hour", tz="Europe/Berlin")
    assert berlin.slot(_ts("2024-03-31T00:30:00+00:00")) == 1  # 01:30 CET
    assert berlin.slot(_ts("2024-03-31T01:30:00+00:00")) == 3  # 03:30 CEST: 02:xx skipped
    assert berlin.slot(_ts("2024-07-01T12:00:00+00:00")) == 14  # summer: UTC+2


def test_seasonal_needs_event_time() -> None:
    det = SeasonalBaseline()
    with pytest.raises(ValueError, match="needs the event time"):
        det.score_one(1.0)
    with pytest.raises(ValueError, match="needs the event time"):
        det.learn_one(1.0)
    with pytest.raises(ValueError, match="unknown SeasonalBaseline period 'month'"):
        SeasonalBaseline(period="month").learn_one(1.0, 0.0)


def test_seasonal_learns_a_weekly_pattern_in_local_time() -> None:
    # Monday 07:00-08:00 in Ho Chi Minh City (00:00-01:00Z) is the morning rush: ~500
    # vehicles; every other hour of the week sees ~50.
    rng = np.random.default_rng(3)
    det = SeasonalBaseline(grace_period=2)
    start = _ts("2024-01-01T00:00:00+00:00")
    for h in range(4 * 7 * 24):  # four weeks, hourly
        ts = start + 3600.0 * h + 1800.0
        rush = h % (7 * 24) == 0
        det.learn_one(float(rng.normal(500.0 if rush else 50.0, 5.0)), ts)
    monday_rush = _ts("2024-01-29T07:30:00+07:00")
    tuesday_same_hour = _ts("2024-01-30T07:30:00+07:00")
    assert det.slot(monday_rush) == 7
    assert det.score_one(500.0, monday_rush) < 2  # the usual Monday rush
    # Unheard of on a Tuesday. (Not more: a slot's variance starts from the global one,
    # which the weekly swing inflates, and after four weeks each slot has seen 4 values.)
    assert det.score_one(500.0, tuesday_same_hour) > 8
    assert det.score_one(50.0, monday_rush) > 20  # an empty Monday rush hour
    assert det.explain_one(500.0, monday_rush).expected == pytest.approx(500.0, abs=10)


def test_seasonal_cold_slot_falls_back_to_global_baseline() -> None:
    det = SeasonalBaseline(period="week_hour", grace_period=2)
    start = _ts("2024-01-01T00:00:00+00:00")
    for i in range(40):  # Monday local 07:00 to 08:00 only
        det.learn_one(100.0 + i % 3, start + 60.0 * i)
    friday = _ts("2024-01-05T10:00:00+00:00")  # a slot never seen
    e = det.explain_one(100.0, friday)
    s = det.snapshot()
    assert e.expected == s.global_mean
    assert 0 < e.score < 2
    det.learn_one(130.0, friday)  # one value in a slot: still cold, still global
    assert det.explain_one(130.0, friday + 60).expected == det.snapshot().global_mean


# ------------------------------------------------------------------ CUSUM
def _first_signal(det: CUSUM, xs: np.ndarray) -> int | None:
    for i, x in enumerate(xs):
        if det.score_one(float(x)) >= 1:
            return i
        det.learn_one(float(x))
    return None


@pytest.mark.parametrize("h", [5.0, 8.0])
def test_cusum_detects_a_two_sigma_shift_within_ten_points(h: float) -> None:
    delays = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        det = CUSUM(h=h)
        for x in rng.normal(50.0, 3.0, 300):
            det.learn_one(float(x))
        first = _first_signal(det, rng.normal(56.0, 3.0, 50))
        delays.append(99 if first is None else first)
    assert np.mean(np.array(delays) < 10) >= 0.9
    assert np.median(delays) <= 5


def test_cusum_detects_a_downward_shift_too() -> None:
    rng = np.random.default_rng(7)
    det = CUSUM()
    for x in rng.normal(50.0, 3.0, 300):
        det.learn_one(float(x))
    first = _first_signal(det, rng.normal(44.0, 3.0, 50))
    assert first is not None and first < 10


def _signals_on_noise(h: float) -> int:
    signals = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        det = CUSUM(h=h)
        for x in rng.normal(50.0, 3.0, 2000):
            signals += det.score_one(float(x)) >= 1
            det.learn_one(float(x))
    return signals


def test_cusum_is_quiet_on_stationary_noise() -> None:
    # k=0.5, h=5: about one false alarm per 465 values with known mean and variance;
    # the estimated ones cost a little more.
    assert _signals_on_noise(5.0) / 20_000 < 1 / 300
    # h=8 is nearly silent (and still finds a 2-sigma shift within 10 values, above).
    assert _signals_on_noise(8.0) <= 10


def test_cusum_band_is_where_the_score_reaches_one() -> None:
    rng = np.random.default_rng(4)
    det = CUSUM()
    for x in rng.normal(10.0, 1.0, 100):
        det.learn_one(float(x))
    e = det.explain_one(10.0)
    assert e.lower < e.expected < e.upper
    assert det.score_one(e.upper * (1 + 1e-9)) >= 1 > det.score_one(e.upper * (1 - 1e-9))
    assert det.score_one(e.lower * (1 - 1e-9)) >= 1 > det.score_one(e.lower * (1 + 1e-9))


def test_cusum_restarts_after_signalling() -> None:
    det = CUSUM(grace_period=30)
    for x in np.random.default_rng(5).normal(0.0, 1.0, 100):
        det.learn_one(float(x))
    while det.score_one(3.0) < 1:
        det.learn_one(3.0)
    det.learn_one(3.0)
    assert det.snapshot().n == 0
    assert det.score_one(100.0) == 0.0  # warming up on the new level


# ------------------------------------------------------------------ PageHinkley
def _page_hinkley_reference(
    xs: list[float], delta: float, threshold: float, alpha: float, grace: int
) -> list[float]:
    """Scores by the published recurrences, written out plainly: statistic / threshold."""
    scores, seen = [], []
    up = down = 0.0
    low, high = math.inf, -math.inf
    for x in xs:
        seen.append(x)
        mean = float(np.mean(seen))
        up = alpha * up + (x - mean) - delta
        down = alpha * down + (x - mean) + delta
        low, high = min(low, up), max(high, down)
        stat = max(up - low, high - down) if len(seen) > grace else 0.0
        scores.append(stat / threshold)
        if stat > threshold:  # signalled: start over
            seen, up, down, low, high = [], 0.0, 0.0, math.inf, -math.inf
    return scores


def test_page_hinkley_matches_reference_recurrences() -> None:
    rng = np.random.default_rng(6)
    xs = [float(x) for x in np.concatenate([rng.normal(0, 1, 400), rng.normal(2, 1, 400)])]
    det = PageHinkley(delta=0.005, threshold=20.0, alpha=0.999, grace_period=30)
    scores = []
    for x in xs:
        scores.append(det.score_one(x))
        det.learn_one(x)
    expected = _page_hinkley_reference(xs, 0.005, 20.0, 0.999, 30)
    np.testing.assert_allclose(scores, expected, rtol=1e-7, atol=1e-9)
    signals = [i for i, s in enumerate(scores) if s > 1]
    assert signals == [i for i, s in enumerate(expected) if s > 1]
    assert any(400 <= i < 430 for i in signals)  # the shift at 400 is found promptly


def test_page_hinkley_band_is_where_the_score_passes_one() -> None:
    rng = np.random.default_rng(8)
    det = PageHinkley(threshold=20.0)
    for x in rng.normal(5.0, 1.0, 200):
        det.learn_one(float(x))
    e = det.explain_one(5.0)
    assert e.lower < e.expected < e.upper
    assert det.score_one(e.upper + 1e-6) > 1 >= det.score_one(e.upper - 1e-6)
    assert det.score_one(e.lower - 1e-6) > 1 >= det.score_one(e.lower + 1e-6)


# ------------------------------------------------------------------ isolation forest
def test_isolation_forest_score_is_negated_sklearn_score_on_last_fit_window() -> None:
    rng = np.random.default_rng(9)
    det = WindowedIsolationForest(window=64, refit_every=16, n_estimators=20, grace_period=32)
    xs = rng.normal(0.0, 1.0, 100)
    for x in xs:
        det.learn_one(float(x))
    # Fits at 32, 48, 64, 80, 96 values: the last on values 33..96 (the newest 64 then).
    s = det.snapshot()
    assert s.fit_window == tuple((float(x),) for x in xs[32:96])
    assert s.window == tuple((float(x),) for x in xs[36:100])
    forest = IsolationForest(n_estimators=20, random_state=0).fit(xs[32:96, None])
    probes = np.array([[-5.0], [-1.0], [0.0], [0.5], [2.5], [8.0]])
    expected = np.maximum(0.0, -forest.score_samples(probes) - 0.5)
    np.testing.assert_array_equal([det.score_one(float(p[0])) for p in probes], expected)
    assert det.score_one(8.0) > 0.1
    assert det.score_one(0.0) == 0.0
    e = det.explain_one(0.0)
    assert e.expected == pytest.approx(np.median(xs[32:96]))
    assert e.lower < e.expected < e.upper


def test_isolation_forest_rejects_wrong_feature_count() -> None:
    det = WindowedIsolationForest(n_features=2)
    with pytest.raises(ValueError, match="expects 2 feature"):
        det.learn_one(1.0)
    with pytest.raises(ValueError, match="expects 2 feature"):
        det.score_one((1.0, 2.0, 3.0))


# ------------------------------------------------------------------ thresholds
def test_static_threshold_scores_distance_outside_band() -> None:
    det = StaticThreshold(lower=10.0, upper=30.0)
    assert [det.score_one(x) for x in (10.0, 20.0, 30.0)] == [0.0, 0.0, 0.0]
    assert det.score_one(40.0) == pytest.approx(0.5)
    assert det.score_one(0.0) == pytest.approx(0.5)
    assert det.explain_one(40.0).expected == 20.0
    assert StaticThreshold(lower=0.0).score_one(-3.0) == 3.0  # no scale at 0: raw units
    assert StaticThreshold(lower=0.0).explain_one(-3.0).expected == 0.0
    assert StaticThreshold().score_one(1e9) == 0.0


def test_rate_threshold_flags_a_burst_but_not_steady_traffic() -> None:
    det = RateThreshold(max_per_s=2.0, window_s=60.0)
    t0 = 1_700_000_000.0
    steady = []
    for i in range(600):  # 1.5 events per second for 400 s
        ts = t0 + i / 1.5
        steady.append(det.score_one(1.0, ts))
        det.learn_one(1.0, ts)
    assert max(steady) == 0.0
    burst = []
    for i in range(300):  # then 4 per second: over the limit once the window fills
        ts = t0 + 400.0 + i / 4
        burst.append(det.score_one(1.0, ts))
        det.learn_one(1.0, ts)
    assert burst[0] == 0.0
    assert burst[-1] == pytest.approx(1.0, abs=0.1)  # about twice the limit
    assert all(b > 0 for b in burst[200:])


def test_rate_threshold_needs_event_time_and_ignores_events_older_than_window() -> None:
    det = RateThreshold(max_per_s=1.0, window_s=10.0)
    with pytest.raises(ValueError, match="needs the event time"):
        det.score_one(1.0)
    det.learn_one(5.0, 1000.0)
    before = det.snapshot()
    det.learn_one(100.0, 900.0)  # far behind the window
    assert det.snapshot() == before
    assert det.score_one(100.0, 900.0) == 0.0
    assert det.score_one(10.0, 1000.5) == pytest.approx(0.5)  # (5 + 10) / 10 s = 1.5/s
