"""Oracle test: the services' day-batched baselines learn exactly as one CalendarBaseline each.

The queue flow keeps every service's arrival baseline in one matrix and learns a local day
at a time (flows/queues/agency.py, ``_ServiceBaselines``); its states, explanations and
drop candidates must be those of ``CalendarBaseline`` fed window by window, also when a
slot comes twice in a day (the autumn DST change), when a day skips a slot (spring), when
services appear mid-day, and across a snapshot.
"""

from __future__ import annotations

import random

from vigil.detectors.calendar import CalendarBaseline
from vigil.flows.queues.agency import _ServiceBaselines

SLOTS, ALPHA, GRACE, CLIP, MIN = 72, 0.2, 3, 4.0, 30


def _days() -> list[list[int]]:
    """Slots of each local day: plain days, a day with slot 2 twice, one without slot 2."""
    plain = list(range(24))
    autumn = [*range(3), 2, *range(3, 24)]
    spring = [s for s in plain if s != 2]
    days = []
    for d in range(40):
        base = 24 * (d % 3)
        hours = autumn if d == 17 else spring if d == 25 else plain
        days.append([base + h for h in hours])
    return days


def test_day_batched_learning_equals_one_baseline_per_service() -> None:
    rng = random.Random(7)
    names = [f"svc{i}" for i in range(12)]
    oracle: dict[str, CalendarBaseline] = {}
    sb = _ServiceBaselines(SLOTS, ALPHA, GRACE)
    for d, day in enumerate(_days()):
        sb.new_day()
        cum = dict.fromkeys(names, 0)
        for slot in day:
            # A new service appears now and then, mid-day (as in the flow).
            while len(sb) < len(names) and rng.random() < 0.05 + (len(sb) < 3):
                name = names[len(sb)]
                sb.add(name)
                oracle[name] = CalendarBaseline(SLOTS, alpha=ALPHA, grace_period=GRACE)
            for name in sb.names:
                k = rng.choice([0, 0, 1, 3, 9, 40])
                cum[name] += k
                sb.cum[sb.index[name]] = cum[name]
            # The flow reads a slot only for some services, some windows: none on the
            # autumn day here, so learning a slot twice in a day is left to ``record``.
            look = d != 17 and rng.random() < 0.7
            drops = set(sb.drop_candidates(slot, MIN)) if look else set()
            for i, name in enumerate(sb.names):
                x = float(cum[name])
                e = oracle[name].explain_one(slot, x)
                if look:
                    assert sb.explain(i, slot, x) == (e.score, e.expected, e.lower, e.upper)
                    warm = oracle[name].count(slot) >= GRACE
                    assert (i in drops) == (warm and e.expected >= MIN)
                oracle[name].learn_one(slot, x, clip_z=CLIP)
            sb.record(slot, CLIP, MIN)
    states = sb.states()
    assert list(states) == list(oracle)
    assert states == {k: b.snapshot() for k, b in oracle.items()}
    again = _ServiceBaselines(SLOTS, ALPHA, GRACE)
    again.restore(states, {})
    assert again.states() == states
