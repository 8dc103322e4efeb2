"""The media flow as a user runs it: `vigil train sentiment`, the demo, the NAB figures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
AIRLINE_CSV = (
    DATA
    / "media"
    / "airline_twitter_mentions_2015-02"
    / "airline_mentions_2015-02-17_2015-02-24.csv"
)
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]


def test_train_sentiment_reports_held_out_accuracy_and_writes_a_usable_model(
    tmp_path: Path,
) -> None:
    with AIRLINE_CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:3000]
    data = tmp_path / "labelled.csv"
    with data.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "airline_sentiment"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    model = tmp_path / "m.joblib"
    r = subprocess.run(
        [*VIGIL, "train", "sentiment", "--data", str(data), "--out", str(model)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])["train_sentiment"]
    assert rep["test_rows"] == pytest.approx(0.2 * rep["rows"], abs=2)
    assert rep["accuracy"] > rep["majority_accuracy"]
    from vigil.flows.media.sentiment import ModelScorer

    label, score = ModelScorer(model).score("worst airline ever, flight cancelled again", "en")
    assert label == "negative" and score < 0


def test_train_sentiment_explains_a_file_without_labels(tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    data.write_text("a,b\n1,2\n")
    r = subprocess.run(
        [*VIGIL, "train", "sentiment", "--data", str(data), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 1 and "cannot find text/label columns" in r.stderr


def test_the_demo_includes_the_media_feed() -> None:
    from vigil.flows.cli import _demo_yaml, demo_flows

    assert "media" in demo_flows(_demo_yaml())


@pytest.mark.slow
def test_volume_detector_beats_the_windowed_gaussian_on_every_realtweets_series() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import media as bench_media  # bench/media.py

    res = bench_media.nab_tweets()
    for series, v in res["per_series"].items():
        assert v["ours"] > v["windowedGaussian"], series
    assert res["corpus"]["ours"] > res["corpus"]["windowedGaussian"]
