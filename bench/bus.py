"""Vigil's flows reading from Redis Streams, end to end, as ``vigil run`` processes.

    python bench/bus.py [--parts scale,feeds,latency,idle] [--lines 300000]
                        [--sources per-copy|as-is] [--batch-size 2000]
                        [--feeds security,service_queues,media,indicators]
                        [--rate 500] [--seconds 20] [--idle-seconds 10]

Starts its own ``redis-server`` (AOF off) on a free port. Every rate comes with the CPU
seconds (``/proc/<pid>/stat`` utime + stime) that each process spent in the measured
window, so figures taken on a shared machine can be read per CPU second. The parts:

1. **scale**: the security flow, 1 and 2 processes. ``--lines`` real SSH ``auth.log`` lines
   (the bundled demo log, repeated) are written into two streams up front by the bench's
   own ``XADD`` (the entry format of ``vigil ingest``; its CPU is the *producer* share),
   then ``vigil run security`` reads them (``--processes 1`` and ``--processes 2``, one
   worker each, recovery on with 10 s snapshots). With ``--sources per-copy`` (default)
   each repetition of the log comes from its own addresses (the second octet shifted by
   the copy number), as a fleet of sites would send it; ``as-is`` repeats the same 195
   addresses, whose 3 busiest sources hold 13% of the lines and put 72% of the events on
   one of two workers. Rate = lines counted by the ``vigil_lines_total`` metrics of all
   processes between the first and the last scrape that saw progress (start-up not
   counted). ``scale_ratio`` = 2-process rate / 1-process rate (wall clock).
   ``scale_ratio_cpu`` = 1-process CPU seconds / CPU seconds of the busiest of the two
   processes, for the same lines: the ratio when each process has a core of its own,
   whatever else the machine runs. ``cpu_per_line_2proc_vs_1proc`` is the extra CPU a
   line costs in a cluster (bytewax pickles every item that crosses processes).
2. **feeds**: throughput from the bus of every feed, one process: security (the demo log,
   as above), service_queues (Boston 311, Q1 2015, through ``vigil ingest --feed
   service_queues``), media (the airline tweets, ``vigil ingest --feed media``) and
   indicators (the NAB series, ``vigil ingest --feed indicators``). Rate = entries the
   flow's consumer group has read (``XINFO GROUPS`` entries-read) per second, from the
   first read to the last; per CPU second of the flow process too; and the producer's CPU
   per entry (``vigil ingest`` or the bench's ``XADD``).
3. **latency**: event-to-webhook latency at a fixed offered load: ``--rate`` lines/s of
   background failed logins (sources that never reach the threshold) plus, every 0.1 s, a
   fifth failure from a new source, which raises an ``ssh_brute_force`` alert. Latency =
   webhook receipt time at a local receiver minus the ``XADD`` time of that fifth line.
4. **idle**: a running flow with an empty bus, CPU over ``--idle-seconds`` after a 3 s
   settle. Must stay near zero.

What it showed (2 cores shared with other work, 300 000 lines, per-copy sources): one
process 75 000 lines per CPU second (13.3 us a line, after ``vigil run`` raised the
collector's young-generation threshold: 17.6 us before); two processes 55 000 (17.9 us:
x1.35-1.6, the pickling of the per-shard event lists that cross processes and bytewax's
exchange), the busier process doing 54-60% of it (64% with ``as-is`` sources), so
``scale_ratio_cpu`` 1.1-1.4: 1.5 needs both a line no dearer in a cluster than 1.33x and
an even split, on cores the rest of the machine leaves free. Redis is
2% of the pipeline's CPU, the producer 40-43% (its ``XADD`` costs about as much per line as
the flow). Wall-clock ``scale_ratio`` follows how much of the second core the rest of the
machine leaves (0.98 quiet, with the old default of 200 000 as-is lines; 1.15-2.0 loaded).

The last line is one JSON object: ``events_per_s_1proc``, ``events_per_s_2proc``,
``scale_ratio``, ``scale_ratio_cpu``, the CPU split (``cpu_s_*``), ``<feed>_bus_items_per_s``
and ``<feed>_bus_items_per_cpu_s`` for each feed, latency, idle CPU, the shards each of the
2 processes holds (``shards_per_worker_2proc``) and context. Parts not run are left out.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
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
DATA = ROOT.parent / "shared" / "datasets"
BOSTON = DATA / "service_queues" / "boston_311_2015q1" / "boston_311_2015Q1.csv"
AIRLINE_CSV = (
    DATA
    / "media"
    / "airline_twitter_mentions_2015-02"
    / "airline_mentions_2015-02-17_2015-02-24.csv"
)
NAB = DATA / "nab"
# The NAB series but realTweets (79k points of tweet counts, as long as all the others):
# 95k points in 51 series.
NAB_DIRS = (
    "artificialNoAnomaly",
    "artificialWithAnomaly",
    "realAWSCloudwatch",
    "realAdExchange",
    "realKnownCause",
    "realTraffic",
)
PARTS = ("scale", "feeds", "latency", "idle")


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


# ---------------------------------------------------------------- CPU accounting
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (0.0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of the file (1-based); 2 fields precede ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            out += [int(x) for x in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        pass
    return out


def flow_pids(proc: subprocess.Popen[bytes], processes: int) -> list[int]:
    """The processes doing the work: the cluster members, or ``vigil run`` itself."""
    if processes <= 1:
        return [proc.pid]
    return sorted(children(proc.pid))


# ---------------------------------------------------------------- vigil run
BATCH_SIZE = 2000  # entries per XREADGROUP of the security input (--batch-size)


def security_section(url: str, stream: str, poll: float = 0.1) -> dict[str, Any]:
    return {
        "year": 2017,
        "inputs": [
            {
                "kind": "redis_stream",
                "url": url,
                "stream": stream,
                "shards": 2,
                "batch_size": BATCH_SIZE,
                "poll_interval_s": poll,
            }
        ],
    }


def write_config(
    path: Path,
    sections: dict[str, Any],
    metrics_port: int,
    webhook: str | None = None,
    group_wait: float = 0.0,
) -> None:
    cfg: dict[str, Any] = {
        **sections,
        "metrics": {"port": metrics_port},
        "alerts": {"file": str(path.parent / f"{path.stem}-alerts.jsonl")},
        "dead_letters": {"file": str(path.parent / f"{path.stem}-dead.jsonl")},
    }
    if webhook:
        cfg["alerts"]["webhook"] = {"url": webhook, "insecure_unsigned": True}
        # Measure the pipeline, not the grouping timers: Alertmanager-style defaults hold a
        # new group for group_wait (30 s) on purpose. --group-wait sets it here.
        cfg["alerting"] = {"timing": {"group_wait": group_wait, "tick": 0.05}}
    path.write_text(json.dumps(cfg))


def start_vigil(
    cfg: Path, workdir: Path, *extra: str, feed: str = "security"
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "vigil.flows.cli", "run", feed, "-c", str(cfg), *extra]
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


def scrape_lines(ports: list[int]) -> list[float] | None:
    """``vigil_lines_total`` of each process (``None`` if one cannot be scraped yet)."""
    import httpx

    out = []
    for p in ports:
        try:
            text = httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=1).text
        except httpx.HTTPError:
            return None
        out.append(sum(float(x) for x in _LINES.findall(text)))
    return out


# ---------------------------------------------------------------- security lines
def _fields(line: RawLine) -> Any:
    """An entry as ``vigil ingest`` writes it (typed ``Any``: redis-py wants its own types)."""
    return entry_fields(line)


_IPV4 = re.compile(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")


def auth_lines(n: int, per_copy: bool) -> list[str]:
    """``n`` lines of the demo log, repeated; ``per_copy``: copy ``c`` from its own addresses."""
    base = AUTH_LOG.read_text().splitlines()
    out: list[str] = []
    c = 0
    while len(out) < n:
        shift = c if per_copy else 0

        def moved(m: re.Match[str], shift: int = shift) -> str:
            return f"{m[1]}.{(int(m[2]) + shift) % 256}.{m[3]}.{m[4]}"

        out += base if not shift else [_IPV4.sub(moved, line) for line in base]
        c += 1
    return out[:n]


def fill(r: redis.Redis, stream: str, lines: Sequence[str], rpid: int) -> dict[str, float]:
    """XADD ``lines`` round-robin into ``<stream>:0`` and ``:1``; the producer's CPU."""
    names = stream_names(stream, 2)
    c0, rc0, t0 = time.process_time(), cpu_seconds(rpid), time.monotonic()
    pipe = r.pipeline(transaction=False)
    for i, line in enumerate(lines):
        pipe.xadd(names[i % 2], _fields(RawLine("ssh", f"bench-{i % 2}", line)))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return {
        "producer_cpu_s": round(time.process_time() - c0, 3),
        "producer_redis_cpu_s": round(cpu_seconds(rpid) - rc0, 3),
        "producer_wall_s": round(time.monotonic() - t0, 3),
    }


