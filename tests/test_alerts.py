"""Tests for sinks.alerts: alert shape, payload, metrics, and AlertSink in a real dataflow."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from conftest import HttpReceiver
from prometheus_client import CollectorRegistry
from vigil.sinks.alerts import (
    ALERTS,
    METRIC_NAMES,
    NOTIFICATIONS,
    SINK_FAILURES,
    AlertSink,
    alert_from_detection,
    idempotency_key,
    webhook_payload,
)
from vigil.sinks.webhook import WebhookClient, verify_signature

from vigil.records import Detection

SECRET = b"alert-secret"
T0 = 1_700_000_000.0


def detection(**overrides: Any) -> Detection:
    fields: dict[str, Any] = {
        "kind": "ssh_brute_force",
        "entity": "203.0.113.7",
        "severity": "high",
        "ts": T0,
        "observed": 42.0,
        "threshold": 10.0,
        "summary": "42 failed SSH logins from 203.0.113.7",
        "description": "42 authentication failures in 60 s; threshold 10",
        "window_s": 60.0,
    }
    fields.update(overrides)
    return Detection(**fields)


# -- alert_from_detection --------------------------------------------------------------------


def test_alert_shape() -> None:
    alert = alert_from_detection(detection())
    assert set(alert) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
        "dedup_key",
    }
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "ssh_brute_force",
        "feed": "security",
        "entity": "203.0.113.7",
        "severity": "high",
    }
    assert alert["annotations"] == {
        "summary": "42 failed SSH logins from 203.0.113.7",
        "description": "42 authentication failures in 60 s; threshold 10",
        "observed": "42",
        "threshold": "10",
        "window_s": "60",
        # The episode's evidence: its value at the start, the newest value and its time.
        "value_at_start": "42",
        "latest_value": "42",
        "last_seen": "2023-11-14T22:13:20Z",
    }
    assert alert["startsAt"] == "2023-11-14T22:13:20Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == ""
    assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
    assert alert["dedup_key"] == f"{alert['fingerprint']}@1700000000"
    # Everything in labels and annotations is a string (Alertmanager's format).
    for part in ("labels", "annotations"):
        assert all(isinstance(v, str) for v in alert[part].values())


def test_baseline_band_and_extra_are_annotations() -> None:
    d = detection(
        kind="volume_spike",
        feed="indicators",
        entity="calls_311",
        observed=0.125,
        expected=3.5,
        lower=1.0,
        upper=6.0,
        extra=(("top_port", "22"), ("agency.name", "Transit"), ("summary", "ignored")),
    )
    ann = alert_from_detection(d)["annotations"]
    assert ann["observed"] == "0.125"
    assert (ann["expected"], ann["lower"], ann["upper"]) == ("3.5", "1", "6")
    assert ann["top_port"] == "22"
    assert ann["agency_name"] == "Transit"  # made a valid annotation name
    assert ann["summary"] == d.summary  # extra cannot override the standard annotations


def test_optional_band_absent_when_none() -> None:
    ann = alert_from_detection(detection())["annotations"]
    assert not {"expected", "lower", "upper"} & set(ann)


@pytest.mark.parametrize(
    ("value", "text"),
    [(42.0, "42"), (-3.0, "-3"), (0.1, "0.1"), (1e-7, "1e-07"), (float("inf"), "+Inf")],
)
def test_numbers_are_strings(value: float, text: str) -> None:
    assert alert_from_detection(detection(observed=value))["annotations"]["observed"] == text


def test_fractional_timestamp_and_dedup_key() -> None:
    alert = alert_from_detection(detection(ts=T0 + 0.25))
    assert alert["startsAt"] == "2023-11-14T22:13:20.25Z"
    assert alert["dedup_key"].endswith("@1700000000")


def test_fingerprint_is_identity_not_values() -> None:
    base = alert_from_detection(detection())["fingerprint"]
    # Values that change (severity, numbers, text, time) keep the identity...
    same = alert_from_detection(
        detection(severity="critical", observed=99.0, summary="other", ts=T0 + 600)
    )
    assert same["fingerprint"] == base
    # ...a different entity, kind or feed is a different alert.
    assert alert_from_detection(detection(entity="198.51.100.1"))["fingerprint"] != base
    assert alert_from_detection(detection(kind="port_scan_vertical"))["fingerprint"] != base
    assert alert_from_detection(detection(feed="indicators"))["fingerprint"] != base


def test_alert_is_deterministic() -> None:
    # A replay after a resume must produce the same alert, whatever the wall clock says.
    assert alert_from_detection(detection(), now=1.0) == alert_from_detection(detection(), now=2.0)


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), 1e300])
def test_bad_timestamp_is_a_value_error(ts: float) -> None:
    with pytest.raises(ValueError):
        alert_from_detection(detection(ts=ts))


# -- webhook_payload ---------------------------------------------------------------------------


def test_webhook_payload_v4() -> None:
    a = alert_from_detection(detection())
    b = alert_from_detection(
        detection(entity="198.51.100.1", observed=12.0, summary="12 failed SSH logins")
    )
    payload = webhook_payload([a, b], external_url="http://vigil.example")
    assert payload == {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "vigil",
        "groupLabels": {},
        "commonLabels": {"alertname": "ssh_brute_force", "feed": "security", "severity": "high"},
        "commonAnnotations": {
            "description": "42 authentication failures in 60 s; threshold 10",
            "threshold": "10",
            "window_s": "60",
            "last_seen": "2023-11-14T22:13:20Z",
        },
        "externalURL": "http://vigil.example",
        "alerts": [a, b],
    }
    orjson.dumps(payload)  # serializable as-is


def test_idempotency_key_is_order_independent_and_content_bound() -> None:
    a = alert_from_detection(detection())
    b = alert_from_detection(detection(entity="198.51.100.1"))
    assert idempotency_key([a, b]) == idempotency_key([b, a])
    assert idempotency_key([a]) != idempotency_key([a, b])
    assert re.fullmatch(r"[0-9a-f]{64}", idempotency_key([a]))


# -- metrics -----------------------------------------------------------------------------------


def test_metric_names() -> None:
    assert METRIC_NAMES == (
        "vigil_alerts_total",
        "vigil_notifications_total",
        "vigil_sink_failures_total",
    )
    assert (ALERTS, NOTIFICATIONS, SINK_FAILURES) == METRIC_NAMES


def test_two_sinks_and_workers_share_one_registry() -> None:
    registry = CollectorRegistry()
    first = AlertSink(registry=registry).build("out", 0, 2)
    second = AlertSink(registry=registry).build("out", 1, 2)
    first.write_batch([detection()])
    second.write_batch([detection()])
    first.close()
    second.close()
    labels = {"feed": "security", "kind": "ssh_brute_force", "severity": "high"}
    assert registry.get_sample_value(ALERTS, labels) == 2


# -- AlertSink in a dataflow, against the real HTTP receiver ------------------------------------


def run_flow(items: list[Any], sink: AlertSink, batch_size: int = 10) -> None:
    flow = Dataflow("alerts_test")
    stream = op.input("inp", flow, TestingSource(items, batch_size=batch_size))
    op.output("alerts_out", stream, sink)
    run_main(flow)


def factory(url: str, clients: list[WebhookClient], **kwargs: Any) -> Callable[[], WebhookClient]:
    def make() -> WebhookClient:
        kwargs.setdefault("sleep", lambda _s: None)
        client = WebhookClient(url, secret=SECRET, **kwargs)
        clients.append(client)
        return client

    return make


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


DETECTIONS = [
    detection(),
    detection(entity="198.51.100.1", observed=17.0, ts=T0 + 5),
    detection(
        kind="volume_spike",
        feed="indicators",
        entity="calls_311",
        severity="warning",
        observed=250.0,
        threshold=4.0,
        expected=120.0,
        lower=80.0,
        upper=160.0,
        ts=T0 + 10,
    ),
]


def test_sink_delivers_signed_v4_payload_and_jsonl(
    http_receiver: HttpReceiver, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    jsonl = tmp_path / "alerts.jsonl"
    seen: list[dict[str, Any]] = []
    clients: list[WebhookClient] = []
    sink = AlertSink(
        jsonl_path=str(jsonl),
        webhook_factory=factory(http_receiver.url, clients),
        registry=registry,
        on_alert=seen.append,
    )
    run_flow(DETECTIONS, sink)

    (request,) = http_receiver.wait_for(1)
    assert request.method == "POST"
    assert verify_signature(SECRET, request.headers, request.body)
    payload = request.json()
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    assert payload["receiver"] == "vigil"
    assert payload["truncatedAlerts"] == 0
    assert [a["labels"] for a in payload["alerts"]] == [
        {
            "alertname": "ssh_brute_force",
            "feed": "security",
            "entity": "203.0.113.7",
            "severity": "high",
        },
        {
            "alertname": "ssh_brute_force",
            "feed": "security",
            "entity": "198.51.100.1",
            "severity": "high",
        },
        {
            "alertname": "volume_spike",
            "feed": "indicators",
            "entity": "calls_311",
            "severity": "warning",
        },
    ]
    spike = payload["alerts"][2]["annotations"]
    assert (spike["observed"], spike["expected"], spike["lower"], spike["upper"]) == (
        "250",
        "120",
        "80",
        "160",
    )
    assert payload["alerts"][1]["startsAt"] == "2023-11-14T22:13:25Z"
    assert request.headers["idempotency-key"] == idempotency_key(payload["alerts"])

    lines = read_jsonl(jsonl)
    assert len(lines) == len(DETECTIONS)
    assert lines == payload["alerts"] == seen

    assert registry.get_sample_value(NOTIFICATIONS, {"sink": "webhook", "outcome": "ok"}) == 1
    assert (
        registry.get_sample_value(
            ALERTS, {"feed": "security", "kind": "ssh_brute_force", "severity": "high"}
        )
        == 2
    )
    assert registry.get_sample_value(SINK_FAILURES, {"sink": "webhook", "reason": "http_5xx"}) in (
        None,
        0,
    )
    # build() created the client and close() released it.
    (client,) = clients
    assert client.post(b"{}", idempotency_key="late").reason == "closed"


def test_sink_retries_503_and_receiver_gets_it_once(
    http_receiver: HttpReceiver, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    http_receiver.script([503, 503, 200])
    sink = AlertSink(
        jsonl_path=str(tmp_path / "alerts.jsonl"),
        webhook_factory=factory(http_receiver.url, []),
        registry=registry,
    )
    run_flow(DETECTIONS, sink)

    assert [r.status for r in http_receiver.requests] == [503, 503, 200]
    assert len({r.headers["idempotency-key"] for r in http_receiver.requests}) == 1
    (body,) = http_receiver.accepted
    assert len(json.loads(body)["alerts"]) == len(DETECTIONS)
    assert registry.get_sample_value(NOTIFICATIONS, {"sink": "webhook", "outcome": "ok"}) == 1
    assert (
        registry.get_sample_value(SINK_FAILURES, {"sink": "webhook", "reason": "http_5xx"}) is None
    )


def test_replayed_batch_has_same_idempotency_key(
    http_receiver: HttpReceiver, tmp_path: Path
) -> None:
    # At-least-once: a resumed dataflow replays its last epoch. The same batch must carry
    # the same key, so a receiver that de-duplicates accepts it once.
    registry = CollectorRegistry()
    for _ in range(2):
        sink = AlertSink(webhook_factory=factory(http_receiver.url, []), registry=registry)
        run_flow(DETECTIONS, sink)
    first, second = http_receiver.wait_for(2)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert len(http_receiver.accepted) == 1
    assert http_receiver.duplicates == 1


def test_receiver_down_does_not_crash_the_flow(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    http_receiver.down()
    jsonl = tmp_path / "alerts.jsonl"
    sink = AlertSink(
        jsonl_path=str(jsonl),
        webhook_factory=factory(http_receiver.url, [], max_attempts=3),
        registry=registry,
    )
    run_flow(DETECTIONS[:2], sink, batch_size=1)  # two batches, two failed deliveries

    assert (
        registry.get_sample_value(SINK_FAILURES, {"sink": "webhook", "reason": "transport_error"})
        == 2
    )
    assert (
        registry.get_sample_value(NOTIFICATIONS, {"sink": "webhook", "outcome": "transport_error"})
        == 2
    )
    # The other destinations still got every alert.
    assert len(read_jsonl(jsonl)) == 2


def test_jsonl_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    run_flow(DETECTIONS, AlertSink(jsonl_path="-", registry=CollectorRegistry()))
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["labels"]["entity"] for line in lines] == [
        "203.0.113.7",
        "198.51.100.1",
        "calls_311",
    ]


def test_jsonl_appends_one_line_per_alert_across_batches(tmp_path: Path) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    jsonl.write_text('{"earlier": true}\n')
    run_flow(
        DETECTIONS, AlertSink(jsonl_path=str(jsonl), registry=CollectorRegistry()), batch_size=1
    )
    lines = read_jsonl(jsonl)
    assert lines[0] == {"earlier": True}
    assert len(lines) == 1 + len(DETECTIONS)


def test_failures_are_counted_not_raised(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    registry = CollectorRegistry()

    def broken_callback(alert: dict[str, Any]) -> None:
        msg = "terminal gone"
        raise RuntimeError(msg)

    sink = AlertSink(
        jsonl_path=str(tmp_path / "no-such-dir" / "alerts.jsonl"),  # cannot be opened
        webhook_factory=factory(http_receiver.url, []),
        registry=registry,
        on_alert=broken_callback,
    )
    items = [detection(ts=float("nan")), *DETECTIONS]  # the first cannot become an alert
    run_flow(items, sink)

    def failures(sink_name: str, reason: str) -> float | None:
        return registry.get_sample_value(SINK_FAILURES, {"sink": sink_name, "reason": reason})

    assert failures("alerts", "invalid_detection") == 1
    assert failures("jsonl", "io_error") == 1
    assert failures("on_alert", "callback_error") == len(DETECTIONS)
    # The webhook still got the valid alerts.
    (body,) = http_receiver.accepted
    assert len(json.loads(body)["alerts"]) == len(DETECTIONS)


def test_metrics_are_labelled_by_bounded_sets_only(http_receiver: HttpReceiver) -> None:
    registry = CollectorRegistry()
    http_receiver.script([400])
    sink = AlertSink(webhook_factory=factory(http_receiver.url, []), registry=registry)
    run_flow(DETECTIONS, sink)
    allowed = {"feed", "kind", "severity", "sink", "outcome", "reason"}
    for metric in registry.collect():
        for sample in metric.samples:
            assert set(sample.labels) <= allowed
            assert "203.0.113.7" not in sample.labels.values()
    assert registry.get_sample_value(SINK_FAILURES, {"sink": "webhook", "reason": "http_4xx"}) == 1
