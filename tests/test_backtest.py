"""``vigil backtest`` on real NAB series: the same code path as the live flow, and its outputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bytewax.testing import TestingSink, run_main
from vigil.flows.evaluation.indicators import (
    inputs_for,
    label_key,
    load_labels,
    read_feedback,
    run_backtest,
)
from vigil.flows.indicators.config import IndicatorsConfig
from vigil.flows.indicators.flow import build_flow
from vigil.sources.files import FileTailSource

from vigil.records import Detection

NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"
LATENCY = NAB / "realKnownCause" / "ec2_request_latency_system_failure.csv"
JUMPS = NAB / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
WINDOWS = NAB / "dev_combined_windows.json"


def test_backtest_raises_exactly_the_alerts_of_the_live_flow(tmp_path: Path) -> None:
    cfg = IndicatorsConfig()
    summary = run_backtest(cfg, [LATENCY], out=None)
    # The live flow, as `vigil run indicators` builds it, over the same file.
    live: list[Detection] = []
    (inp,) = inputs_for(cfg, [LATENCY])
    flow = build_flow(
        cfg,
        [(FileTailSource([str(LATENCY)], "csv"), inp)],
        TestingSink(live),
        TestingSink([]),
        TestingSink([]),
    )
    run_main(flow)
    written = run_backtest(cfg, [LATENCY], out=tmp_path, plots=False)
    with (tmp_path / "ec2_request_latency_system_failure.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert summary["alerts"] == written["alerts"] == len(live) > 0
    assert [float(r["ts"]) for r in rows if r["alert"] == "1"] == [d.ts for d in live]


def test_outputs_and_grades_against_nab_windows(tmp_path: Path) -> None:
    s = run_backtest(IndicatorsConfig(), [LATENCY, JUMPS], labels=WINDOWS, out=tmp_path)
    assert s["series"] == 2 and s["labelled_series"] == 2 and s["windows"] == 4
    assert s["points"] == 4032 * 2
    assert 0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1
    assert set(s["nab"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    for name in ("ec2_request_latency_system_failure", "art_daily_jumpsup"):
        assert (tmp_path / f"{name}.png").stat().st_size > 20_000
        with (tmp_path / f"{name}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 4032
        assert set(rows[0]) >= {"timestamp", "value", "expected", "lower", "upper", "score",
                                "flagged", "alert", "in_window"}  # fmt: skip
        assert any(r["in_window"] == "1" for r in rows)
    assert json.loads((tmp_path / "summary.json").read_text())["alerts"] == s["alerts"]


def test_labels_as_csv_and_series_filter(tmp_path: Path) -> None:
    labels = tmp_path / "w.csv"
    labels.write_text(
        "series,start,end\n"
        "ec2_request_latency_system_failure,2014-03-18 00:00:00,2014-03-19 12:00:00\n"
    )
    s = run_backtest(
        IndicatorsConfig(), [NAB / "realKnownCause"], labels=labels, series="ec2_*", out=None
    )
    assert [r["series"] for r in s["per_series"]] == ["ec2_request_latency_system_failure"]
    assert s["windows"] == 1 and s["windows_detected"] == 1
    assert "nab" not in s  # NAB scores need NAB windows


def test_feedback_confirms_incidents_and_tracks_rejected_alerts(tmp_path: Path) -> None:
    first = run_backtest(IndicatorsConfig(), [LATENCY], out=None)
    assert first["per_series"][0]["alerts"] >= 2
    scores = run_backtest(IndicatorsConfig(), [LATENCY], out=tmp_path, plots=False)
    with (tmp_path / "ec2_request_latency_system_failure.csv").open() as f:
        alerts = [float(r["ts"]) for r in csv.DictReader(f) if r["alert"] == "1"]
    fb = tmp_path / "fb.jsonl"
    fb.write_text(
        json.dumps({"series": "ec2_request_latency_system_failure", "ts": alerts[0],
                    "verdict": "false_positive"}) + "\n"
        + json.dumps({"entity": "ec2_request_latency_system_failure", "ts": alerts[1],
                      "verdict": "true_positive"}) + "\n"
    )  # fmt: skip
    s = run_backtest(IndicatorsConfig(), [LATENCY], feedback=fb, out=None)
    assert s["rejected_alerts_still_raised"] == 1
    assert s["windows"] == 1 and s["windows_detected"] == 1
    assert scores["alerts"] == s["alerts"]


def test_label_helpers() -> None:
    wins = load_labels(WINDOWS)
    assert len(wins) == 29 and sum(map(len, wins.values())) == 61
    assert label_key("nyc_taxi", wins) == "realKnownCause/nyc_taxi.csv"
    fb = read_feedback(
        [{"series": "a", "start": 0, "end": 10, "verdict": "true_positive"}], 5, "UTC"
    )
    assert fb.confirmed == {"a": [(0.0, 10.0)]}


@pytest.mark.slow
def test_cli_backtest_on_nab_dev(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(
        "indicators:\n  default: {threshold: 6, detector: {kind: ewma_zscore, alpha: 0.01}}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", "backtest", "--config", str(cfg),
         "--data", str(NAB / "realKnownCause"), str(NAB / "realAWSCloudwatch"),
         "--labels", str(WINDOWS), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "precision" in r.stdout and "recall" in r.stdout and "NAB scores" in r.stdout
    summary = json.loads(r.stderr.strip().splitlines()[-1])["summary"]
    assert summary["series"] == 12 and summary["windows"] == 29
    assert summary["alerts"] > 0 and summary["recall"] > 0.3
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(pngs) == 12 and "nyc_taxi.png" in pngs


def test_cli_backtest_reports_missing_data(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", "backtest", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2 and "no indicator data" in r.stderr
