"""A flush of a group that did not change is skipped cheaply (``Notifier._unchanged``):
the engine must decide exactly what it decides when every flush runs in full.

Random workloads (alerts firing, extending and resolving, silences starting and ending on
the wall clock, acknowledgements, inhibition, repeats) run through two engines, one with
the shortcut and one without; notifications, the state handed to the store and the
groups' timers must be the same at every step.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from vigil.sinks.alerting.engine import AlertEngine, ManualClock
from vigil.sinks.alerting.model import InhibitRule, Silence, parse_matchers
from vigil.sinks.alerting.routing import Route

T0 = 1_700_000_000.0
ENTITIES = [f"10.0.0.{i}" for i in range(8)]


def engine(clock: ManualClock, *, inhibit: bool) -> AlertEngine:
    rules = (
        [
            InhibitRule(
                source=parse_matchers(["severity=critical"]),
                target=parse_matchers(["severity=high"]),
                equal=("entity",),
            )
        ]
        if inhibit
        else []
    )
    return AlertEngine(
        Route(
            receiver="ops",
            group_by=("alertname", "entity"),
            group_wait=10,
            group_interval=60,
            repeat_interval=600,
        ),
        clock=clock,
        wall=clock.now,
        keep_firing_for_s=240.0,
        inhibit_rules=rules,
    )


def changes(eng: AlertEngine) -> dict[str, Any]:
    ch = eng.drain_changes()
    return {
        "alerts": {k: a.to_dict() for k, a in ch.alerts.items()},
        "alerts_deleted": ch.alerts_deleted,
        "groups": {k: g.to_dict() for k, g in ch.groups.items()},
        "groups_deleted": ch.groups_deleted,
        "nflog": {k: e.to_dict() for k, e in ch.nflog.items()},
        "nflog_deleted": ch.nflog_deleted,
    }


def notes(ns: list[Any]) -> list[tuple[Any, ...]]:
    return [(n.id, n.reason, n.status, n.seq, n.alerts) for n in ns]


@pytest.mark.parametrize("seed", range(12))
def test_skipping_unchanged_groups_decides_the_same(seed: int) -> None:
    rng = random.Random(seed)
    inhibit = seed % 2 == 1
    clock = ManualClock(T0)
    fast, full = engine(clock, inhibit=inhibit), engine(clock, inhibit=inhibit)
    full._unchanged = lambda *a: False  # type: ignore[method-assign]
    skipped = 0
    unchanged = fast._unchanged

    def counting(*a: Any) -> bool:
        nonlocal skipped
        same = unchanged(*a)
        skipped += same
        return same

    fast._unchanged = counting  # type: ignore[method-assign]
    silences: list[Silence] = []
    for step in range(900):
        clock.advance(rng.choice((1.0, 5.0, 20.0)))
        now = clock.now()
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            e = rng.choice(ENTITIES)
            # Inhibition sources are in groups of their own (another alertname).
            src = inhibit and rng.random() < 0.2
            name, sev = ("ddos", "critical") if src else ("ssh", "high")
            hold = rng.choice((60, 240))
            lab = {"alertname": name, "entity": e, "severity": sev, "feed": "f"}
            for eng in (fast, full):
                eng.observe(lab, {"summary": f"{name} {e}"}, now, hold_s=hold, detected_wall=now)
        if silences and rng.random() < 0.02:  # a silence deleted before its end
            silences.pop(rng.randrange(len(silences)))
            for eng in (fast, full):
                eng.set_silences(silences)
        if rng.random() < 0.01:
            e = rng.choice(ENTITIES)
            start = now + rng.choice((0.0, 30.0))
            silences.append(
                Silence(f"s{step}", parse_matchers([f"entity={e}"]), start, start + 200)
            )
            for eng in (fast, full):
                eng.set_silences(silences)
        if rng.random() < 0.005:
            fp = rng.choice(sorted(full.alerts)) if full.alerts else None
            if fp is not None:
                acks = {fp: {"active_at": full.alerts[fp].active_at}}
                for eng in (fast, full):
                    eng.set_acks(acks)
        assert notes(fast.tick()) == notes(full.tick())
        assert changes(fast) == changes(full)
        assert fast.drain_transitions() == full.drain_transitions()
        assert {k: g.to_dict() for k, g in fast.groups.items()} == {
            k: g.to_dict() for k, g in full.groups.items()
        }
    assert skipped > 50  # the shortcut was taken, not only the full flush
