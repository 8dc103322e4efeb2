"""The contract every detector keeps, checked on every kind in the registry.

Like river's ``yield_checks`` and scikit-learn's ``parametrize_with_checks``: a new detector
added to ``DETECTORS`` is checked here without writing a test (with its default parameters,
until it gets an entry in ``CASES``). Inputs come from Hypothesis: finite values up to
``1e9`` in size, at strictly increasing event times.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vigil.detectors.base import Detector, Explanation
from vigil.detectors.ewma import EWMAZScore
from vigil.detectors.keyed import KeyedDetectors
from vigil.detectors.registry import DETECTORS, make_detector

Stream = list[tuple[Any, float]]


@dataclasses.dataclass(frozen=True)
class Case:
    """A detector kind with the parameters the contract is checked with."""

    kind: str
    params: dict[str, Any]
    #: Turns a generated float into the detector's input.
    to_input: Callable[[float], Any] = float
    #: Hypothesis examples per check: fewer for slow detectors.
    examples: int = 40
    name: str = ""

    def make(self) -> Detector[Any]:
        return make_detector(self.kind, **self.params)

    def __str__(self) -> str:
        return self.name or self.kind


def _pair(v: float) -> tuple[float, float]:
    return (v, abs(v) % 3.0)


# Small windows and short warm-ups, so that a few dozen values reach every code path:
# fits and refits, signals and resets, cold and warm seasonal slots.
CASES = [
    Case("ewma_zscore", {"alpha": 0.3, "grace_period": 3}),
    Case("static_threshold", {"lower": -10.0, "upper": 10.0}),
    Case("static_threshold", {"upper": 0.0}, name="static_threshold-upper-only"),
    Case("rate_threshold", {"max_per_s": 0.01, "window_s": 3600.0}),
    Case("rolling_mad", {"window": 8, "grace_period": 3}),
    Case("seasonal", {"period": "day_hour", "grace_period": 1, "alpha": 0.3}),
    Case(
        "seasonal",
        {"period": "week_hour", "tz": "Europe/Berlin", "grace_period": 2},
        name="seasonal-week-dst",
    ),
    Case("cusum", {"h": 2.0, "alpha": 0.2, "grace_period": 3}),
    Case("page_hinkley", {"threshold": 5.0, "alpha": 0.99, "grace_period": 3}),
    Case(
        "isolation_forest",
        {"window": 12, "refit_every": 5, "n_estimators": 4, "grace_period": 6, "seed": 3},
        examples=12,
    ),
    Case(
        "isolation_forest",
        {"window": 12, "refit_every": 5, "n_estimators": 4, "grace_period": 6, "n_features": 2},
        to_input=_pair,
        examples=12,
        name="isolation_forest-2d",
    ),
]
#: Wrappers take another detector as an argument: tested with their inner detector in
#: tests/test_nab_detectors.py and tests/test_config_detectors.py.
WRAPPERS = {"likelihood"}
CASES += [Case(kind, {}) for kind in sorted(set(DETECTORS) - {c.kind for c in CASES} - WRAPPERS)]
CLASSES = sorted(
    {*(cls for k, cls in DETECTORS.items() if k not in WRAPPERS), EWMAZScore},
    key=lambda c: c.__name__,
)

T0 = 1_704_067_200.0  # 2024-01-01T00:00Z
VALUES = st.one_of(
    st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
    st.floats(-3.0, 3.0),
    st.sampled_from([0.0, 1.0, -1e9, 1e9]),
)
GAPS = st.floats(1.0, 4 * 3600.0)  # seconds between events: strictly increasing ts


@st.composite
def _steps(draw: st.DrawFn) -> list[tuple[float, float]]:
    """``(value, seconds since the previous event)`` pairs."""
    n = draw(st.integers(5, 60))
    gaps = draw(st.lists(GAPS, min_size=n, max_size=n))
    if draw(st.booleans()):  # any finite values
        values = draw(st.lists(VALUES, min_size=n, max_size=n))
    else:  # a noisy level that shifts once, so warm detectors see ordinary data and signal
        level = draw(st.floats(-1e6, 1e6))
        scale = draw(st.floats(0.0, 1e3))
        shift_at = draw(st.integers(0, n))
        shift = draw(st.floats(-20.0, 20.0))
        noise = draw(st.lists(st.floats(-3.0, 3.0), min_size=n, max_size=n))
        values = [
            level + scale * (z + (shift if i >= shift_at else 0.0)) for i, z in enumerate(noise)
        ]
    return list(zip(values, gaps, strict=True))


STEPS = _steps()


def _stream(case: Case, steps: list[tuple[float, float]]) -> Stream:
    out, ts = [], T0
    for v, gap in steps:
        ts += gap
        out.append((case.to_input(v), ts))
    return out


def _check(case: Case, check: Callable[[Case, Stream, int], None]) -> None:
    """Run ``check(case, stream, cut)`` on Hypothesis-generated streams."""

    @settings(
        max_examples=case.examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(steps=STEPS, cut=st.integers(0, 60))
    def run(steps: list[tuple[float, float]], cut: int) -> None:
        check(case, _stream(case, steps), cut % (len(steps) + 1))

    run()


def _plain(value: object) -> bool:
    """Only floats, ints and tuples of them (bools are ints); a detector built from others
    (an ensemble) may nest their frozen states, which must be plain in turn."""
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        frozen = type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
        return frozen and all(_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    return isinstance(value, int | float)


cases = pytest.mark.parametrize("case", CASES, ids=str)


# ------------------------------------------------------------------ 1. pure scoring
def _pure(case: Case, stream: Stream, cut: int) -> None:
    det = case.make()
    for x, ts in stream:
        before = det.snapshot()
        explained = det.explain_one(x, ts)
        score = det.score_one(x, ts)
        assert det.snapshot() == before
        assert det.explain_one(x, ts) == explained
        assert score == explained.score
        det.learn_one(x, ts)


@cases
def test_score_and_explain_are_pure(case: Case) -> None:
    _check(case, _pure)


# ------------------------------------------------------------------ 2. restore
def _restore(case: Case, stream: Stream, cut: int) -> None:
    det = case.make()
    for x, ts in stream[:cut]:
        det.learn_one(x, ts)
    twin = case.make()
    twin.restore(pickle.loads(pickle.dumps(det.snapshot())))
    assert twin.snapshot() == det.snapshot()
    for x, ts in stream[cut:]:
        assert twin.explain_one(x, ts) == det.explain_one(x, ts)
        det.learn_one(x, ts)
        twin.learn_one(x, ts)
    assert twin.snapshot() == det.snapshot()


@cases
def test_restored_snapshot_gives_identical_future_scores(case: Case) -> None:
    _check(case, _restore)


# ------------------------------------------------------------------ 3. frozen snapshot
def _frozen(case: Case, stream: Stream, cut: int) -> None:
    det = case.make()
    for x, ts in stream[:cut]:
        det.learn_one(x, ts)
    snap = det.snapshot()
    saved = pickle.dumps(snap)
    for x, ts in stream[cut:]:
        det.learn_one(x, ts)
    assert snap == pickle.loads(saved)
    assert pickle.dumps(snap) == saved


@cases
def test_snapshot_does_not_change_when_detector_learns(case: Case) -> None:
    _check(case, _frozen)


@cases
def test_snapshot_is_frozen_dataclass_of_plain_values(case: Case) -> None:
    det = case.make()
    x = case.to_input(1.0)
    for i in range(20):
        det.learn_one(x, T0 + 3600.0 * i)
    snap = det.snapshot()
    assert type(snap).__name__ == f"{type(det).__name__}State"
    assert dataclasses.is_dataclass(snap)
    for f in dataclasses.fields(snap):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(snap, f.name, None)
        assert _plain(getattr(snap, f.name)), f.name


# ------------------------------------------------------------------ 4. finite scores
def _finite(case: Case, stream: Stream, cut: int) -> None:
    det = case.make()
    for x, ts in stream:
        score = det.score_one(x, ts)
        assert math.isfinite(score)
        assert score >= 0.0
        e = det.explain_one(x, ts)
        assert isinstance(e, Explanation)
        assert not any(math.isnan(v) for v in (e.score, e.expected, e.lower, e.upper)), e
        det.learn_one(x, ts)


@cases
def test_scores_are_finite_and_non_negative(case: Case) -> None:
    _check(case, _finite)


@cases
def test_score_is_zero_during_grace_period(case: Case) -> None:
    det = case.make()
    grace = getattr(det, "grace_period", 0)
    for i in range(grace):
        x = case.to_input(1e6 * (-1) ** i * i)  # wild values: still no score
        assert det.score_one(x, T0 + 60.0 * i) == 0.0
        det.learn_one(x, T0 + 60.0 * i)


# ------------------------------------------------------------------ 5. seeded
def _seeded(case: Case, stream: Stream, cut: int) -> None:
    first, second = case.make(), case.make()
    for x, ts in stream:
        assert first.score_one(x, ts) == second.score_one(x, ts)
        first.learn_one(x, ts)
        second.learn_one(x, ts)


@cases
def test_same_seed_gives_same_scores(case: Case) -> None:
    _check(case, _seeded)


# ------------------------------------------------------------------ 6. constructor
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_constructor_stores_hyperparameters_and_defaults_are_immutable(cls: type) -> None:
    params = inspect.signature(cls).parameters
    for p in params.values():
        assert p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY), p
        if p.default is not p.empty:
            assert isinstance(p.default, int | float | str | tuple | frozenset | None), p
    given_params = next((c.params for c in CASES if DETECTORS.get(c.kind) is cls), {})
    det = cls(**given_params)
    for name, p in params.items():
        expected = given_params.get(name, p.default)
        assert getattr(det, name) is expected, name
    # Hyperparameters are the only public attributes; learned state is private.
    assert {k for k in vars(det) if not k.startswith("_")} == set(params)
    # __init__ creates empty state and nothing else.
    snap = det.snapshot()
    assert snap == type(snap)()


def test_registry_names_every_kind() -> None:
    assert set(DETECTORS) >= {
        "ewma_zscore",
        "static_threshold",
        "rate_threshold",
        "rolling_mad",
        "seasonal",
        "cusum",
        "page_hinkley",
        "isolation_forest",
    }
    assert DETECTORS["ewma_zscore"] is EWMAZScore
    for cls in DETECTORS.values():
        assert isinstance(cls.__new__(cls), Detector)
    with pytest.raises(ValueError, match="unknown detector kind 'ewma'"):
        make_detector("ewma")
    with pytest.raises(TypeError):
        make_detector("ewma_zscore", alfa=0.1)


# ------------------------------------------------------------------ KeyedDetectors
def _keyed(**kw: Any) -> KeyedDetectors:
    return KeyedDetectors(lambda: EWMAZScore(alpha=0.2, grace_period=2), **kw)


KEYED_STEPS = st.lists(
    st.tuples(st.sampled_from("abcde"), st.floats(-1e9, 1e9), st.floats(0.0, 7200.0)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, database=None)
@given(steps=KEYED_STEPS, cut=st.integers(0, 60), fallback=st.sampled_from(["none", "group"]))
def test_keyed_restore_gives_identical_future_scores(
    steps: list[tuple[str, float, float]], cut: int, fallback: str
) -> None:
    kw: dict[str, Any] = {"warmup": 3, "max_keys": 3, "idle_ttl_s": 10_000.0}
    keyed = _keyed(fallback=fallback, **kw)
    ts = T0
    events = []
    for key, x, gap in steps:
        ts += gap
        events.append((key, x, ts))
    cut %= len(events) + 1
    for key, x, t in events[:cut]:
        keyed.learn_one(key, x, t)
    snap = keyed.snapshot()
    saved = pickle.dumps(snap)
    twin = _keyed(fallback=fallback, **kw)
    twin.restore(pickle.loads(saved))
    assert twin.snapshot() == snap
    for i, (key, x, t) in enumerate(events[cut:]):
        before = keyed.snapshot()
        e = keyed.explain_one(key, x, t)
        assert keyed.snapshot() == before  # pure
        assert math.isfinite(e.score) and e.score >= 0.0
        assert twin.explain_one(key, x, t) == e
        keyed.learn_one(key, x, t)
        twin.learn_one(key, x, t)
        if i % 7 == 6:
            assert keyed.expire(t) == twin.expire(t)
        assert len(keyed) <= 3
    assert twin.snapshot() == keyed.snapshot()
    assert pickle.dumps(snap) == saved  # the snapshot did not change as they learned


def test_keyed_key_count_stays_bounded_with_many_keys() -> None:
    keyed = _keyed(max_keys=500, warmup=2)
    for i in range(20_000):
        keyed.learn_one(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", float(i % 10), T0 + i)
        assert len(keyed) <= 500
    assert len(keyed) == 500
    assert len(keyed.snapshot().keys) == 500
    # The least recently seen went first: the newest 500 remain.
    assert "10.0.78.31" in keyed  # key 19_999
    assert "10.0.76.44" in keyed  # key 19_500
    assert "10.0.76.43" not in keyed  # key 19_499


def test_keyed_evicts_least_recently_seen_not_least_recently_created() -> None:
    keyed = _keyed(max_keys=2)
    keyed.learn_one("old", 1.0, T0)
    keyed.learn_one("new", 1.0, T0 + 1)
    keyed.learn_one("old", 1.0, T0 + 2)  # "old" is now the most recent
    keyed.learn_one("third", 1.0, T0 + 3)
    assert "old" in keyed
    assert "new" not in keyed


def test_keyed_expire_drops_idle_keys_only() -> None:
    keyed = _keyed(idle_ttl_s=3600.0)
    keyed.learn_one("idle", 1.0, T0)
    keyed.learn_one("busy", 1.0, T0)
    keyed.learn_one("busy", 1.0, T0 + 3000)
    assert keyed.expire(T0 + 3600) == 0  # exactly the TTL: kept
    assert keyed.expire(T0 + 3601) == 1
    assert "idle" not in keyed
    assert "busy" in keyed


def test_keyed_warmup_uses_fallback_then_own_detector() -> None:
    none = _keyed(warmup=5, fallback="none")
    group = _keyed(warmup=5, fallback="group")
    everything = EWMAZScore(alpha=0.2, grace_period=2)  # what the group detector should be
    for i in range(50):
        for keyed in (none, group):
            keyed.learn_one("big", 1000.0 + i % 2, T0 + i)
        everything.learn_one(1000.0 + i % 2)
    for i in range(4):
        for keyed in (none, group):
            keyed.learn_one("new", 5.0 + i % 2, T0 + 50 + i)
        everything.learn_one(5.0 + i % 2)
    # "new" has 4 values, fewer than warmup: no score, or the group's (which knows "big").
    assert none.explain_one("new", 5.0) == Explanation.warming(5.0)
    assert group.explain_one("new", 5.0) == everything.explain_one(5.0)
    assert group.explain_one("new", 5.0).expected > 100
    for keyed in (none, group):
        keyed.learn_one("new", 5.0, T0 + 60)
        assert keyed.explain_one("new", 5.0).expected < 10  # now its own baseline
        assert keyed.score_one("new", 1000.0) > 10


def test_keyed_rejects_unknown_fallback() -> None:
    with pytest.raises(ValueError, match="fallback"):
        _keyed(fallback="groups")
