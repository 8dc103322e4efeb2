"""Every query of every dashboard, run by a real Prometheus scraping running Vigil processes.

Two Vigil processes are scraped, as in the compose stack:

- ``vigil demo --follow`` (the bundled logs at a speed that spreads them over ~20 s);
- ``vigil run security health`` on real SSH lines from ``../shared/datasets`` with
  unparseable lines mixed in (dead letters), the first lines repeated at the end (late
  events), and a webhook receiver that refuses the first deliveries (delivery failures),
  so the engine-health panels and the health flow's own detections have data.

Template variables are expanded with real label values, Grafana's macros with durations
that fit the run. Panel targets Grafana evaluates over the time range go through
``/api/v1/query_range`` (as Grafana sends them), instant ones and stat-style targets
through ``/api/v1/query``. Each must return data, except on the dashboards of feeds that
no running flow produces yet: those must be valid PromQL, and are listed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import HttpReceiver, PrometheusServer, Reply, free_port
from vigil.dashboards import build_all
from vigil.dashboards.core import VIGIL_JOB, metric_owners, transient_metrics
from vigil.dashboards.feeds import FEEDS
from vigil.dashboards.promql import PanelQuery, expand, label_values_query, metric_names, queries

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SSH_SAMPLE = DATASETS / "security" / "ssh_auth_loghub" / "OpenSSH_2k.log"
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]

pytestmark = pytest.mark.slow


def _start(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VIGIL_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    env.setdefault("VIGIL_WEBHOOK_SECRET", "dashboards-live")  # webhooks are always signed
    with open(log, "wb") as fh:
        return subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env
        )


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


class Prom:
    """A small client for Prometheus's HTTP API."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def _get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Any]:
        return self._get("/api/v1/query", query=expr, time=at or time.time())["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return data["result"]

    def label_values(self, selector: str, label: str) -> list[str]:
        series = self._get("/api/v1/series", **{"match[]": selector})
        return sorted({s[label] for s in series if label in s})


@pytest.fixture
def running_stack(
    prometheus_server: Callable[..., PrometheusServer],
    http_receiver: HttpReceiver,
    tmp_path: Path,
) -> Iterator[tuple[Prom, float]]:
    """Prometheus scraping two Vigil processes every second; yields (client, start time)."""
    if not SSH_SAMPLE.exists():
        pytest.skip(f"{SSH_SAMPLE} missing (the shared datasets are a sibling checkout)")
    port_a, port_b = free_port(), free_port()
    prom = prometheus_server(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": VIGIL_JOB,
                    "static_configs": [{"targets": [f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"]}],
                }
            ],
        }
    )
    t0 = time.time()
    # Input of process B: real lines, 1 in 8 unparseable, the first 40 again at the end.
    real = SSH_SAMPLE.read_text(encoding="utf-8").splitlines()
    mixed = []
    for i, line in enumerate(real):
        mixed.append(line)
        if i % 8 == 0:
            mixed.append(f"garbage line {i} without a syslog header")
    mixed += real[:40]
    src = tmp_path / "ssh_mixed.log"
    src.write_text("\n".join(mixed) + "\n", encoding="utf-8")
    http_receiver.script([Reply(400)] * 3)  # refuse the first deliveries, then accept
    cfg = {
        "security": {
            "year": 2015,
            "inputs": [{"kind": "replay", "paths": [str(src)], "format": "ssh", "speed": 1000}],
        },
        "metrics": {"host": "127.0.0.1", "port": port_b},
        "alerts": {
            "file": str(tmp_path / "b" / "alerts.jsonl"),
            "webhook": {"url": http_receiver.url + "alerts", "max_attempts": 1},
        },
        "dead_letters": {"file": str(tmp_path / "b" / "dead.jsonl")},
    }
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    procs = [
        _start(
            [*VIGIL, "demo", "--follow", "--speed", "100000", "--metrics-port", str(port_a),
             "--out", str(tmp_path / "a")],
            tmp_path / "a.log",
            tmp_path,
        ),
        _start(
            [*VIGIL, "run", "security", "health", "--config", str(tmp_path / "b.yaml")],
            tmp_path / "b.log",
            tmp_path,
        ),
    ]  # fmt: skip
    client = Prom(prom.url)
    try:
        # Ready when both processes finished their input and the health flow has reported
        # the three conditions it can see here (silence needs 5 minutes: unit-tested).
        want = {"watermark_lag", "dead_letter_ratio", "alert_delivery_failures"}
        deadline = time.monotonic() + 90
        while True:
            for i, p in enumerate(procs):
                assert p.poll() is None, (tmp_path / ("a.log", "b.log")[i]).read_text()[-3000:]
            kinds = {
                r["metric"]["kind"] for r in client.query('vigil_detections_total{feed="engine"}')
            }
            lines = client.query(f'sum by (instance) (vigil_lines_total{{job="{VIGIL_JOB}"}})')
            done = {r["metric"]["instance"]: float(r["value"][1]) for r in lines}
            finished = done.get(f"127.0.0.1:{port_a}", 0) >= 11625 and done.get(
                f"127.0.0.1:{port_b}", 0
            ) >= len(mixed)
            if want <= kinds and finished:
                break
            assert time.monotonic() < deadline, (
                f"not ready: engine detections {kinds}, lines {done}\n"
                + (tmp_path / "b.log").read_text()[-2000:]
            )
            time.sleep(1)
        time.sleep(3)  # a few more scrapes after the last change
        yield client, t0
    finally:
        client.http.close()
        for p in procs:
            _stop(p)


def _resolve_variables(prom: Prom, board: dict[str, Any], macros: dict[str, str]) -> dict[str, str]:
    """Each variable set to a real value of its label (earlier variables expanded first)."""
    values: dict[str, str] = {}
    for v in board.get("templating", {}).get("list", []):
        q = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
        lv = label_values_query(q)
        assert lv is not None, q
        selector = expand(lv[0], values, macros)
        found = prom.label_values(selector, lv[1])
        # Every real value, as Grafana expands a multi-value variable (repeated panels
        # then each hold one of them).
        # Regex-escaped, then escaped again for the PromQL string, as Grafana does.
        escaped = [re.escape(x).replace("\\", "\\\\") for x in found]
        values[v["name"]] = "|".join(escaped) if found else "no-value-yet"
    return values


def test_every_panel_query_returns_data_from_a_running_vigil(
    running_stack: tuple[Prom, float],
) -> None:
    prom, t0 = running_stack
    end = time.time()
    span = max(30, int(end - t0) + 5)
    macros = {
        "__rate_interval": "10s",
        "__interval": "2s",
        "__range": f"{span}s",
        "__range_s": str(span),
    }
    running = set(prom.label_values("vigil_last_batch_timestamp_seconds", "flow"))
    assert {"security", "health"} <= running
    if prom.query('count({__name__=~"vigil_alerting_.+"})'):
        running.add("alerting")
    owners = metric_owners()
    transient = transient_metrics()
    empty: list[str] = []
    not_running: dict[str, set[str]] = {}
    checked = 0
    for name, board in build_all().items():
        variables = _resolve_variables(prom, board, macros)
        for q in queries(board):
            expr = expand(q.expr, variables, macros)
            result = _run(prom, q, expr, t0, end)  # asserts Prometheus accepts it
            checked += 1
            if result:
                continue
            # No data is fine only where the producer is not part of this run.
            needs = {owners.get(re.sub(r"_bucket$", "", m)) for m in metric_names(q.expr)}
            needs |= {name} if name in FEEDS else set()
            missing = {n for n in needs if n is not None and n not in running}
            if metric_names(q.expr) <= transient:
                missing.add("nothing happening (transient gauge)")
            if missing:
                not_running.setdefault(name, set()).update(missing)
            else:
                empty.append(f"{name}: {q.where} {q.title!r}: {expr}")
    assert checked > 90
    assert empty == [], "queries without data:\n" + "\n".join(empty)
    print("queries without data because their flow is not in this run:", not_running)


def _run(prom: Prom, q: PanelQuery, expr: str, start: float, end: float) -> list[Any]:
    if q.where == "variable":
        return prom.query(f"count({expr})") and prom.query(expr)
    if q.instant:
        return prom.query(expr, at=end)
    return prom.query_range(expr, start, end, step=2)