def throughput(
    r: redis.Redis, port: int, rpid: int, workdir: Path, processes: int, lines: Sequence[str]
) -> dict[str, Any]:
    """``vigil run security --processes N`` over ``lines``: rate and CPU per process."""
    n = len(lines)
    stream = f"tp{processes}"
    produced = fill(r, stream, lines, rpid)
    mport = free_port()
    cfg = workdir / f"{stream}.yaml"
    write_config(cfg, {"security": security_section(f"redis://127.0.0.1:{port}/0", stream)}, mport)
    proc = start_vigil(
        cfg,
        workdir,
        "--processes",
        str(processes),
        "--recovery-dir",
        str(workdir / f"rec-{stream}"),
    )
    ports = [mport + i for i in range(processes)]
    # (time, lines per process, CPU per flow process, redis CPU)
    first: tuple[float, list[float], list[float], float] | None = None
    last = first
    pids: list[int] = []
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:  # the cluster stopped (a member crashed)
                break
            if len(pids) < processes:
                pids = flow_pids(proc, processes)
            got = scrape_lines(ports)
            now = time.monotonic()
            if got is not None and sum(got) > 0 and len(pids) == processes:
                snap = (now, got, [cpu_seconds(p) for p in pids], cpu_seconds(rpid))
                if first is None:
                    first = snap
                if last is None or sum(got) > sum(last[1]):
                    last = snap
                if sum(got) >= n:
                    break
            time.sleep(0.25)
    finally:
        stop(proc)
    done = sum(last[1]) if last else 0.0
    crashed = proc.returncode not in (None, 0, -signal.SIGINT, 130) and done < n
    out: dict[str, Any] = {"lines": done, "crashed": crashed, **produced}
    if first is None or last is None or last[0] <= first[0]:
        return {**out, "events_per_s": 0.0}
    counted = done - sum(first[1])
    wall = last[0] - first[0]
    cpu = [round(b - a, 3) for a, b in zip(first[2], last[2], strict=True)]
    redis_cpu = round(last[3] - first[3], 3)
    return {
        **out,
        "events_per_s": round(counted / wall, 1),
        "window_s": round(wall, 3),
        "window_lines": counted,
        "cpu_s_per_process": cpu,
        "redis_cpu_s": redis_cpu,
        "lines_per_cpu_s": round(counted / sum(cpu), 1) if sum(cpu) else 0.0,
        "lines_per_process": [round(b - a) for a, b in zip(first[1], last[1], strict=True)],
        # Cores in use while measured: the flow processes and Redis (not the others' load).
        "cores_used": round((sum(cpu) + redis_cpu) / wall, 2),
    }


