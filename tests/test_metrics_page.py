"""The demo's ``/metrics`` page as Prometheus and a reader of the README see it.

One run of ``vigil demo --follow`` (every feed, real samples): ``promtool check metrics``
finds nothing to report, every metric the README names is on the page, no label value is
empty, and Ctrl-C then stops the demo with exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port, require_binary

ROOT = Path(__file__).resolve().parents[1]
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]
#: Exported by ``vigil ingest`` (the bus producer), not by a flow.
PRODUCER_ONLY = re.compile(r"^vigil_bus_")


def _readme_metrics() -> set[str]:
    names = set(re.findall(r"\b(vigil_[a-z_]*[a-z])\b", (ROOT / "README.md").read_text()))
    return {n for n in names if not PRODUCER_ONLY.match(n)}


def test_demo_metrics_page(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "prometheus")
    port = free_port()
    log = tmp_path / "demo.log"
    with log.open("w") as fh:
        p = subprocess.Popen(
            [*VIGIL, "demo", "--follow", "--metrics-port", str(port), "--out", str(tmp_path)],
            cwd=tmp_path,
            env={**os.environ, "VIGIL_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
    try:
        deadline = time.monotonic() + 240
        while "serving metrics until interrupted" not in log.read_text():
            assert p.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo did not finish its replay"
            time.sleep(0.5)
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=page, capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), (
            lint.stdout + lint.stderr
        )[:3000]

        exported = {
            m.removesuffix("_total") for m in re.findall(r"^# TYPE (vigil_\S+)", page, re.M)
        }
        missing = {n for n in _readme_metrics() if n.removesuffix("_total") not in exported}
        assert not missing, f"named in the README, not exported by the demo: {sorted(missing)}"
        assert '=""' not in page  # an empty label value reads as a missing label in PromQL
        assert "_created" not in page
    finally:
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=60)
    assert rc == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
