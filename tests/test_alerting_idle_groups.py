"""A group whose firing alert lasts for days of event time: its quiet flushes are skipped
in one go, and the reminders still come at the flush times they always came at."""

from __future__ import annotations

import pytest
from vigil.sinks.alerting.engine import AlertEngine
from vigil.sinks.alerting.routing import Route


def _engine() -> AlertEngine:
    route = Route(
        receiver="ops", group_by=("alertname",), group_wait=30, group_interval=300,
        repeat_interval=4 * 3600,
    )  # fmt: skip
    return AlertEngine(route)


@pytest.mark.parametrize(
    ("every_s", "hold_s"),
    [(600, 900), (2 * 3600, 3 * 3600)],
    ids=["evidence every 10 min", "evidence every 2 h: many quiet flushes between"],
)
def test_reminders_of_a_long_episode_keep_their_times(every_s: int, hold_s: int) -> None:
    eng = _engine()
    labels = {"alertname": "scan", "entity": "10.0.0.1", "feed": "f"}
    reasons: list[tuple[str, float]] = []
    # Evidence for two days, in batches of six hours of event time.
    t = 1000.0
    last = t
    per_batch = 6 * 3600 // every_s
    for _ in range(8):
        for _ in range(per_batch):
            eng.observe(labels, {"summary": "s"}, t, hold_s=hold_s, domain="f")
            last = t
            t += every_s
        eng.progress("f", "rules", t)
        reasons += [(n.reason, n.clock) for n in eng.tick()]
    reasons += [(n.reason, n.clock) for n in eng.finish()]
    # The flush times are 1030 + k * 300; a reminder at the first one 4 h after the last
    # notice, while the alert still fires (until the last evidence plus its hold).
    flushes = [1030.0]
    while flushes[-1] < t:
        flushes.append(flushes[-1] + 300)
    expected = [("first_notification", 1030.0)]
    for f in flushes:
        if f - expected[-1][1] > 4 * 3600 and f < last + hold_s:
            expected.append(("repeat", f))
    assert len(expected) > 5
    assert reasons[:-1] == expected
    assert reasons[-1][0] == "all_resolved"
