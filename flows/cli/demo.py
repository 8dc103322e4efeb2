"""``vigil demo``: replay the bundled real samples of every feed, with a webhook receiver
of its own, so signed delivery, metrics and alerts show end to end with nothing else
running. The samples and their licences: ``flows/demo_data/NOTICE.md``."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import secrets
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from vigil.flows.cli.output import print_summary
from vigil.flows.cli.runner import run_flows
from vigil.flows.config import VigilConfig, parse_config, resolve_paths
from vigil.flows.feed import feeds
from vigil.sinks.webhook import verify_signature


class _DemoReceiver(http.server.BaseHTTPRequestHandler):
    """The demo's own webhook receiver: verifies signatures, drops repeated keys."""

    secret: bytes = b""
    seen: set[str]
    verified = 0
    rejected = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = verify_signature(self.secret, dict(self.headers.items()), body)
        key = self.headers.get("Idempotency-Key") or hashlib.sha256(body).hexdigest()
        with self.lock:
            if ok:
                type(self).verified += 1
                self.seen.add(key)
            else:
                type(self).rejected += 1
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logs
        pass


DEMO_FEEDS = {
    "security": "SSH auth.log of an Internet-facing host (2017), Zeek log of Nmap scans (2022)",
    "indicators": "one NAB series: AWS request latency before a system failure",
    "service_queues": "Boston 311 service requests, 12 Jan - 8 Feb 2015",
    "media": "airline mention tweets, 20-22 Feb 2015",
}


def demo_flows(raw: dict[str, Any]) -> list[str]:
    """The flows the demo runs: those available whose section in demo.yaml has inputs."""
    return [f.name for f in feeds() if (raw.get(f.name) or {}).get("inputs")]


def cmd_demo(args: argparse.Namespace) -> int:
    data = Path(str(resources.files("vigil.flows") / "demo_data"))
    raw = resolve_paths(_demo_yaml(), data)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw["alerts"]["file"] = str(out_dir / "alerts.jsonl")
    raw["dead_letters"]["file"] = str(out_dir / "dead_letters.jsonl")
    for f in ("alerts.jsonl", "dead_letters.jsonl"):
        (out_dir / f).unlink(missing_ok=True)
    raw.setdefault("metrics", {})["port"] = args.metrics_port

    # The demo's hashes of authors never leave this run: a random salt keeps them unlinkable
    # without asking the user to set one.
    os.environ.setdefault("VIGIL_AUTHOR_SALT", secrets.token_hex(16))
    server = None
    if args.webhook:
        raw["alerts"]["webhook"] = {"url": args.webhook}
    else:
        # Deliver to a receiver of our own, so the demo shows signed delivery end to end
        # with nothing else running.
        secret = os.environ.get("VIGIL_WEBHOOK_SECRET") or secrets.token_hex(16)
        os.environ["VIGIL_WEBHOOK_SECRET"] = secret
        handler = type("DemoReceiver", (_DemoReceiver,), {"secret": secret.encode(), "seen": set()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        raw["alerts"]["webhook"] = {"url": f"http://127.0.0.1:{server.server_address[1]}/alerts"}
    cfg = parse_config(raw)
    flows_run = demo_flows(raw)
    print(
        "Vigil demo: replaying bundled real samples (see flows/demo_data/NOTICE.md)\n"
        + "".join(f"  {f:15} {DEMO_FEEDS.get(f, '')}\n" for f in flows_run)
        + f"alerts -> {cfg.alerts.file} and {_webhook_url(cfg)}\n",
        file=sys.stderr,
    )
    try:
        summary = run_flows(
            cfg,
            flows_run,
            speed_override=args.speed,
            follow=args.follow,
            metrics_port=args.metrics_port,
        )
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if server is not None:
        h = server.RequestHandlerClass
        summary["webhook_deliveries_verified"] = h.verified  # type: ignore[attr-defined]
        summary["webhook_deliveries_rejected"] = h.rejected  # type: ignore[attr-defined]
    where = {"alerts": str(cfg.alerts.file), "dead letters": str(cfg.dead_letters.file)}
    hints = [
        "vigil alerts list --state-dir " + str(Path(str(cfg.alerts.file)).parent / "alerting"),
        "vigil demo --speed 3600 --follow, then open the metrics URL or the Grafana dashboards",
    ]
    print_summary(summary, as_json=args.json, where=where, hints=hints)
    return 0


def _webhook_url(cfg: VigilConfig) -> str:
    return cfg.alerts.webhook.url if cfg.alerts.webhook else "-"


def _demo_yaml() -> dict[str, Any]:
    import yaml

    text = (resources.files("vigil.flows") / "demo.yaml").read_text(encoding="utf-8")
    return dict(yaml.safe_load(text))
