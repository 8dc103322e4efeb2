"""The health flow: each condition, re-emission at most once a minute, the bytewax source."""

from __future__ import annotations

import itertools
import time

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main
from prometheus_client import CollectorRegistry, Counter
from vigil.flows.feed import get_feed
from vigil.flows.health.config import HealthConfig
from vigil.flows.health.flow import (
    DEAD_LETTER_RATIO,
    DELIVERY_FAILURES,
    SOURCE_SILENT,
    WATERMARK_LAG,
    HealthMonitor,
    HealthSource,
    Totals,
    build,
    read_totals,
)
from vigil.sinks.prometheus import (
    ALERTING_DELIVERIES,
    SINK_FAILURES,
    FlowMetrics,
    MetricsSink,
    get_or_create,
)

from vigil.records import Detection


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _monitor(cfg: HealthConfig, totals: list[Totals], clock: Clock) -> HealthMonitor:
    return HealthMonitor(cfg, lambda: totals[0], now=clock)


def _kinds(dets: list[Detection]) -> list[tuple[str, str]]:
    return sorted((d.kind, d.entity) for d in dets)


def test_source_silent_per_source_and_rearmed_when_lines_return() -> None:
    clock = Clock()
    lines = {("security", "ssh", "parsed"): 10.0, ("security", "zeek", "parsed"): 5.0}
    totals = [Totals(lines=dict(lines))]
    mon = _monitor(HealthConfig(silence_s=60, watermark_lag_s=None), totals, clock)
    assert mon.check() == []
    clock.t += 30
    lines[("security", "zeek", "parsed")] = 6.0  # zeek keeps talking, ssh does not
    totals[0] = Totals(lines=dict(lines))
    assert mon.check() == []
    clock.t += 31
    (d,) = mon.check()
    assert (d.kind, d.entity, d.feed, d.threshold) == (SOURCE_SILENT, "security/ssh", "engine", 60)
    assert d.observed >= 60
    lines[("security", "ssh", "parsed")] = 11.0  # ssh is back: cleared
    totals[0] = Totals(lines=dict(lines))
    clock.t += 5
    assert mon.check() == []


def test_repeats_at_most_once_a_minute_while_it_holds() -> None:
    clock = Clock()
    totals = [Totals(event_time={"security": clock.t - 10_000})]
    mon = _monitor(HealthConfig(watermark_lag_s=600), totals, clock)
    seen = []
    for _ in range(25):  # 25 checks, 5 s apart = 120 s
        seen += [clock.t for d in mon.check() if d.kind == WATERMARK_LAG]
        clock.t += 5
    assert len(seen) == 3  # at 0 s, 60 s, 120 s
    assert all(b - a >= 60 for a, b in itertools.pairwise(seen))


def test_watermark_lag_under_the_bound_is_quiet() -> None:
    clock = Clock()
    totals = [Totals(event_time={"security": clock.t - 100})]
    assert _monitor(HealthConfig(watermark_lag_s=600), totals, clock).check() == []


def test_dead_letter_ratio_over_the_window_with_a_minimum_of_lines() -> None:
    clock = Clock()
    totals = [Totals()]
    cfg = HealthConfig(dead_letter_ratio=0.05, min_lines=100, window_s=300, silence_s=None)
    mon = _monitor(cfg, totals, clock)
    clock.t += 5
    totals[0] = Totals(lines={("s", "ssh", "parsed"): 50.0, ("s", "ssh", "dead_lettered"): 10.0})
    assert mon.check() == []  # 60 lines: too few to judge
    clock.t += 5
    totals[0] = Totals(lines={("s", "ssh", "parsed"): 180.0, ("s", "ssh", "dead_lettered"): 20.0})
    (d,) = mon.check()
    assert (d.kind, d.entity) == (DEAD_LETTER_RATIO, "s")
    assert d.observed == 0.1
    # Ten minutes of clean lines later, the old dead letters are out of the window.
    for _ in range(120):
        clock.t += 5
        n = totals[0].lines[("s", "ssh", "parsed")] + 10
        totals[0] = Totals(lines={("s", "ssh", "parsed"): n, ("s", "ssh", "dead_lettered"): 20.0})
        last = mon.check()
    assert last == []


def test_delivery_failures_in_the_window() -> None:
    clock = Clock()
    totals = [Totals(failures={"webhook": 0.0})]
    mon = _monitor(HealthConfig(delivery_failures=2, window_s=300), totals, clock)
    clock.t += 5
    totals[0] = Totals(failures={"webhook": 1.0})
    assert mon.check() == []
    clock.t += 5
    totals[0] = Totals(failures={"webhook": 2.0})
    assert _kinds(mon.check()) == [(DELIVERY_FAILURES, "webhook")]
    clock.t += 400  # no new failure for longer than the window
    assert mon.check() == []


def test_read_totals_from_the_real_sink_metrics() -> None:
    r = CollectorRegistry()
    m = FlowMetrics("security", registry=r)
    m.lines.labels("security", "ssh", "parsed").inc(7)
    m.lines.labels("security", "ssh", "dead_lettered").inc(2)
    m.event_time.labels("security").set(123.0)
    # The alert sink's failure counter, registered the way sinks.alerts registers it.
    failures = get_or_create(Counter, SINK_FAILURES, "x", ("sink", "reason"), r)
    failures.labels("webhook", "http_500").inc(2)
    failures.labels("webhook", "timeout").inc(1)
    # The alerting pipeline's delivery attempts: only those not delivered are failures.
    deliveries = get_or_create(
        Counter, ALERTING_DELIVERIES, "x", ("receiver", "kind", "outcome", "reason"), r
    )
    deliveries.labels("oncall", "webhook", "delivered", "ok").inc(5)
    deliveries.labels("oncall", "webhook", "retried", "http_5xx").inc(2)
    deliveries.labels("oncall", "webhook", "dead_lettered", "http_4xx").inc(1)
    t = read_totals(r)
    assert t.lines == {
        ("security", "ssh", "parsed"): 7.0,
        ("security", "ssh", "dead_lettered"): 2.0,
    }
    assert t.event_time == {"security": 123.0}
    assert t.failures == {"webhook": 3.0, "oncall": 3.0}


def test_health_source_in_a_dataflow_emits_engine_detections_and_counts_them() -> None:
    r = CollectorRegistry()
    old = time.time() - 3600
    totals = Totals(event_time={"security": old})
    cfg = HealthConfig(interval_s=0.02, watermark_lag_s=600, repeat_s=0.05)
    out: list[Detection] = []
    dead: list[object] = []
    metrics = FlowMetrics("health", registry=r)
    flow = Dataflow("health_test")
    res = build(flow, HealthSource(cfg, lambda: totals, ticks=8), MetricsSink(metrics))
    op.output("dets", res.detections, TestingSink(out))
    op.output("dead", res.dead, TestingSink(dead))
    t0 = time.monotonic()
    run_main(flow)
    assert time.monotonic() - t0 < 5
    assert out, "the lag condition must be reported"
    assert {(d.kind, d.entity, d.feed) for d in out} == {(WATERMARK_LAG, "security", "engine")}
    assert 2 <= len(out) <= 8  # repeated while it holds, not on every tick of 20 ms
    assert dead == []
    labels = {"feed": "engine", "kind": WATERMARK_LAG, "severity": "high"}
    assert r.get_sample_value("vigil_detections_total", labels) == len(out)


def test_registered_as_a_feed() -> None:
    assert get_feed("health").config is HealthConfig
