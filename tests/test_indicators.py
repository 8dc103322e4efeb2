"""The indicator flow, with bytewax.testing sources and sinks: one behaviour per test."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import CollectorRegistry
from vigil.flows.indicators import flow as ind
from vigil.flows.indicators.config import IndicatorInput, IndicatorsConfig
from vigil.flows.indicators.flow import (
    CappedSeriesSink,
    IndicatorDetectors,
    IndicatorPoint,
    SeriesExpired,
    build_flow,
)
from vigil.sinks.prometheus import SERIES_EXPECTED, SERIES_VALUE, FlowMetrics, MetricsSink

from vigil.records import DeadLetter, Detection, RawLine, SeriesPoint

JSONL = IndicatorInput(paths=("mem",), format="jsonl")
T0 = 1_714_521_600.0  # 2024-05-01 00:00 UTC


def config(**kw: Any) -> IndicatorsConfig:
    base: dict[str, Any] = {
        "default": {
            "detector": {"kind": "ewma_zscore", "alpha": 0.1, "grace_period": 10},
            "threshold": 5,
            "warmup": 10,
        }
    }
    base.update(kw)
    return IndicatorsConfig.model_validate(base)


def line(series: str, i: int, value: Any, **extra: Any) -> RawLine:
    rec = {"series": series, "ts": T0 + 3600 * i, "value": value, **extra}
    return RawLine("jsonl", "mem", json.dumps(rec))


def normal(series: str, n: int, level: float = 100.0, start: int = 0) -> list[RawLine]:
    return [line(series, start + i, level + (i % 5) - 2) for i in range(n)]


def run(
    cfg: IndicatorsConfig,
    items: list[Any],
    inp: IndicatorInput = JSONL,
    **kw: Any,
) -> tuple[list[Detection], list[DeadLetter], list[Any]]:
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    tele: list[Any] = []
    flow = build_flow(
        cfg,
        [(TestingSource(items, batch_size=kw.pop("batch_size", 7)), inp)],
        TestingSink(dets),
        TestingSink(dead),
        TestingSink(tele),
    )
    run_main(flow, **kw)
    return dets, dead, tele


def test_spike_is_flagged_with_expected_and_band() -> None:
    dets, dead, tele = run(config(), [*normal("beds", 40), line("beds", 40, 160.0)])
    assert dead == []
    assert [(d.feed, d.kind, d.entity, d.observed) for d in dets] == [
        ("indicators", "indicator_anomaly", "beds", 160.0)
    ]
    d = dets[0]
    assert d.lower is not None and d.upper is not None and d.expected is not None
    assert d.lower < d.expected < d.upper < 160.0
    assert d.ts == T0 + 3600 * 40
    assert "vs expected" in d.description and "band" in d.description
    points = [p for p in tele if isinstance(p, SeriesPoint)]
    assert points[-1].series == "beds" and points[-1].value == 160.0
    assert points[-1].score >= 5


def test_no_alert_while_warming_up() -> None:
    # A spike at the 5th value: the series' baseline has not warmed up (warmup 10).
    items = [*normal("beds", 5), line("beds", 5, 1e6), *normal("beds", 5, start=6)]
    dets, _, _ = run(config(), items)
    assert dets == []


def test_warming_series_can_fall_back_to_the_group() -> None:
    cfg = config(
        default={
            "detector": {"kind": "ewma_zscore", "alpha": 0.1, "grace_period": 10},
            "threshold": 5,
            "warmup": 10,
            "fallback": "group",
            "match": "*",
        },
        shards=1,
    )
    items = [*normal("clinic.a", 30), line("clinic.b", 30, 1e6)]
    dets, _, _ = run(cfg, items)
    assert [d.entity for d in dets] == ["clinic.b"]  # judged by the group's baseline


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "bad json"),
        ("[1, 2]", "not an object"),
        ('{"ts": 1714521600, "value": 1}', "missing field: series"),
        ('{"series": "a", "value": 1}', "missing field: ts"),
        ('{"series": "a", "ts": 1714521600}', "missing field: value"),
        ('{"series": "a", "ts": 1714521600, "value": "ten"}', "bad number"),
        ('{"series": "a", "ts": 1714521600, "value": "NaN"}', "non-finite value"),
        ('{"series": "a", "ts": 1714521600, "value": "inf"}', "non-finite value"),
        ('{"series": "a", "ts": "yesterday", "value": 1}', "bad timestamp"),
        ('{"series": "a", "ts": "2024-05-01 08:00:00", "value": 1}', "timestamp without time zone"),
        ('{"series": "a", "ts": 1714521600, "value": 1, "labels": [1]}', "bad labels"),
    ],
)
def test_each_bad_record_is_dead_lettered_with_a_stable_reason(text: str, reason: str) -> None:
    items = [RawLine("jsonl", "mem", text), line("a", 0, 1.0)]
    _dets, dead, tele = run(config(), items)
    assert [(d.step, d.reason, d.payload) for d in dead] == [("indicators_parse", reason, text)]
    assert reason in ind.REASONS
    # The good record after it was processed, and the bad one counted for the metric.
    assert [p.series for p in tele if isinstance(p, SeriesPoint)] == ["a"]
    assert sum(t.lines.get(("jsonl", "dead_lettered"), 0) for t in tele if hasattr(t, "lines")) == 1


def test_over_long_line_is_dead_lettered() -> None:
    _dets, dead, _ = run(config(), [RawLine("jsonl", "mem", "{...", oversize=True)])
    assert [d.reason for d in dead] == ["line too long"]


def test_series_are_kept_separate() -> None:
    # A busy and a quiet series, interleaved, on one shard: 160 is usual for the busy one,
    # and an alert for the quiet one.
    items: list[Any] = []
    for i in range(40):
        items += [line("busy", i, 160.0 + (i % 5)), line("quiet", i, 10.0 + (i % 5) / 5)]
    items += [line("busy", 40, 162.0), line("quiet", 40, 160.0)]
    dets, _, tele = run(config(shards=1), items)
    assert [d.entity for d in dets] == ["quiet"]
    last = {p.series: p for p in tele if isinstance(p, SeriesPoint)}
    assert last["busy"].expected > 150 and last["quiet"].expected < 20


def test_first_matching_rule_wins_then_the_default() -> None:
    cfg = config(
        rules=[
            {"match": "edoc.*", "direction": "down", "threshold": 5, "warmup": 10,
             "detector": {"kind": "ewma_zscore", "alpha": 0.1, "grace_period": 10}},
            {"match": "edoc.time", "threshold": 1000,
             "detector": {"kind": "static_threshold", "upper": 1}},
        ]
    )  # fmt: skip
    items = [*normal("edoc.time", 40), line("edoc.time", 40, 500.0)]  # up: rule 1 ignores it
    items += [*normal("other", 40), line("other", 40, 500.0)]  # default: both directions
    dets, _, _ = run(cfg, items)
    assert [d.entity for d in dets] == ["other"]
    det = IndicatorDetectors(cfg)
    assert [det.rule_index(s) for s in ("edoc.time", "edoc.x", "health")] == [0, 0, 2]


def test_alert_repeats_at_most_once_per_realert_interval() -> None:
    # 40 normal hours, then 6 anomalous hours: with realert_s = 3 h, alerts at hours 40
    # and 43; then it clears and a new episode alerts at once.
    cfg = config(
        realert_s=3 * 3600.0,
        default={"detector": {"kind": "static_threshold", "upper": 1000}, "threshold": 1,
                 "warmup": 0},
    )  # fmt: skip
    items = [*normal("q", 40)] + [line("q", 40 + i, 1e6) for i in range(6)]
    items += [line("q", 46, 100.0), line("q", 47, 1e7)]
    dets, _, _ = run(cfg, items)
    assert [(d.ts - T0) / 3600 for d in dets] == [40, 43, 47]


def test_csv_with_column_mapping_labels_and_configured_zone() -> None:
    inp = IndicatorInput(
        paths=("mem",),
        format="csv",
        columns={"series": "indicator", "ts": "time", "value": "v", "labels": ["district"]},
        tz="Asia/Ho_Chi_Minh",
    )
    rows = ["time,indicator,v,district"]
    rows += [
        f"2024-05-{1 + i // 24:02d} {i % 24:02d}:00:00,beds,{100 + i % 3},D1" for i in range(40)
    ]
    rows += ["2024-05-02 16:00:00,beds,400,D1", "2024-05-02 17:00:00,beds"]
    items = [RawLine("csv", "mem:beds.csv", r) for r in rows]
    dets, dead, _ = run(config(), items, inp)
    assert [d.reason for d in dead] == ["missing field: value"]
    assert [d.entity for d in dets] == ["beds"]
    assert dets[0].ts == 1714640400.0  # 16:00 at UTC+7
    assert ("district", "D1") in dets[0].extra


def test_csv_series_named_after_the_file(tmp_path: Path) -> None:
    from vigil.sources.files import FileTailSource

    f = tmp_path / "nyc_taxi.csv"
    f.write_text(
        "timestamp,value\n"
        + "".join(f"2014-07-01 {h:02d}:00:00,{100 + h % 3}\n" for h in range(20))
    )
    inp = IndicatorInput(paths=(str(f),), format="csv", columns={"series": None,
                         "ts": "timestamp"}, tz="UTC")  # fmt: skip
    tele: list[Any] = []
    flow = build_flow(
        config(),
        [(FileTailSource([str(f)], "csv"), inp)],
        TestingSink([]),
        TestingSink([]),
        TestingSink(tele),
    )
    run_main(flow)
    assert {p.series for p in tele if isinstance(p, SeriesPoint)} == {"nyc_taxi"}


def test_recovery_keeps_the_learned_baseline(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    items: list[Any] = [*normal("beds", 40), TestingSource.ABORT(), line("beds", 40, 160.0)]
    dets: list[Detection] = []
    tele: list[Any] = []
    flow = build_flow(
        config(),
        [(TestingSource(items, batch_size=5), JSONL)],
        TestingSink(dets),
        TestingSink([]),
        TestingSink(tele),
    )
    run_main(flow, epoch_interval=timedelta(0), recovery_config=rc)
    assert dets == []
    before = [p for p in tele if isinstance(p, SeriesPoint)][-1]
    run_main(flow, epoch_interval=timedelta(0), recovery_config=rc)
    # The spike right after the restart is judged by the baseline learned before it
    # (an empty baseline would still be warming up and raise nothing).
    assert [d.entity for d in dets] == ["beds"]
    after = [p for p in tele if isinstance(p, SeriesPoint)][-1]
    assert after.value == 160.0
    assert abs(after.expected - before.expected) < 2.0


def test_idle_series_expire_and_memory_is_bounded() -> None:
    cfg = config(idle_ttl_s=86400.0, max_series_per_shard=3)
    det = IndicatorDetectors(cfg)
    out = det.process([IndicatorPoint(f"s{i}", T0 + i, 1.0) for i in range(5)])
    assert [o.series for o in out if isinstance(o, SeriesExpired)] == ["s0", "s1"]
    assert len(det) == 3
    out = det.process([IndicatorPoint("s4", T0 + 2 * 86400, 1.0)])
    assert sorted(o.series for o in out if isinstance(o, SeriesExpired)) == ["s2", "s3"]
    assert len(det) == 1


def test_snapshot_restores_into_a_fresh_shard() -> None:
    import pickle

    cfg = config()
    a = IndicatorDetectors(cfg)
    a.process([IndicatorPoint("x", T0 + 60 * i, 10.0 + i % 3) for i in range(30)])
    b = IndicatorDetectors(cfg)
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    p = [IndicatorPoint("x", T0 + 60 * 31, 50.0)]
    assert a.process(p, every_point=True) == b.process(p, every_point=True)


def test_exported_series_are_capped_and_expired_gauges_removed() -> None:
    reg = CollectorRegistry()
    m = FlowMetrics("indicators", registry=reg)
    sink = CappedSeriesSink(MetricsSink(m), max_series=2)
    part = sink.build("out", 0, 1)
    pts = [SeriesPoint("indicators", f"s{i}", T0, float(i), 1.0, 0.0, 2.0, 0.5) for i in range(3)]
    part.write_batch(pts)
    got = [reg.get_sample_value(SERIES_VALUE, {"feed": "indicators", "series": f"s{i}"})
           for i in range(3)]  # fmt: skip
    assert got == [0.0, 1.0, None]
    assert sink.dropped == 1
    part.write_batch([SeriesExpired("s0"), pts[2]])
    assert reg.get_sample_value(SERIES_EXPECTED, {"feed": "indicators", "series": "s0"}) is None
    assert reg.get_sample_value(SERIES_VALUE, {"feed": "indicators", "series": "s2"}) == 2.0
