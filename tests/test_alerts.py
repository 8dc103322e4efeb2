"""Tests for sinks.alerts: alert shape, payload, metrics; the pipeline's JSON lines file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from vigil.sinks.alerting.service import AlertsFile
from vigil.sinks.alerts import (
    alert_from_detection,
    idempotency_key,
    webhook_payload,
)

from vigil.records import Detection

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


# -- the alerting pipeline's JSON lines file -------------------------------------------------
# Delivery (signed v4 payloads, retries under one idempotency key, a receiver that is down,
# on_alert) is tested against the real pipeline in test_alerting_delivery.py.


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


def test_alerts_file_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    out = AlertsFile("-")
    out.write([alert_from_detection(d) for d in DETECTIONS])
    out.close()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["labels"]["entity"] for line in lines] == [
        "203.0.113.7",
        "198.51.100.1",
        "calls_311",
    ]


def test_alerts_file_appends_one_line_per_alert_across_batches(tmp_path: Path) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    jsonl.write_text('{"earlier": true}\n')
    out = AlertsFile(str(jsonl))
    for d in DETECTIONS:
        out.write([alert_from_detection(d)])
    out.close()
    lines = read_jsonl(jsonl)
    assert lines[0] == {"earlier": True}
    assert len(lines) == 1 + len(DETECTIONS)
