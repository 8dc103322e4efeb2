"""The queue rules' fused detectors against their parents, value by value (oracle tests).

:class:`~vigil.flows.queues.baselines.SlotBaseline` and
:class:`~vigil.flows.queues.baselines.StepCUSUM` must give exactly (``==``, not
approximately) the explanations, scores and learned state of calling the parent's
``explain_one``/``learn_one`` and ``score_one``/``learn_one`` in turn.
"""

from __future__ import annotations

import random

import pytest
from vigil.detectors.calendar import CalendarBaseline
from vigil.detectors.cusum import CUSUM
from vigil.flows.queues.baselines import SlotBaseline, StepCUSUM


def counts(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    # Quiet slots, busy slots, and storms (values far outside the band, to be clipped).
    return [float(rng.choice([0, 1, 3, 40, 41, 45, 300]) + rng.randint(0, 5)) for _ in range(n)]


@pytest.mark.parametrize("clip_z", [None, 4.0, 0.5])
@pytest.mark.parametrize("grace", [0, 1, 2])
def test_slot_baseline_explains_and_learns_as_calendar_baseline(
    clip_z: float | None, grace: int
) -> None:
    fused = SlotBaseline(5, alpha=0.2, grace_period=grace)
    plain = CalendarBaseline(5, alpha=0.2, grace_period=grace)
    rng = random.Random(grace)
    for x in counts(grace, 400):
        slot, learn = rng.randrange(5), rng.random() < 0.8
        e = plain.explain_one(slot, x)
        assert fused.explain_learn(slot, x, clip_z, learn) == (
            e.score,
            e.expected,
            e.lower,
            e.upper,
        )
        if learn:
            plain.learn_one(slot, x, clip_z=clip_z)
        assert fused.snapshot() == plain.snapshot()


@pytest.mark.parametrize("grace", [0, 2, 24])
def test_step_cusum_scores_and_learns_as_cusum(grace: int) -> None:
    fused = StepCUSUM(k=0.5, h=6.0, alpha=0.05, grace_period=grace, min_std=0.5)
    plain = CUSUM(k=0.5, h=6.0, alpha=0.05, grace_period=grace, min_std=0.5)
    signals = 0
    for x in counts(grace + 7, 600):
        z = (x - 20.0) / 10.0
        score = plain.score_one(z)
        plain.learn_one(z)
        assert fused.score_learn(z) == score
        assert fused.snapshot() == plain.snapshot()
        signals += score >= 1.0
    assert signals > 0  # the restart after a signal is exercised


def test_fast_queue_stats_equal_the_dataclass() -> None:
    # agency._new_stats builds QueueStats through its slots, for speed: the same record,
    # defaults included, that pickles and compares like one built by its __init__.
    import pickle

    from vigil.flows.queues.agency import _new_stats

    from vigil.records import QueueStats

    args = (7200.0, 3600.0, "PWD", "Pothole", 3, 2, 9, 1, 1, 1, 0.5, 60.0, 90.0, 120.0)
    for extra in ((), (43200.0,), (43200.0, (("app", 2), ("call", 1)))):
        fast, plain = _new_stats(*args, *extra), QueueStats(*args, *extra)
        assert fast == plain and repr(fast) == repr(plain)
        assert pickle.loads(pickle.dumps(fast)) == plain
    with pytest.raises(AttributeError):
        fast.backlog = 0  # type: ignore[misc]  # still frozen