# ---------------------------------------------------------------- every feed from the bus
def ingest(url: str, workdir: Path, feed: str, *args: str) -> dict[str, Any]:
    """``vigil ingest --to URL --feed FEED ARGS`` to its end: its summary and CPU seconds."""
    argv = [sys.executable, "-m", "vigil.flows.cli", "ingest", "--to", url, "--feed", feed]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(
        [*argv, *args], cwd=workdir, env=env, capture_output=True, text=True, check=False
    )
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"vigil ingest --feed {feed} failed:\n{done.stderr[-2000:]}")
    summary: dict[str, Any] = {}
    for line in done.stderr.splitlines():
        if line.startswith('{"summary"'):
            summary = json.loads(line)["summary"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**summary, "producer_cpu_s": round(cpu, 3), "producer_wall_s": round(wall, 3)}


def entries_read(r: redis.Redis, streams: Sequence[str], group: str = "vigil") -> int:
    """Entries the flow's consumer group has read from ``streams`` (Redis 7)."""
    total = 0
    for s in streams:
        try:
            groups = r.xinfo_groups(s)
        except redis.ResponseError:  # no such stream yet
            continue
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == group:
                total += int(g.get("entries-read") or 0)
    return total


def feed_run(
    r: redis.Redis,
    rpid: int,
    workdir: Path,
    feed: str,
    section: dict[str, Any],
    streams: Sequence[str],
) -> dict[str, Any]:
    """``vigil run FEED`` (one process) over what its streams hold: rate and CPU."""
    total = sum(int(r.xlen(s)) for s in streams)
    cfg = workdir / f"feed-{feed}.yaml"
    write_config(cfg, {feed: section}, free_port())
    proc = start_vigil(cfg, workdir, "--recovery-dir", str(workdir / f"rec-{feed}"), feed=feed)
    first: tuple[float, int, float, float] | None = None
    last = first
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            got = entries_read(r, streams)
            now = time.monotonic()
            if got > 0:
                snap = (now, got, cpu_seconds(proc.pid), cpu_seconds(rpid))
                if first is None:
                    first = snap
                if last is None or got > last[1]:
                    last = snap
                if got >= total:
                    break
            time.sleep(0.05)
        # The last batch was read, not yet processed: let the flow finish it (CPU only
        # counts to the last read, so this wait does not change the figures).
        time.sleep(1.0)
    finally:
        stop(proc)
    out: dict[str, Any] = {"entries": total, "read": last[1] if last else 0}
    if first is None or last is None or last[0] <= first[0]:
        return {**out, "items_per_s": 0.0, "items_per_cpu_s": 0.0}
    n = last[1] - first[1]
    cpu = last[2] - first[2]
    return {
        **out,
        "items_per_s": round(n / (last[0] - first[0]), 1),
        "items_per_cpu_s": round(n / cpu, 1) if cpu else 0.0,
        "window_s": round(last[0] - first[0], 3),
        "cpu_s": round(cpu, 3),
        "redis_cpu_s": round(last[3] - first[3], 3),
    }


