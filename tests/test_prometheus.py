"""Flow metrics on a fresh registry, as Prometheus would scrape them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from vigil.sinks.prometheus import FlowMetrics

from vigil.records import DeadLetter, Detection, SeriesPoint, Tally


def det(entity: str, observed: float, kind: str = "ssh_brute_force") -> Detection:
    return Detection(
        kind=kind,
        entity=entity,
        severity="high",
        ts=1.0,
        observed=observed,
        threshold=5,
        summary="s",
        description="d",
    )


def test_lines_add_up_per_format_and_outcome() -> None:
    reg = CollectorRegistry()
    m = FlowMetrics("security", registry=reg)
    m.record(
        [
            Tally("parse", lines={("ssh", "parsed"): 7, ("ssh", "dead_lettered"): 2}),
            DeadLetter("parse", "bad syslog header", "x"),
            DeadLetter("parse", "bad syslog header", "y"),
        ]
    )
    get = reg.get_sample_value
    assert get("vigil_lines_total", {"flow": "security", "format": "ssh", "outcome": "parsed"}) == 7
    assert (
        get(
            "vigil_dead_letters_total",
            {"flow": "security", "step": "parse", "reason": "bad syslog header"},
        )
        == 2
    )


def test_top_offenders_stay_a_bounded_label_set() -> None:
    reg = CollectorRegistry()
    m = FlowMetrics("security", registry=reg, top_k=3)
    for i in range(50):
        m.record([det(f"192.0.2.{i}", observed=5 + i)])
    text = generate_latest(reg).decode()
    rows = [ln for ln in text.splitlines() if ln.startswith("vigil_top_offender_weight{")]
    assert len(rows) == 3  # never more than top_k label sets, however many offenders
    assert 'entity="192.0.2.49"' in text and "rank=" not in text  # topk() ranks, not a label
    assert 'entity="192.0.2.0"' not in text


def test_series_gauges_show_the_newest_point_with_its_band() -> None:
    reg = CollectorRegistry()
    m = FlowMetrics("security", registry=reg)
    m.record(
        [
            SeriesPoint("security", "ssh.events", 60.0, 3, 2.5, 1.0, 4.0, 0.5),
            SeriesPoint("security", "ssh.events", 120.0, 9, 2.6, 1.1, 4.1, 6.2),
        ]
    )
    lab = {"feed": "security", "series": "ssh.events"}
    assert reg.get_sample_value("vigil_series_value", lab) == 9
    assert reg.get_sample_value("vigil_series_upper", lab) == 4.1
    assert reg.get_sample_value("vigil_series_score", lab) == 6.2


def test_two_sinks_share_one_registry() -> None:
    reg = CollectorRegistry()
    a, b = FlowMetrics("security", registry=reg), FlowMetrics("media", registry=reg)
    a.record([det("192.0.2.1", 5)])
    b.record([det("x", 5, kind="mention_surge")])
    assert (
        reg.get_sample_value(
            "vigil_detections_total",
            {"feed": "security", "kind": "mention_surge", "severity": "high"},
        )
        == 1
    )


def test_detector_latency_is_a_histogram_per_flow_and_step() -> None:
    reg = CollectorRegistry()
    m = FlowMetrics("security", registry=reg)
    m.record([Tally("rules", gauges={"seconds": 0.0003}), Tally("rules", gauges={"seconds": 0.2})])
    lab = {"flow": "security", "step": "rules"}
    assert reg.get_sample_value("vigil_detector_seconds_count", lab) == 2
    assert reg.get_sample_value("vigil_detector_seconds_bucket", {**lab, "le": "0.001"}) == 1
