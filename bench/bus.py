"""The security flow reading from Redis Streams, end to end, as ``vigil run`` processes.

    python bench/bus.py [--lines 200000] [--rate 500] [--seconds 20] [--idle-seconds 10]

Starts its own ``redis-server`` (AOF off) on a free port and measures, in one run:

1. **Throughput, 1 and 2 processes.** ``--lines`` real SSH ``auth.log`` lines (the bundled
   demo log, repeated as is) are written into two streams
   up front, then ``vigil run security`` reads them (``--processes 1`` and ``--processes 2``,
   one worker each, recovery on with 10 s snapshots). Rate = lines counted by the
   ``vigil_lines_total`` metrics of all processes, between the first and the last scrape
   that saw progress, so process start-up is not counted. ``scale_ratio`` = 2-process rate
   / 1-process rate. On a machine with two cores shared with other work, expect well under 2.
2. **Event-to-webhook latency** at a fixed offered load: ``--rate`` lines/s of background
   failed logins (sources that never reach the threshold) plus, every 0.1 s, a fifth failure
   from a new source, which raises an ``ssh_brute_force`` alert. Latency = webhook receipt
   time at a local receiver minus the ``XADD`` time of that fifth line; p50 and p99.
3. **Idle CPU.** A running flow with an empty bus, measured from ``/proc/<pid>/stat``
   (utime + stime) over ``--idle-seconds``, after a 3 s settle. Must stay near zero.

The last line is one JSON object: ``events_per_s_1proc``, ``events_per_s_2proc``,
``scale_ratio``, ``latency_p50_s``, ``latency_p99_s``, ``idle_cpu_fraction``, the shards each
of the 2 processes holds (``shards_per_worker_2proc``, as bytewax routes the shard keys) and
context.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from vigil.flows.config.shards import worker_shares  # noqa: E402

from vigil.records import (  # noqa: E402
    RawLine,
    entry_fields,
    stream_names,
)

AUTH_LOG = ROOT / "flows" / "demo_data" / "auth.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench/bus.py needs redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    r = redis.Redis(port=port)
    for _ in range(200):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, port


def write_config(path: Path, port: int, stream: str, metrics_port: int, **extra: Any) -> None:
    webhook = extra.pop("webhook", None)
    cfg: dict[str, Any] = {
        "security": {
            "year": 2017,
            "inputs": [
                {
                    "kind": "redis_stream",
                    "url": f"redis://127.0.0.1:{port}/0",
                    "stream": stream,
                    "shards": 2,
                    "batch_size": 2000,
                    "poll_interval_s": extra.pop("poll", 0.1),
                }
            ],
        },
        "metrics": {"port": metrics_port},
        "alerts": {"file": str(path.parent / f"{stream}-alerts.jsonl")},
        "dead_letters": {"file": str(path.parent / f"{stream}-dead.jsonl")},
    }
    if webhook:
        cfg["alerts"]["webhook"] = {"url": webhook, "insecure_unsigned": True}
        # Measure the pipeline, not the grouping timers: Alertmanager-style defaults hold a
        # new group for group_wait (30 s) on purpose. --group-wait sets it here.
        cfg["alerting"] = {"timing": {"group_wait": extra.pop("group_wait", 0.0), "tick": 0.05}}
    path.write_text(json.dumps(cfg))


def start_vigil(cfg: Path, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "vigil.flows.cli", "run", "security", "-c", str(cfg), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / f"{cfg.stem}.log", "ab"),
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_LINES = re.compile(r"^vigil_lines_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def scrape_lines(ports: list[int]) -> float | None:
    import httpx

    total = 0.0
    for p in ports:
        try:
            text = httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=1).text
        except httpx.HTTPError:
            return None
        total += sum(float(x) for x in _LINES.findall(text))
    return total


def fill(r: redis.Redis, stream: str, n: int) -> None:
    base = AUTH_LOG.read_text().splitlines()
    names = stream_names(stream, 2)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        line = base[i % len(base)]
        pipe.xadd(names[i % 2], entry_fields(RawLine("ssh", f"bench-{i % 2}", line)))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def throughput(
    r: redis.Redis, port: int, workdir: Path, processes: int, n: int
) -> dict[str, float]:
    stream = f"tp{processes}"
    fill(r, stream, n)
    mport = free_port()
    cfg = workdir / f"{stream}.yaml"
    write_config(cfg, port, stream, mport)
    proc = start_vigil(
        cfg,
        workdir,
        "--processes",
        str(processes),
        "--recovery-dir",
        str(workdir / f"rec-{stream}"),
    )
    ports = [mport + i for i in range(processes)]
    first: tuple[float, float] | None = None
    last: tuple[float, float] = (0.0, 0.0)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:  # the cluster stopped (a member crashed)
                break
            got = scrape_lines(ports)
            now = time.monotonic()
            if got is not None and got > 0:
                if first is None:
                    first = (now, got)
                if got > last[1]:
                    last = (now, got)
                if got >= n:
                    break
            time.sleep(0.25)
    finally:
        stop(proc)
    crashed = proc.returncode not in (None, 0, -signal.SIGINT, 130) and last[1] < n
    if first is None or last[0] <= first[0]:
        return {"lines": last[1], "events_per_s": 0.0, "crashed": crashed}
    rate = (last[1] - first[1]) / (last[0] - first[0])
    return {"lines": last[1], "events_per_s": round(rate, 1), "crashed": crashed}


class _Receiver(http.server.BaseHTTPRequestHandler):
    arrivals: dict[str, float] = {}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        now = time.time()
        for a in json.loads(body)["alerts"]:
            if a["labels"]["alertname"] == "ssh_brute_force":
                self.arrivals.setdefault(a["labels"]["entity"], now)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def latency(
    r: redis.Redis, port: int, workdir: Path, rate: float, seconds: float, group_wait: float
) -> dict:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    stream = "lat"
    cfg = workdir / f"{stream}.yaml"
    write_config(cfg, port, stream, free_port(), webhook=url, poll=0.02, group_wait=group_wait)
    proc = start_vigil(cfg, workdir)
    names = stream_names(stream, 2)
    sent: dict[str, float] = {}
    try:
        time.sleep(4.0)  # start-up
        t0 = time.time()
        k = 0
        g = 0
        tick = 0.1
        per_tick = max(1, round(rate * tick)) - 1
        while time.time() - t0 < seconds:
            t_next = time.time() + tick
            pipe = r.pipeline(transaction=False)
            for j in range(per_tick):  # background: 2 failures per source, never alerts
                ip = f"172.16.{(k // 2) // 256 % 256}.{(k // 2) % 256}"
                k += 1
                text = (
                    f"Jan  1 00:00:00 gw sshd[1]: Failed password for root from {ip} port 22 ssh2"
                )
                pipe.xadd(names[j % 2], entry_fields(RawLine("ssh", "bg", text)))
            pipe.execute()
            ip = f"10.{g // 65536 % 256}.{g // 256 % 256}.{g % 256}"
            g += 1
            text = f"Jan  1 00:00:00 gw sshd[1]: Failed password for root from {ip} port 22 ssh2"
            fields = entry_fields(RawLine("ssh", "probe", text))
            for _ in range(4):
                r.xadd(names[0], fields)
            sent[ip] = time.time()
            r.xadd(names[0], fields)
            time.sleep(max(0.0, t_next - time.time()))
        time.sleep(3.0)
    finally:
        stop(proc)
        server.shutdown()
    lat = sorted(_Receiver.arrivals[ip] - t for ip, t in sent.items() if ip in _Receiver.arrivals)
    if not lat:
        print(
            f"latency: no alert reached the receiver; see {workdir / (cfg.stem + '.log')}",
            file=sys.stderr,
        )
        return {"latency_p50_s": None, "latency_p99_s": None, "alerts": 0, "probes": len(sent)}
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return {
        "latency_p50_s": round(statistics.median(lat), 4),
        "latency_p99_s": round(q[98], 4),
        "alerts": len(lat),
        "probes": len(sent),
        "offered_lines_per_s": rate,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the file (1-based); 2 fields precede ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(port: int, workdir: Path, seconds: float) -> float:
    stream = "idle"
    cfg = workdir / f"{stream}.yaml"
    write_config(cfg, port, stream, free_port())
    proc = start_vigil(cfg, workdir, "--recovery-dir", str(workdir / "rec-idle"))
    try:
        time.sleep(3.0 + 3.0)  # start-up, then settle
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    finally:
        stop(proc)
    return round((c1 - c0) / (t1 - t0), 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 200k: at ~50k lines/s a smaller backlog is read in about a second, so the rate rests on
    # a handful of 0.25 s scrapes and start-up skew between the two processes dominates.
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=500.0, help="offered lines/s for latency")
    ap.add_argument("--seconds", type=float, default=20.0, help="latency run length")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--group-wait", type=float, default=0.0, help="alerting.timing.group_wait (s)")
    args = ap.parse_args(argv)
    balance = worker_shares(16, 2)  # the security flow's default shards on 2 workers
    with tempfile.TemporaryDirectory(prefix="vigil-bench-bus-") as d:
        workdir = Path(d)
        rproc, port = start_redis(workdir)
        r = redis.Redis(port=port)
        try:
            idle = idle_cpu(port, workdir, args.idle_seconds)
            print(f"idle CPU: {idle:.4f} of a core", file=sys.stderr)
            one = throughput(r, port, workdir, 1, args.lines)
            print(f"1 process: {one}", file=sys.stderr)
            two = throughput(r, port, workdir, 2, args.lines)
            print(f"2 processes: {two}", file=sys.stderr)
            print(f"shards per worker (of 16): {balance}", file=sys.stderr)
            lat = latency(r, port, workdir, args.rate, args.seconds, args.group_wait)
            print(f"latency: {lat}", file=sys.stderr)
        finally:
            r.close()
            rproc.terminate()
            rproc.wait()
    ratio = two["events_per_s"] / one["events_per_s"] if one["events_per_s"] else 0.0
    print(
        json.dumps(
            {
                "events_per_s_1proc": one["events_per_s"],
                "events_per_s_2proc": two["events_per_s"],
                "scale_ratio": round(ratio, 3),
                "latency_p50_s": lat["latency_p50_s"],
                "latency_p99_s": lat["latency_p99_s"],
                "idle_cpu_fraction": idle,
                "lines": args.lines,
                "latency_offered_lines_per_s": args.rate,
                "latency_alerts": lat.get("alerts"),
                "latency_group_wait_s": args.group_wait,
                "cpus": os.cpu_count(),
                "crashed_2proc": two.get("crashed", False),
                "shards_per_worker_2proc": balance,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
