"""Peak memory of the security flow with a million distinct source addresses.

    python bench/memory.py [--sources 1000000] [--cap 10000]

Writes ``--sources`` failed SSH logins, each from a different address, all within a few
hours of event time (so no source expires: every one is tracked, the worst case), to a
temporary file. Then, in a fresh child process each time, runs the real security flow
(``vigil.flows.main.build_flows``: file input, parse, per-shard rules, volume baselines, metrics,
alerts and dead letters to files) over it on one worker and reports the peak resident set
size (``ru_maxrss``) and the RSS before the run (imports only):

- with the default ``security.max_sources`` (200 000 per shard, 16 shards: nothing evicted);
- with ``security.max_sources = --cap`` per shard, which bounds the tracked sources to
  ``16 * cap`` whatever the number of addresses.

The documented bound (README): peak RSS with a million tracked sources stays under
``rss_bound_bytes`` below (2 GiB); per tracked source it costs about ``bytes_per_source``.
The last line is one JSON object with ``rss_bytes_1m_ips``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RSS_BOUND = 2 * 1024**3  # the bound documented in README


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def write_log(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            t = i // 50  # 50 lines per second of event time: n = 1e6 spans ~5.6 h
            h, rest = divmod(t, 3600)
            m, s = divmod(rest, 60)
            ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            f.write(
                f"Jan  1 {h:02d}:{m:02d}:{s:02d} gw sshd[1]: Failed password for root from "
                f"{ip} port 22 ssh2\n"
            )


def child(log: str, cap: int | None, out: str) -> None:
    """Run the flow over ``log`` in this process and print its memory figures as JSON."""
    from bytewax.testing import run_main
    from prometheus_client import CollectorRegistry
    from vigil.flows.config import parse_config
    from vigil.flows.main import build_flows

    sec: dict = {
        "year": 2024,
        "inputs": [{"kind": "file", "paths": [log], "format": "ssh"}],
    }
    if cap is not None:
        sec["max_sources"] = cap
    cfg = parse_config(
        {
            "security": sec,
            "metrics": {"enabled": False},
            "alerts": {"file": f"{out}/alerts.jsonl"},
            "dead_letters": {"file": f"{out}/dead.jsonl"},
        }
    )
    flow, io = build_flows(["security"], cfg, registry=CollectorRegistry())
    before = _rss_now()
    t0 = time.perf_counter()
    run_main(flow)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lines = sum(m.total_lines for m in io.metrics.values())
    print(json.dumps({"rss_before": before, "rss_peak": peak, "lines": lines, "seconds": secs}))


def run_child(log: Path, cap: int | None, out: Path) -> dict:
    argv = [sys.executable, __file__, "--child", str(log), "--out", str(out)]
    if cap is not None:
        argv += ["--cap", str(cap)]
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=int, default=1_000_000)
    ap.add_argument("--cap", type=int, default=10_000, help="max_sources per shard, 2nd run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.cap if "--cap" in (argv or sys.argv) else None, args.out)
        return 0
    with tempfile.TemporaryDirectory(prefix="vigil-bench-mem-") as d:
        log = Path(d) / "many_sources.log"
        write_log(log, args.sources)
        full = run_child(log, None, Path(d))
        print(f"default max_sources: {full}", file=sys.stderr)
        capped = run_child(log, args.cap, Path(d))
        print(f"max_sources={args.cap}: {capped}", file=sys.stderr)
    grown = full["rss_peak"] - full["rss_before"]
    print(
        json.dumps(
            {
                "rss_bytes_1m_ips": full["rss_peak"],
                "rss_bytes_before_run": full["rss_before"],
                "bytes_per_source": round(grown / args.sources),
                "rss_bytes_capped": capped["rss_peak"],
                "cap_per_shard": args.cap,
                "rss_bound_bytes": RSS_BOUND,
                "within_bound": full["rss_peak"] < RSS_BOUND,
                "sources": args.sources,
                "lines_per_s": round(full["lines"] / full["seconds"]),
            }
        )
    )
    return 0 if full["rss_peak"] < RSS_BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
