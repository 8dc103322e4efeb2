"""``vigil run indicators`` as a user runs it: a subprocess over real NAB series."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"


def vigil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_run_indicators_on_nab_series(tmp_path: Path) -> None:
    bad = tmp_path / "feed.jsonl"
    bad.write_text(
        '{"series": "beds", "ts": "2024-05-01T00:00:00+07:00", "value": 12}\n'
        '{"series": "beds", "ts": "2024-05-01 01:00:00", "value": 12}\n'
        '{"series": "beds", "ts": 1714525200, "value": "NaN"}\n'
        "{broken\n"
    )
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(
        f"""
indicators:
  inputs:
    - kind: file
      paths: ["{NAB}/realKnownCause/*.csv"]
      format: csv
      columns: {{series: null, ts: timestamp, value: value}}
      series_name: "nab.{{stem}}"
      tz: UTC
    - kind: file
      paths: ["{bad}"]
      format: jsonl
  rules:
    - match: "nab.nyc_taxi"
      detector: {{kind: seasonal, period: week_hour, tz: UTC, grace_period: 2}}
      threshold: 6
  # The four files are from different years and share shards: idle expiry compares a
  # series with the newest time in its shard, so keep it from forgetting live series.
  idle_ttl_s: 1.0e+9
metrics: {{enabled: false}}
alerts: {{file: {tmp_path}/alerts.jsonl}}
dead_letters: {{file: {tmp_path}/dead.jsonl}}
"""
    )
    r = vigil("run", "indicators", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alerts, r.stderr
    labels = [a["labels"] for a in alerts]
    assert {lab["feed"] for lab in labels} == {"indicators"}
    assert {lab["alertname"] for lab in labels} == {"indicator_anomaly"}
    entities = {lab["entity"] for lab in labels}
    assert "nab.ec2_request_latency_system_failure" in entities
    assert entities <= {
        "nab.ambient_temperature_system_failure",
        "nab.ec2_request_latency_system_failure",
        "nab.nyc_taxi",
        "nab.rogue_agent_key_updown",
    }
    a = next(a for a in alerts if a["labels"]["entity"].startswith("nab.ec2_request"))
    assert "vs expected" in a["annotations"]["description"]
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == [
        "bad json",
        "non-finite value",
        "timestamp without time zone",
    ]
    summary = json.loads(r.stderr.strip().splitlines()[-1])["summary"]
    assert summary["dead_lettered"] == 3
    assert (
        summary["lines"]
        == sum(len(p.read_text().splitlines()) for p in (NAB / "realKnownCause").glob("*.csv")) + 4
    )


def test_run_indicators_without_inputs_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("indicators: {}\nmetrics: {enabled: false}\n")
    r = vigil("run", "indicators", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2  # a usage mistake, like argparse's own
    assert "has no inputs for indicators (add indicators.inputs)" in r.stderr
    assert "Traceback" not in r.stderr


def test_misspelt_detector_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("indicators:\n  default: {detector: {kind: rolling_mad, windw: 5}}\n")
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 1
    assert "indicators.default.detector.rolling_mad.windw: unknown key" in r.stderr
