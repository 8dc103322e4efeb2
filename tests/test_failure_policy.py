"""One failure policy: a bug in one feed dead-letters its input, and the other feeds go on.

Each case runs the real ``vigil demo`` (all four feeds in one dataflow) in a subprocess
whose code makes one feed's core step raise on every batch, then checks what a user sees:
the run ends normally, that feed's input is in the dead-letter file under the step's id
and the exception's type, and the other feeds still raise their alerts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: feed -> (class whose method fails, method, the step id in the dead letters)
FAULTS = {
    "security": ("vigil.flows.security.rules:SecurityRules", "process", "rules"),
    "service_queues": ("vigil.flows.queues.state:QueueMonitor", "process", "queues"),
    "media": ("vigil.flows.media.analysis:MediaAnalyzer", "process", "media_analyze"),
    "indicators": (
        "vigil.flows.indicators.flow:IndicatorDetectors",
        "process",
        "indicators_detect",
    ),
}

RUN = """
import importlib, sys
mod, cls = {target!r}.split(":")
def boom(self, *a, **k):
    raise RuntimeError("injected fault")
setattr(getattr(importlib.import_module(mod), cls), {method!r}, boom)
from vigil.flows.cli import main
sys.exit(main(["demo", "--metrics-port", "0", "--out", {out!r}]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("feed", list(FAULTS))
def test_a_failing_feed_is_dead_lettered_and_the_others_go_on(feed: str, tmp_path: Path) -> None:
    target, method, step = FAULTS[feed]
    out = tmp_path / "out"
    code = RUN.format(target=target, method=method, out=str(out))
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stdout
    dead = [json.loads(x) for x in (out / "dead_letters.jsonl").read_text().splitlines()]
    mine = [d for d in dead if d["step"] == step]
    assert mine and {d["reason"] for d in mine} == {"RuntimeError"}
    alerts = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    # The failing step's detections never happened (the security feed's volume baseline is
    # a step of its own and still alerts)...
    kinds = {a["labels"]["alertname"] for a in alerts if a["labels"]["feed"] == feed}
    assert kinds <= ({"volume_anomaly"} if feed == "security" else set())
    # ...and every other feed still alerted.
    assert {a["labels"]["feed"] for a in alerts} >= set(FAULTS) - {feed}
