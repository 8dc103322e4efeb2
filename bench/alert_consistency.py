"""Alerts must not depend on how fast time passes: the same file, three ways, same alerts.

For every shared security dataset (the elastic and loghub SSH logs, the Nmap Zeek log, both
CTU days) this runs the real CLI three times, each with fresh alert state and a signed
webhook to a receiver of its own:

1. ``vigil replay FILE --speed max``;
2. ``vigil replay FILE --speed S``, with ``S`` chosen so the file lasts at least
   ``--min-seconds`` (10 s by default) of wall time;
3. ``vigil run security`` with a ``file`` input (read once, not followed).

and compares the set of alerts (alertname, entity, ``startsAt``, ``endsAt``, annotations at
the start) and the notifications the receiver got (idempotency key, reason, status and the
alerts in each). It also runs ``vigil demo`` twice and compares its notifications and
alerts. It prints every difference it finds, a table, and ends with one JSON line whose key
``differences`` is the total (0 = speed-independent).

    python bench/alert_consistency.py [--datasets DIR] [--min-seconds 10] [--only nmap]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]

#: name -> (path under security/, format, year of syslog lines)
CASES: dict[str, tuple[str, str, int | None]] = {
    "elastic_ssh": ("ssh_auth_elastic/auth.log", "ssh", 2017),
    "loghub_openssh": ("ssh_auth_loghub/OpenSSH_2k.log", "ssh", 2000),
    "loghub_linux": ("ssh_auth_loghub/Linux_2k.log", "ssh", 2005),
    "nmap": ("zeek_nmap_portscan/conn.log", "zeek", None),
    "ctu_day1": ("zeek_ctu_inbound_attacks/ctu-normal-40_day1/conn.log.labeled", "zeek", None),
    "ctu_day2": ("zeek_ctu_inbound_attacks/ctu-normal-42_day2/conn.log.labeled", "zeek", None),
}


# ---------------------------------------------------------------------------- receiver
class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every notification it accepts."""

    def __init__(self) -> None:
        got: list[dict[str, Any]] = []
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    got.append({"key": self.headers.get("Idempotency-Key", ""), **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.got = got
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------- one run
@dataclass
class Outcome:
    """What one run produced, in comparable form."""

    alerts: set[tuple[Any, ...]] = field(default_factory=set)
    notifications: list[tuple[Any, ...]] = field(default_factory=list)
    seconds: float = 0.0
    returncode: int = 0
    stderr: str = ""


def _alert_key(a: dict[str, Any]) -> tuple[Any, ...]:
    lab = a["labels"]
    return (lab["alertname"], lab["entity"], a["startsAt"])


def _collect(work: Path, receiver: Receiver, t0: float, proc: Any) -> Outcome:
    out = Outcome(seconds=round(time.monotonic() - t0, 2), returncode=proc.returncode)
    out.stderr = proc.stderr[-2000:] if proc.stderr else ""
    starts: dict[tuple[Any, ...], str] = {}
    alerts_file = work / "alerts.jsonl"
    if alerts_file.exists():
        for line in alerts_file.read_text().splitlines():
            a = json.loads(line)
            ann = a["annotations"]
            starts[_alert_key(a)] = json.dumps(
                {k: ann.get(k) for k in ("summary", "description", "value_at_start")},
                sort_keys=True,
            )
    ends: dict[tuple[Any, ...], str] = {}
    for f in work.rglob("audit.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r["to"] == "resolved":
                lab = r["labels"]
                ends[(lab["alertname"], lab["entity"], r["startsAt"])] = r["endsAt"]
    for k, ann in starts.items():
        out.alerts.add((*k, ends.get(k, "(still firing)"), ann))
    for n in receiver.got:
        out.notifications.append(
            (
                n["key"],
                n.get("reason", ""),
                n["status"],
                tuple(sorted((*_alert_key(a), a["status"], a["endsAt"]) for a in n["alerts"])),
            )
        )
    out.notifications.sort()
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["VIGIL_WEBHOOK_SECRET"] = "alert-consistency-bench"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_replay(path: Path, fmt: str, year: int | None, speed: str, work: Path) -> Outcome:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rec = Receiver()
    cfg = work / "vigil.yaml"
    cfg.write_text(json.dumps({"metrics": {"enabled": False}}))
    cmd = [*VIGIL, "replay", str(path), "--format", fmt, "--speed", speed, "--config", str(cfg)]
    cmd += ["--alerts", str(work / "alerts.jsonl"), "--webhook", rec.url]
    if year:
        cmd += ["--year", str(year)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
        return _collect(work, rec, t0, proc)
    finally:
        rec.close()


def run_file(path: Path, fmt: str, year: int | None, work: Path) -> Outcome:
    """``vigil run security`` with a file input read once."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rec = Receiver()
    cfg = {
        "security": {
            "inputs": [{"kind": "file", "paths": [str(path)], "format": fmt}],
            **({"year": year} if year else {}),
        },
        "metrics": {"enabled": False},
        "alerts": {"file": str(work / "alerts.jsonl"), "webhook": {"url": rec.url}},
        "dead_letters": {"file": str(work / "dead.jsonl")},
        "alerting": {"state": {"dir": str(work / "alerting"), "reset": True}},
    }
    cfg_path = work / "vigil.yaml"
    cfg_path.write_text(json.dumps(cfg))
    cmd = [*VIGIL, "run", "security", "--config", str(cfg_path)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
        return _collect(work, rec, t0, proc)
    finally:
        rec.close()


def run_demo(work: Path) -> Outcome:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rec = Receiver()
    cmd = [*VIGIL, "demo", "--out", str(work), "--metrics-port", "0", "--webhook", rec.url]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, env=_env(), capture_output=True, text=True, timeout=900, cwd=work
        )
        return _collect(work, rec, t0, proc)
    finally:
        rec.close()


# ---------------------------------------------------------------------------- comparing
def event_span(path: Path, fmt: str, year: int | None) -> float:
    """Seconds of event time the file covers (what a paced replay takes at speed 1)."""
    sys.path.insert(0, str(ROOT))
    from vigil.flows.security.parsers import LineParser

    from vigil.records import RawLine

    parser = LineParser(year=year)
    lo, hi = float("inf"), float("-inf")
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            t = parser.event_time(RawLine(fmt, str(path), line.rstrip("\n")))
            if t is not None:
                lo, hi = min(lo, t), max(hi, t)
    return max(hi - lo, 1.0)


def differences(name: str, a: Outcome, b: Outcome, what: str) -> list[str]:
    """Lines describing how ``b`` differs from the reference ``a``."""
    out = []
    for label, x, y in (("alerts", a.alerts, b.alerts),):
        for item in sorted(x - y, key=str):
            out.append(f"{name}: {what}: missing alert {item[:4]}")
        for item in sorted(y - x, key=str):
            out.append(f"{name}: {what}: extra alert {item[:4]}")
        del label
    if a.notifications != b.notifications:
        sa, sb = set(a.notifications), set(b.notifications)
        out.extend(f"{name}: {what}: missing notification {n[:3]}" for n in sorted(sa - sb))
        out.extend(f"{name}: {what}: extra notification {n[:3]}" for n in sorted(sb - sa))
        if sa == sb:
            out.append(f"{name}: {what}: notifications repeated differently")
    return out


def compare_case(
    name: str, path: Path, fmt: str, year: int | None, work: Path, min_seconds: float
) -> tuple[dict[str, Any], list[str]]:
    span = event_span(path, fmt, year)
    speed = span / (min_seconds * 1.2)  # a little margin over the minimum
    ref = run_replay(path, fmt, year, "max", work / "max")
    paced = run_replay(path, fmt, year, f"{speed:.6g}", work / "paced")
    filed = run_file(path, fmt, year, work / "file")
    diffs: list[str] = []
    for o, what in ((ref, "replay max"), (paced, "replay paced"), (filed, "run file")):
        if o.returncode != 0:
            diffs.append(f"{name}: {what}: exit {o.returncode}: {o.stderr.strip()[-300:]}")
    diffs += differences(name, ref, paced, f"paced x{speed:.3g} vs max")
    diffs += differences(name, ref, filed, "run file vs max")
    row = {
        "case": name,
        "alerts": len(ref.alerts),
        "notifications": len(ref.notifications),
        "paced_seconds": paced.seconds,
        "speed": round(speed, 3),
        "differences": len(diffs),
    }
    return row, diffs


def compare_demo(work: Path) -> tuple[dict[str, Any], list[str]]:
    one, two = run_demo(work / "demo1"), run_demo(work / "demo2")
    diffs: list[str] = []
    for o, what in ((one, "demo run 1"), (two, "demo run 2")):
        if o.returncode != 0:
            diffs.append(f"demo: {what}: exit {o.returncode}: {o.stderr.strip()[-300:]}")
    diffs += differences("demo", one, two, "second run vs first")
    row = {
        "case": "demo (2 runs)",
        "alerts": len(one.alerts),
        "notifications": len(one.notifications),
        "paced_seconds": two.seconds,
        "speed": "max",
        "differences": len(diffs),
    }
    return row, diffs


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=str(DATASETS))
    ap.add_argument("--min-seconds", type=float, default=10.0)
    ap.add_argument("--only", action="append", help=f"cases to run: {', '.join(CASES)}, demo")
    ap.add_argument("--work", help="keep the runs' outputs here (default: a temporary folder)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    sec = Path(args.datasets) / "security"
    names = args.only or [*CASES, "demo"]
    rows, all_diffs = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vigil-consistency-") as tmp:
        base = Path(args.work or tmp)
        for name in names:
            if name == "demo":
                row, diffs = compare_demo(base / "demo")
            else:
                rel, fmt, year = CASES[name]
                row, diffs = compare_case(name, sec / rel, fmt, year, base / name, args.min_seconds)
            rows.append(row)
            all_diffs += diffs
            for d in diffs:
                print(d)
            print(
                f"{row['case']:16} alerts {row['alerts']:>4}  notifications "
                f"{row['notifications']:>4}  paced run {row['paced_seconds']:>6} s  "
                f"differences {row['differences']}",
                file=sys.stderr,
                flush=True,
            )
    print(f"\n{'case':16} {'alerts':>6} {'notifs':>6} {'paced s':>8} {'speed':>9} {'diffs':>5}")
    for r in rows:
        print(
            f"{r['case']:16} {r['alerts']:>6} {r['notifications']:>6} {r['paced_seconds']:>8} "
            f"{r['speed']!s:>9} {r['differences']:>5}"
        )
    print(f"elapsed {time.perf_counter() - t0:.0f} s")
    out = {
        "differences": len(all_diffs),
        "cases": len(rows),
        **{f"{r['case'].split()[0]}_alerts": r["alerts"] for r in rows},
        **{f"{r['case'].split()[0]}_notifications": r["notifications"] for r in rows},
    }
    print(json.dumps(out))
    return 0 if not all_diffs else 1


if __name__ == "__main__":
    sys.exit(main())