def feed_sections(url: str, stream: str) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Each record feed's ``redis_stream`` configuration and what ``vigil ingest`` sends it."""
    import yaml

    boston = yaml.safe_load((ROOT / "examples" / "boston311.yaml").read_text())["service_queues"]
    mapping = boston["inputs"][0]["mapping"]
    bus = {"kind": "redis_stream", "url": url, "batch_size": 2000}
    boston["inputs"] = [{**bus, "stream": f"{stream}-q", "mapping": mapping}]
    media = {
        "inputs": [
            {
                **bus,
                "stream": f"{stream}-m",
                "name": "twitter",
                "language": "en",
                "fields": {"published_at": "created_at_utc", "id": "tweet_id"},
            }
        ],
        "watch": [
            {"id": k, "aliases": [a]}
            for k, a in {
                "united": "@united",
                "usairways": "@USAirways",
                "american": "@AmericanAir",
                "southwest": "@SouthwestAir",
                "jetblue": "@JetBlue",
                "virgin": "@VirginAmerica",
            }.items()
        ],
        "stories_file": None,
    }
    indicators = {
        "inputs": [
            {
                **bus,
                "stream": f"{stream}-i",
                "shards": 2,
                "columns": {"series": None, "ts": "timestamp", "value": "value"},
                "tz": "UTC",
            }
        ],
        "shards": 16,
    }
    nab = [a for d in NAB_DIRS for a in ("--csv", str(NAB / d / "*.csv"))]
    return {
        "service_queues": (boston, ["--csv", str(BOSTON)]),
        "media": (media, ["--csv", str(AIRLINE_CSV)]),
        "indicators": (indicators, ["--shards", "2", *nab]),
    }


