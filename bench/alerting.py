"""Benchmark of the alerting pipeline: alerts per second through grouping, routing and the
Redis outbox, and delivery latency from detection to the receiver's 200.

One command, nothing else running::

    python bench/alerting.py [--alerts 5000] [--paced 400] [--rate 100]

It starts its own ``redis-server`` on a free port and a local HTTP receiver, then:

1. **burst**: ``--alerts`` detections, each a new alert in its own group
   (``group_by: [alertname, entity]``, ``group_wait: 0``), fed in batches of 500 as fast as
   possible; measured until the receiver has answered 200 to every notification
   (``alerts_per_s``), and how fast the engine + Redis state + outbox accept them
   (``ingest_alerts_per_s``);
2. **paced**: ``--paced`` detections at ``--rate`` per second; latency of each from the
   moment it is handed to the pipeline to the receiver's 200 (``latency_p50_s``,
   ``latency_p99_s``);
3. **baseline**, in the same run: a plain loop POSTing the same alerts directly (one
   Alertmanager-v4 payload each, one keep-alive httpx connection, no state, no outbox);
4. **alertmanager** (when installed): the same alerts through a real Alertmanager, measured
   the same way (``alertmanager_alerts_per_s``, ``ratio_to_alertmanager``).

Same workload and same receiver for every tool: one notification (webhook POST) per group,
answered by one receiver process (``ThreadingHTTPServer`` with a listen backlog of 1024:
with Python's default of 5, the connections Alertmanager opens for a burst lost SYNs and
waited for TCP's 1 s retransmit, which measured the receiver, not Alertmanager).

What each guarantees when it answers:

- **Vigil** commits the alert state, the notification log and the notification itself (its
  outbox item) to Redis in one ``MULTI``/``EXEC`` before ``observe`` returns, and deletes an
  item only after the receiver's ``2xx``: a SIGKILL of the process at any point loses no
  notification (it is sent again, with the same ``Idempotency-Key``, after the restart);
  with Redis AOF, neither does a Redis crash. Each POST is HMAC-SHA256 signed.
- **Alertmanager** keeps alerts and pending notifications in memory and snapshots its
  notification log (and silences) to disk every 15 minutes: a SIGKILL loses the alerts
  it had accepted until Prometheus sends them again, and may repeat notifications sent
  since the last snapshot. Webhooks are not signed.

It prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import orjson
import redis
from prometheus_client import CollectorRegistry
from vigil.sinks.alerting.delivery import WebhookIntegration
from vigil.sinks.alerting.engine import AlertEngine, HybridClock
from vigil.sinks.alerting.outbox import RedisOutbox, RetryPolicy
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.service import AlertingService
from vigil.sinks.alerting.store import RedisStore
from vigil.sinks.alerts import alert_from_detection, webhook_payload

from vigil.records import Detection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_RECEIVER = r"""
import http.server, sys, threading, time, orjson
seen = {}
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        now = time.time()
        data = orjson.loads(body)
        with lock:
            for a in data["alerts"]:
                seen.setdefault(a["labels"]["entity"], now)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        with lock:
            body = orjson.dumps(seen)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # the default listen backlog (5) drops SYNs of a burst
    daemon_threads = True
