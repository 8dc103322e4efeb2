"""End-to-end throughput of the security flow on one worker, against a plain Python loop.

    python bench/throughput.py [--lines 1000000] [--repeats 1]

Builds a file of at least ``--lines`` lines by repeating real logs from
../shared/datasets/security (the SSH auth.log, the Nmap Zeek JSON conn.log and the CTU Zeek
TSV conn.logs), each copy shifted later in time so that windows and baselines see a
continuous stream. Then, in the same run:

- flow: the real security flow on one worker (file source, parse, per-source windows and
  rules, volume baselines, Prometheus metrics on a fresh registry, the alerting pipeline
  writing firing alerts to a JSON-lines file), timed from start to end of ``run_main``;
- baseline: one plain Python loop reading the same file, parsing every line with the same
  parser and counting events per (dataset, action) and failures per source.

Prints both rates and their ratio; the last line is one JSON object. Rates are wall time;
on a machine shared with other work, ``cpu_ratio`` (and ``sigma_cpu_ratio``) compare the
same runs by CPU time of this process, which other processes disturb much less.

``--sigma [FOLDER]`` (default: the 172 SigmaHQ rules of ../shared/datasets/sigma) also
runs the flow with those rules loaded (``security.sigma.paths``) and prints the ratio of
its throughput to the flow's without rules (``sigma_ratio`` in the JSON line); use
``--repeats 2`` or more, so that each side gets a run that is not the process's first.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bytewax.testing import TestingSink, run_main  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from vigil.flows.cli.runner import flow_heap  # noqa: E402
from vigil.flows.config import parse_config  # noqa: E402
from vigil.flows.main import make_alert_sink  # noqa: E402
from vigil.flows.security.config import SecurityConfig  # noqa: E402
from vigil.flows.security.flow import build_flow  # noqa: E402
from vigil.flows.security.parsers import LineParser  # noqa: E402
from vigil.flows.security.sigma.config import SigmaConfig  # noqa: E402
from vigil.sinks.prometheus import FlowMetrics, MetricsSink  # noqa: E402
from vigil.sources.files import FileTailSource  # noqa: E402

from vigil.records import RawLine, SecurityEvent  # noqa: E402

SEC = ROOT.parent / "shared" / "datasets" / "security"
SYSLOG_TS = re.compile(r"^(\w{3}) +(\d+) (\d\d:\d\d:\d\d)")
JSON_TS = re.compile(r'"ts":([0-9.]+)')


def _syslog_copies(lines: list[str], rounds: int, step: timedelta) -> list[str]:
    """``rounds`` copies of a syslog file, copy k shifted by k * step, merged in time order."""
    base: list[tuple[datetime, str]] = []
    for line in lines:
        m = SYSLOG_TS.match(line)
        if m:
            dt = datetime.strptime(f"2017 {m[1]} {m[2]} {m[3]} +0000", "%Y %b %d %H:%M:%S %z")
            base.append((dt, line[m.end() :]))
    out: list[tuple[datetime, str]] = []
    for k in range(rounds):
        off = step * k
        out.extend((dt + off, rest) for dt, rest in base)
    out.sort(key=lambda x: x[0])
    return [f"{dt:%b} {dt.day:2d} {dt:%H:%M:%S}{rest}" for dt, rest in out]


def make_corpus(path: Path, n_lines: int) -> dict[str, int]:
    """Write ssh.log, zeek.json and zeek.tsv under ``path``; return line counts.

    Copies overlap in time (each shifted a little later than the previous one, then merged in
    time order), as if the same kind of traffic came from a busier network: the real logs
    are sparse (auth.log has 7k lines over 3.5 weeks), and laid end to end a million lines
    would span years of mostly empty windows.
    """
    auth = (SEC / "ssh_auth_elastic" / "auth.log").read_text().splitlines()
    nmap = (SEC / "zeek_nmap_portscan" / "conn.log").read_text().splitlines()
    ctu = [
        ln
        for p in sorted((SEC / "zeek_ctu_inbound_attacks").glob("*/conn.log.labeled"))
        for ln in p.read_text().splitlines()
        if not ln.startswith("#")
    ]
    per_round = len(auth) + len(nmap) + len(ctu)
    rounds = -(-n_lines // per_round)
    ssh_lines = _syslog_copies(auth, rounds, timedelta(hours=6))
    ctu_rows = [(float(ln.split("\t", 1)[0]), ln.split("\t", 1)[1]) for ln in ctu]
    tsv = sorted(
        ((ts + k * 3600.0, rest) for k in range(rounds) for ts, rest in ctu_rows),
        key=lambda x: x[0],
    )
    nmap_ts = [float(m[1]) if (m := JSON_TS.search(ln)) else 0.0 for ln in nmap]
    nmap_span = max(nmap_ts) - min(t for t in nmap_ts if t) + 1.0
    with (path / "ssh.log").open("w") as fs:
        fs.write("\n".join(ssh_lines) + "\n")
    with (path / "zeek.tsv").open("w") as ft:
        ft.writelines(f"{ts:.6f}\t{rest}\n" for ts, rest in tsv)
    with (path / "zeek.json").open("w") as fj:
        for k in range(rounds):  # the Nmap copies follow each other
            off = k * nmap_span

            def shift(m: re.Match[str], o: float = off) -> str:
                return f'"ts":{float(m[1]) + o:.6f}'

            fj.write("\n".join(JSON_TS.sub(shift, ln) for ln in nmap) + "\n")
    return {"ssh": len(ssh_lines), "zeek_json": len(nmap) * rounds, "zeek_tsv": len(tsv)}


def run_flow(path: Path, sigma: tuple[str, ...] = ()) -> tuple[float, float, int, int]:
    """Wall and CPU seconds of one flow run, its lines and detections."""
    cfg = SecurityConfig(year=2017, sigma=SigmaConfig(paths=sigma))
    registry = CollectorRegistry()
    metrics = FlowMetrics("security", registry=registry)
    sources = [
        FileTailSource([str(path / "ssh.log")], "ssh"),
        FileTailSource([str(path / "zeek.json")], "zeek"),
        FileTailSource([str(path / "zeek.tsv")], "zeek"),
    ]
    dead: list[object] = []
    # The sink `vigil run` uses: the alerting pipeline, firing alerts to a JSON-lines file.
    vigil_cfg = parse_config(
        {
            "alerts": {"file": str(path / "alerts.jsonl")},
            "alerting": {"state": {"reset": True}},  # each repeat starts from no alerts
        }
    )
    alert_sink = make_alert_sink(
        vigil_cfg, registry=registry, on_alert=None, environ={}, finite=True
    )
    flow = build_flow(
        cfg,
        sources,
        alert_sink,  # type: ignore[arg-type]  # also takes watermarks
        TestingSink(dead),
        MetricsSink(metrics),
    )
    with flow_heap():  # as `vigil run` does before it starts a flow
        t0, c0 = time.perf_counter(), time.process_time()
        run_main(flow)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dt, cpu, metrics.total_lines, metrics.total_detections


def run_baseline(path: Path) -> tuple[float, float, int]:
    parser = LineParser(year=2017)
    by_action: dict[tuple[str, str], int] = {}
    fails: dict[str, int] = {}
    dead = 0
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for name, fmt in (("ssh.log", "ssh"), ("zeek.json", "zeek"), ("zeek.tsv", "zeek")):
        origin = str(path / name)
        with open(origin, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                n += 1
                r = parser.parse(RawLine(fmt, origin, line.rstrip("\n")))
                if type(r) is SecurityEvent:
                    k = (r.dataset, r.action)
                    by_action[k] = by_action.get(k, 0) + 1
                    if r.outcome == "failure" and r.source_ip is not None:
                        fails[r.source_ip] = fails.get(r.source_ip, 0) + 1
                elif r is not None:
                    dead += 1
    return time.perf_counter() - t0, time.process_time() - c0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each; best is kept")
    ap.add_argument(
        "--sigma",
        nargs="?",
        const=str(ROOT.parent / "shared" / "datasets" / "sigma"),
        default=None,
        metavar="FOLDER",
        help="also run with the Sigma rules of FOLDER loaded (default: the shared SigmaHQ set)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as d:
        path = Path(d)
        counts = make_corpus(path, args.lines)
        total = sum(counts.values())
        print(f"corpus: {total:,} lines {counts}")
        flow_best = base_best = sigma_best = float("inf")
        flow_cpu = base_cpu = sigma_cpu = float("inf")
        lines = dets = sigma_dets = 0
        for i in range(args.repeats):
            # With rules, odd repeats run them first: the first flow of a process is slower
            # (imports, caches), and that must not favour either side of the ratio.
            if args.sigma and i % 2:
                (path / "alerts.jsonl").unlink(missing_ok=True)
                sdt, scpu, slines, sigma_dets = run_flow(path, (args.sigma,))
                assert slines == total, (slines, total)
                sigma_best, sigma_cpu = min(sigma_best, sdt), min(sigma_cpu, scpu)
            (path / "alerts.jsonl").unlink(missing_ok=True)
            fdt, fcpu, lines, dets = run_flow(path)
            bdt, bcpu, bn = run_baseline(path)
            assert bn == total and lines == total, (bn, lines, total)
            flow_best, base_best = min(flow_best, fdt), min(base_best, bdt)
            flow_cpu, base_cpu = min(flow_cpu, fcpu), min(base_cpu, bcpu)
            if args.sigma and not i % 2:
                (path / "alerts.jsonl").unlink(missing_ok=True)
                sdt, scpu, slines, sigma_dets = run_flow(path, (args.sigma,))
                assert slines == total, (slines, total)
                sigma_best, sigma_cpu = min(sigma_best, sdt), min(sigma_cpu, scpu)
        flow_rate = total / flow_best
        base_rate = total / base_best
        print(f"flow (1 worker)  : {flow_rate:>12,.0f} lines/s  ({flow_best:.2f} s, {dets} found)")
        print(f"plain Python loop: {base_rate:>12,.0f} lines/s  ({base_best:.2f} s)")
        print(
            f"ratio flow/loop  : {flow_rate / base_rate:.3f}"
            f"  (by CPU time: {base_cpu / flow_cpu:.3f})"
        )
        result: dict[str, object] = {
            "lines": total,
            "lines_per_s": round(flow_rate),
            "baseline_lines_per_s": round(base_rate),
            "ratio": round(flow_rate / base_rate, 3),
            "cpu_ratio": round(base_cpu / flow_cpu, 3),
            "detections": dets,
        }
        if args.sigma:
            from vigil.flows.security.sigma.engine import load_rules

            rs = load_rules(SigmaConfig(paths=(args.sigma,)))
            sigma_rate = total / sigma_best
            print(
                f"flow + Sigma     : {sigma_rate:>12,.0f} lines/s  ({sigma_best:.2f} s,"
                f" {len(rs.rules)} rules loaded, {len(rs.skipped)} skipped, {sigma_dets} found)"
            )
            print(
                f"ratio Sigma/flow : {sigma_rate / flow_rate:.3f}"
                f"  (by CPU time: {flow_cpu / sigma_cpu:.3f})"
            )
            result.update(
                sigma_rules=len(rs.rules),
                sigma_skipped=len(rs.skipped),
                sigma_lines_per_s=round(sigma_rate),
                sigma_ratio=round(sigma_rate / flow_rate, 3),
                sigma_cpu_ratio=round(flow_cpu / sigma_cpu, 3),
                sigma_detections=sigma_dets,
            )
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