def feeds(
    r: redis.Redis, port: int, rpid: int, workdir: Path, lines: Sequence[str], only: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Every feed in ``only`` from the bus: filled by ``vigil ingest``, read by ``vigil run``."""
    url = f"redis://127.0.0.1:{port}/0"
    out: dict[str, dict[str, Any]] = {}
    sections = feed_sections(url, "feed")
    for feed in only:
        if feed == "security":
            log = workdir / "auth-repeated.log"
            log.write_text("\n".join(lines) + "\n")
            # --shard-by line: one file's lines spread over both streams.
            args = ["--file", str(log), "--no-follow", "--shards", "2", "--shard-by", "line"]
            produced = ingest(url, workdir, "security", "--stream", "feed-s", *args)
            section = security_section(url, "feed-s")
            streams = stream_names("feed-s", 2)
        else:
            section, args = sections[feed]
            inp = section["inputs"][0]
            cfg = workdir / f"ingest-{feed}.yaml"
            cfg.write_text(json.dumps({feed: section}))
            produced = ingest(url, workdir, feed, "-c", str(cfg), "--stream", inp["stream"], *args)
            streams = stream_names(inp["stream"], int(inp.get("shards", 1)))
        got = feed_run(r, rpid, workdir, feed, section, streams)
        n = got["entries"] or 1
        got["producer_cpu_us_per_item"] = round(1e6 * produced["producer_cpu_s"] / n, 1)
        out[feed] = {**got, **produced}
        print(f"feed {feed}: {out[feed]}", file=sys.stderr)
    return out


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
) -> dict[str, Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    stream = "lat"
    cfg = workdir / f"{stream}.yaml"
    section = security_section(f"redis://127.0.0.1:{port}/0", stream, poll=0.02)
    write_config(cfg, {"security": section}, free_port(), webhook=url, group_wait=group_wait)
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
                pipe.xadd(names[j % 2], _fields(RawLine("ssh", "bg", text)))
            pipe.execute()
            ip = f"10.{g // 65536 % 256}.{g // 256 % 256}.{g % 256}"
            g += 1
            text = f"Jan  1 00:00:00 gw sshd[1]: Failed password for root from {ip} port 22 ssh2"
            fields = _fields(RawLine("ssh", "probe", text))
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


def idle_cpu(port: int, workdir: Path, seconds: float) -> float:
    stream = "idle"
    cfg = workdir / f"{stream}.yaml"
    write_config(
        cfg, {"security": security_section(f"redis://127.0.0.1:{port}/0", stream)}, free_port()
    )
    proc = start_vigil(cfg, workdir, "--recovery-dir", str(workdir / "rec-idle"))
    try:
        time.sleep(3.0 + 3.0)  # start-up, then settle
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    finally:
        stop(proc)
    return round((c1 - c0) / (t1 - t0), 4)


def scale_figures(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """Wall-clock and CPU-normalised scaling of the 2-process run over the 1-process one."""
    ratio = two["events_per_s"] / one["events_per_s"] if one["events_per_s"] else 0.0
    out: dict[str, Any] = {"scale_ratio": round(ratio, 3)}
    c1, c2 = one.get("cpu_s_per_process"), two.get("cpu_s_per_process")
    if not c1 or not c2 or not sum(c1) or not max(c2):
        return out
    per_line_1 = sum(c1) / one["window_lines"]
    per_line_2 = sum(c2) / two["window_lines"]
    busiest_2 = max(c2) / two["window_lines"]
    flows = sum(c2)
    producer = two["producer_cpu_s"] * two["window_lines"] / two["lines"]
    whole = flows + two["redis_cpu_s"] + producer
    return {
        **out,
        "scale_ratio_cpu": round(per_line_1 / busiest_2, 3),
        "cpu_per_line_2proc_vs_1proc": round(per_line_2 / per_line_1, 3),
        "cpu_us_per_line_1proc": round(1e6 * per_line_1, 2),
        "cpu_us_per_line_2proc": round(1e6 * per_line_2, 2),
        "cpu_share_busiest_2proc": round(max(c2) / flows, 3),
        # Where the CPU of the 2-process pipeline goes, per line: the flow processes,
        # redis-server while they read, and the producer (XADD, measured while filling).
        "cpu_split_2proc": {
            "flows": round(flows / whole, 3),
            "redis": round(two["redis_cpu_s"] / whole, 3),
            "producer": round(producer / whole, 3),
        },
        "producer_cpu_us_per_line": round(1e6 * two["producer_cpu_s"] / two["lines"], 2),
        "cores_used_1proc": one["cores_used"],
        "cores_used_2proc": two["cores_used"],
    }


def print_scale(one: dict[str, Any], two: dict[str, Any], fig: dict[str, Any]) -> None:
    def row(name: str, d: dict[str, Any]) -> str:
        cpu = "+".join(f"{c:.2f}" for c in d.get("cpu_s_per_process", []))
        return (
            f"{name:<12}{d['events_per_s']:>12,.0f}{d.get('lines_per_cpu_s', 0):>14,.0f}"
            f"{cpu:>14}{d.get('redis_cpu_s', 0):>8.2f}{d.get('cores_used', 0):>7.2f}"
        )

    print(
        f"{'security':<12}{'lines/s':>12}{'lines/CPU-s':>14}{'CPU s':>14}{'redis':>8}{'cores':>7}",
        file=sys.stderr,
    )
    print(row("1 process", one), file=sys.stderr)
    print(row("2 processes", two), file=sys.stderr)
    print(
        f"scale_ratio {fig.get('scale_ratio')} (wall), {fig.get('scale_ratio_cpu')} (CPU: a core "
        f"per process); a line costs {fig.get('cpu_per_line_2proc_vs_1proc')}x the CPU in a "
        f"2-process cluster; CPU split {fig.get('cpu_split_2proc')}",
        file=sys.stderr,
    )


def print_feeds(got: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'feed':<16}{'entries':>9}{'items/s':>11}{'items/CPU-s':>13}{'producer us/item':>18}",
        file=sys.stderr,
    )
    for feed, d in got.items():
        print(
            f"{feed:<16}{d['entries']:>9,}{d['items_per_s']:>11,.0f}{d['items_per_cpu_s']:>13,.0f}"
            f"{d['producer_cpu_us_per_item']:>18.1f}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    global BATCH_SIZE
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)",
    )
    ap.add_argument(
        "--feeds",
        default="security,service_queues,media,indicators",
        help="the feeds of the feeds part",
    )
    # 300k: at ~50k lines/s a backlog is read in a few seconds; fewer and the rate rests on
    # a handful of 0.25 s scrapes, with start-up skew between the two processes dominating.
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--sources", choices=("per-copy", "as-is"), default="per-copy")
    ap.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="security input's batch_size"
    )
    ap.add_argument("--rate", type=float, default=500.0, help="offered lines/s for latency")
    ap.add_argument("--seconds", type=float, default=20.0, help="latency run length")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--group-wait", type=float, default=0.0, help="alerting.timing.group_wait (s)")
    args = ap.parse_args(argv)
    BATCH_SIZE = args.batch_size
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    result: dict[str, Any] = {}
    lines = auth_lines(args.lines, args.sources == "per-copy")
    with tempfile.TemporaryDirectory(prefix="vigil-bench-bus-") as d:
        workdir = Path(d)
        rproc, port = start_redis(workdir)
        r = redis.Redis(port=port)
        try:
            if "idle" in parts:
                idle = idle_cpu(port, workdir, args.idle_seconds)
                print(f"idle CPU: {idle:.4f} of a core", file=sys.stderr)
                result["idle_cpu_fraction"] = idle
            if "scale" in parts:
                one = throughput(r, port, rproc.pid, workdir, 1, lines)
                print(f"1 process: {one}", file=sys.stderr)
                two = throughput(r, port, rproc.pid, workdir, 2, lines)
                print(f"2 processes: {two}", file=sys.stderr)
                fig = scale_figures(one, two)
                print_scale(one, two, fig)
                balance = worker_shares(16, 2)  # the security flow's default shards
                print(f"shards per worker (of 16): {balance}", file=sys.stderr)
                result.update(
                    events_per_s_1proc=one["events_per_s"],
                    events_per_s_2proc=two["events_per_s"],
                    **fig,
                    cpu_s_1proc=one.get("cpu_s_per_process"),
                    cpu_s_2proc=two.get("cpu_s_per_process"),
                    redis_cpu_s_1proc=one.get("redis_cpu_s"),
                    redis_cpu_s_2proc=two.get("redis_cpu_s"),
                    lines_per_process_2proc=two.get("lines_per_process"),
                    crashed_2proc=two.get("crashed", False),
                    shards_per_worker_2proc=balance,
                )
            if "feeds" in parts:
                only = [f for f in args.feeds.split(",") if f]
                got = feeds(r, port, rproc.pid, workdir, lines, only)
                print_feeds(got)
                for feed, fd in got.items():
                    result[f"{feed}_bus_items_per_s"] = fd["items_per_s"]
                    result[f"{feed}_bus_items_per_cpu_s"] = fd["items_per_cpu_s"]
                    result[f"{feed}_bus_entries"] = fd["entries"]
                    result[f"{feed}_producer_cpu_us_per_item"] = fd["producer_cpu_us_per_item"]
            if "latency" in parts:
                lat = latency(r, port, workdir, args.rate, args.seconds, args.group_wait)
                print(f"latency: {lat}", file=sys.stderr)
                result.update(
                    latency_p50_s=lat["latency_p50_s"],
                    latency_p99_s=lat["latency_p99_s"],
                    latency_offered_lines_per_s=args.rate,
                    latency_alerts=lat.get("alerts"),
                    latency_group_wait_s=args.group_wait,
                )
        finally:
            r.close()
            rproc.terminate()
            rproc.wait()
    result.update(
        lines=args.lines,
        sources=args.sources,
        batch_size=args.batch_size,
        cpus=os.cpu_count(),
        load_avg_1m=round(os.getloadavg()[0], 2),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
