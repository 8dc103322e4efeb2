"""The queue flow gives the same results however its input is cut into batches.

The watermark of a shard moves with its own events and with the newest time of each batch
(the ``hint`` every shard gets), so a batch boundary decides when a quiet shard closes its
windows and fires its deadline timers. What a window holds, whether it is judged, and
whether a request closed at its deadline is on time must not depend on where the
boundaries fall: the same records in batches of any size give the same detections, queue
figures and dead letters. Real data: Boston 311, January 2015.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from bytewax.testing import TestingSink, TestingSource, run_main
from vigil.flows.config import parse_config
from vigil.flows.queues.calendar import WorkCalendar
from vigil.flows.queues.config import ServiceQueuesConfig
from vigil.flows.queues.flow import build_flow, make_sources
from vigil.flows.queues.records import QueueEvent
from vigil.flows.queues.state import QueueMonitor

from vigil.records import DeadLetter, Detection, QueueStats

ROOT = Path(__file__).resolve().parents[1]
BOSTON = (
    ROOT.parent
    / "shared"
    / "datasets"
    / "service_queues"
    / "boston_311_2015q1"
    / "boston_311_2015Q1.csv"
)
H = 3600.0
T0 = datetime(2024, 1, 8, 9, tzinfo=UTC).timestamp()  # a Monday, 09:00 UTC


def ev(ts: float, kind: str, rid: str, due: float | None = None) -> QueueEvent:
    return QueueEvent(ts, kind, rid, "PWD", "lights", due=due)


def replay(mon: QueueMonitor, batches: list[tuple[list[QueueEvent], float | None]]) -> list[Any]:
    out: list[Any] = []
    for events, hint in batches:
        out += mon.process(events, hint)
    return out + mon.flush()


# Boundary cases: r3 arrives exactly at the end of the 09:00 window while r1's deadline
# timer is pending; r4 is closed exactly at its deadline.
EVENTS = [
    ev(T0, "received", "r1", due=T0 + 0.5 * H),
    ev(T0 + 0.25 * H, "received", "r2"),
    ev(T0 + H, "received", "r3"),
    ev(T0 + 1.1 * H, "received", "r4", due=T0 + 2 * H),
    ev(T0 + 2 * H, "closed", "r4"),
    ev(T0 + 3.5 * H, "closed", "r2"),
]


def test_window_ends_and_deadlines_do_not_depend_on_batch_boundaries() -> None:
    cfg = ServiceQueuesConfig(warmup_s=0.0)
    one = replay(QueueMonitor(cfg, WorkCalendar("UTC")), [(EVENTS, None)])
    # One event per batch, and batches of another shard in between whose newest times
    # fall just before r3 and exactly on r4's deadline.
    cut: list[tuple[list[QueueEvent], float | None]] = []
    for e in EVENTS:
        if e.rid == "r3":
            cut.append(([], T0 + 0.75 * H))
        if e.kind == "closed" and e.rid == "r4":
            cut.append(([], T0 + 2 * H))
        cut.append(([e], e.ts))
    many = replay(QueueMonitor(cfg, WorkCalendar("UTC")), cut)
    assert many == one
    stats = [s for s in one if isinstance(s, QueueStats) and s.service == ""]
    nine, eleven = stats[0], stats[2]
    assert nine.ts == T0 + H and nine.arrivals == 2 and nine.backlog == 2  # r3 is not in it
    assert nine.breaches == 1  # r1's deadline passed at 09:30
    assert eleven.ts == T0 + 3 * H and eleven.met == 1 and eleven.completions == 1


def boston_january() -> tuple[ServiceQueuesConfig, list[Any]]:
    raw = yaml.safe_load((ROOT / "examples" / "boston311.yaml").read_text())
    raw["service_queues"]["inputs"][0]["paths"] = [str(BOSTON)]
    cfg = parse_config(raw).service_queues
    end = datetime(2015, 2, 1, tzinfo=UTC).timestamp()
    items = [x for x in make_sources(cfg)[0].load() if type(x) is not QueueEvent or x.ts < end]  # type: ignore[attr-defined]
    return cfg, items


def run(cfg: ServiceQueuesConfig, items: list[Any], batch: int) -> tuple[list[str], ...]:
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    stats: list[QueueStats] = []
    src = TestingSource(items, batch_size=batch)
    run_main(build_flow(cfg, [src], TestingSink(dets), TestingSink(dead), TestingSink(stats)))
    # Processing-time quantiles come from randomized sketches: left out.
    exact = [repr(dataclasses.replace(s, p50_s=0.0, p90_s=0.0, p99_s=0.0)) for s in stats]
    return sorted(map(repr, dets)), sorted(exact), sorted(map(repr, dead))


@pytest.mark.skipif(not BOSTON.exists(), reason="../shared/datasets not present")
def test_boston_in_batches_of_any_size_gives_the_same_episodes() -> None:
    cfg, items = boston_january()
    dets, stats, dead = run(cfg, items, 2000)
    assert len(dets) > 50 and len(stats) > 10_000
    # A small, odd batch size puts boundaries everywhere, quiet shards close windows by
    # the batch's newest time: the episodes (and their start, "since") are the same.
    assert run(cfg, items, 37) == (dets, stats, dead)