srv = S(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


class Receiver:
    """The webhook receiver, in a process of its own (in the bench's process it would
    compete with Vigil's threads for the GIL, and not with Alertmanager's): stamps the
    arrival of each entity's first notification with its own clock."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{port}/hook"
        self._client = httpx.Client(timeout=10)
        self.seen: dict[str, float] = {}

    def refresh(self) -> dict[str, float]:
        self.seen = orjson.loads(self._client.get(self.url).content)
        return self.seen

    def wait(self, entities: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if entities <= self.refresh().keys():
                return True
            time.sleep(0.02)
        return False

    def last_arrival(self, entities: list[str]) -> float:
        """Wall time the last of ``entities`` arrived (the receiver's clock)."""
        return max(self.seen[e] for e in entities)

    def close(self) -> None:
        self._client.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            time.sleep(0.025)
    client.close()
    return proc, url


def det(entity: str, ts: float) -> Detection:
    return Detection(
        kind="ssh_brute_force",
        entity=entity,
        severity="high",
        ts=ts,
        observed=12.0,
        threshold=5.0,
        summary=f"SSH brute force from {entity}",
        description=f"12 authentication failures from {entity} within 600 s (threshold 5)",
        window_s=600.0,
    )


def make_service(url: str, hook: str, prefix: str) -> AlertingService:
    client = redis.Redis.from_url(url)
    eng = AlertEngine(
        Route(
            receiver="soc",
            group_by=("alertname", "entity"),
            group_wait=0,
            group_interval=300,
            repeat_interval=14400,
        ),
        clock=HybridClock(),
        keep_firing_for_s=3600,
    )
    return AlertingService(
        eng,
        RedisStore(client, prefix=prefix),
        RedisOutbox(client, prefix=prefix),
        integrations={"soc": [WebhookIntegration(hook, secret=b"bench-secret", timeout_s=5)]},
        registry=CollectorRegistry(),
        policy=RetryPolicy(base_s=0.1, max_s=1.0),
        concurrency=4,
        poll_s=0.05,
        tick_s=0.5,
        drain_timeout_s=60,
    )


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(
    hook: Receiver,
    ents: list[str],
    pents: list[str],
    rate: float,
    feed_batch: Callable[[list[str]], object],
    feed_one: Callable[[str], object],
    who: str,
) -> tuple[float, float, list[float]]:
    """The same measure for every tool: ``ents`` fed in batches of 500 as fast as possible
    (seconds until the receiver saw the last, and seconds to hand them over), then
    ``pents`` one at a time at ``rate`` per second (latency of each to the receiver)."""
    t0 = time.perf_counter()
    w0 = time.time()
    for i in range(0, len(ents), 500):
        feed_batch(ents[i : i + 500])
    t_ingest = time.perf_counter() - t0
    if not hook.wait(set(ents), timeout=300):
        sys.exit(f"{who}: not every notification arrived")
    t_all = hook.last_arrival(ents) - w0
    fed: dict[str, float] = {}
    start = time.perf_counter()
    for i, e in enumerate(pents):
        target = start + i / rate
        while time.perf_counter() < target:
            time.sleep(0.0005)
        fed[e] = time.time()
        feed_one(e)
    if not hook.wait(set(pents), timeout=120):
        sys.exit(f"{who}: not every paced notification arrived")
    return t_all, t_ingest, [hook.seen[e] - fed[e] for e in pents]


def run_pipeline(url: str, hook: Receiver, n: int, paced: int, rate: float) -> dict[str, float]:
    svc = make_service(url, hook.url, "bench:pipe")
    svc.start()
    try:
        ents = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(n)]
        t_all, t_ingest, lat = measure(
            hook,
            ents,
            [f"172.16.{i // 256}.{i % 256}" for i in range(paced)],
            rate,
            # Each batch at the time it is detected, as a live flow stamps it.
            lambda batch: svc.observe([det(e, t) for t in (time.time(),) for e in batch]),
            lambda e: svc.observe([det(e, time.time())]),
            "pipeline",
        )
    finally:
        svc.close()
    return {
        "alerts_per_s": n / t_all,
        "ingest_alerts_per_s": n / t_ingest,
        "latency_p50_s": statistics.median(lat),
        "latency_p99_s": pct(lat, 0.99),
    }


def run_baseline(hook: Receiver, n: int, paced: int, rate: float) -> dict[str, float]:
    client = httpx.Client(timeout=5)
    ents = [f"192.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(n)]
    now = time.time()
    t0 = time.perf_counter()
    for e in ents:
        a = alert_from_detection(det(e, now))
        client.post(
            hook.url,
            content=orjson.dumps(webhook_payload([a])),
            headers={"Content-Type": "application/json"},
        ).raise_for_status()
    t_all = time.perf_counter() - t0
    lat = []
    start = time.perf_counter()
    for i in range(paced):
        target = start + i / rate
        while time.perf_counter() < target:
            time.sleep(0.0005)
        t = time.perf_counter()
        a = alert_from_detection(det(f"193.0.{i // 256}.{i % 256}", time.time()))
        client.post(
            hook.url,
            content=orjson.dumps(webhook_payload([a])),
            headers={"Content-Type": "application/json"},
        ).raise_for_status()
        lat.append(time.perf_counter() - t)
    client.close()
    return {
        "alerts_per_s": n / t_all,
        "latency_p50_s": statistics.median(lat),
        "latency_p99_s": pct(lat, 0.99),
    }


def run_alertmanager(hook: Receiver, n: int, paced: int, rate: float) -> dict[str, float] | None:
    """The same alerts through a real Alertmanager (the peer a site would run), measured the
    same way: POSTed to ``/api/v2/alerts`` in batches of 500 as Prometheus does, grouped by
    alertname and entity with ``group_wait: 0s``, delivered to the same receiver."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        print("alertmanager: not installed (apt-get install prometheus-alertmanager); skipped")
        return None
    from tests.conftest import AlertmanagerServer

    config = {
        "route": {
            "receiver": "soc",
            "group_by": ["alertname", "entity"],
            "group_wait": "0s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [
            {"name": "soc", "webhook_configs": [{"url": hook.url, "send_resolved": False}]}
        ],
    }
    with tempfile.TemporaryDirectory(prefix="vigil-bench-am-") as d:
        am = AlertmanagerServer(binary, Path(d), config, ())
        am.start()
        client = httpx.Client(timeout=10)
        api = f"{am.url}/api/v2/alerts"

        def post(ents: list[str]) -> None:
            now = time.time()
            body = [
                {
                    "labels": {"alertname": "ssh_brute_force", "entity": e, "severity": "high"},
                    "annotations": {"summary": f"SSH brute force from {e}"},
                    "startsAt": _rfc3339(now),
                }
                for e in ents
            ]
            client.post(
                api, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
            ).raise_for_status()

        try:
            ents = [f"11.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(n)]
            t_all, t_ingest, lat = measure(
                hook,
                ents,
                [f"173.16.{i // 256}.{i % 256}" for i in range(paced)],
                rate,
                post,
                lambda e: post([e]),
                "alertmanager",
            )
        finally:
            client.close()
            am.stop()
    return {
        "alerts_per_s": n / t_all,
        "ingest_alerts_per_s": n / t_ingest,
        "latency_p50_s": statistics.median(lat),
        "latency_p99_s": pct(lat, 0.99),
    }


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=5000)
    ap.add_argument("--paced", type=int, default=400)
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    proc, url = start_redis(tmp)
    hook = Receiver()
    try:
        base = run_baseline(hook, args.alerts, args.paced, args.rate)
        pipe = run_pipeline(url, hook, args.alerts, args.paced, args.rate)
        am = run_alertmanager(hook, args.alerts, args.paced, args.rate)
    finally:
        hook.close()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    cols = [("vigil", pipe), ("alertmanager", am), ("plain POST", base)]
    cols = [(name, c) for name, c in cols if c is not None]

    def row(label: str, key: str, spec: str) -> None:
        cells = "".join(f"{format(c[key], spec) if key in c else '-':>14}" for _name, c in cols)
        print(f"{label:34}{cells}")

    print(f"{'':34}" + "".join(f"{name:>14}" for name, _c in cols))
    row("alerts/s, detection -> 200", "alerts_per_s", ",.0f")
    row("alerts/s accepted (ingest)", "ingest_alerts_per_s", ",.0f")
    row(f"latency p50 (s) at {int(args.rate)}/s", "latency_p50_s", ".4f")
    row("latency p99 (s)", "latency_p99_s", ".4f")
    if am is not None:
        ratio = pipe["alerts_per_s"] / am["alerts_per_s"]
        print(
            f"vigil / alertmanager: {ratio:.2f}x alerts/s. Vigil commits state and outbox to"
            " Redis before it answers (a SIGKILL loses nothing; with AOF, nor does a Redis"
            " crash); Alertmanager keeps alerts in memory and snapshots its notification log"
            " every 15 min."
        )
    out = {
        **{k: round(v, 5) for k, v in pipe.items()},
        "baseline_alerts_per_s": round(base["alerts_per_s"], 1),
        "baseline_latency_p50_s": round(base["latency_p50_s"], 5),
        "baseline_latency_p99_s": round(base["latency_p99_s"], 5),
        "ratio_alerts_per_s": round(pipe["alerts_per_s"] / base["alerts_per_s"], 3),
        "alertmanager_alerts_per_s": round(am["alerts_per_s"], 1) if am else None,
        "alertmanager_latency_p99_s": round(am["latency_p99_s"], 5) if am else None,
        "ratio_to_alertmanager": (
            round(pipe["alerts_per_s"] / am["alerts_per_s"], 3) if am else None
        ),
        "alerts": args.alerts,
        "paced": args.paced,
        "rate_per_s": args.rate,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
