"""The service-queue and indicator feeds on the bus (Redis Streams), on real data.

Each feed reads its records from a real ``redis-server`` (``vigil ingest --feed ...`` writes
them) and must give exactly what reading the same file directly gives: the same
detections, the same queue figures, the same dead letters. Then ``vigil run`` of each feed
is killed with SIGKILL mid-stream and restarted from its recovery directory: every record
is processed or dead-lettered, as counted, and the alerts are those of the direct run.

Data: Boston 311, Q1 2015 (``shared/datasets/service_queues``) and NAB's dev series
(``shared/datasets/nab``). Labels are not folded here (``top_*`` above the number of
agencies, services and channels): a replay admits the most frequent names of its whole
table, a live feed the first ones it sees, so with folding the two differ by design.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from bytewax.testing import TestingSink, run_main
from conftest import AofRedisServer, RedisServer
from test_bus import _UntilEmpty
from test_faults import _jsonl, wait_until
from vigil.flows.cli.bus import indicator_lines
from vigil.flows.config import parse_config
from vigil.flows.indicators.flow import build_flow as indicators_flow
from vigil.flows.indicators.flow import make_sources as indicator_sources
from vigil.flows.queues.flow import build_flow as queues_flow
from vigil.flows.queues.flow import make_sources as queue_sources
from vigil.flows.queues.flow import replay
from vigil.flows.queues.mapping import BUS_EVENT, bus_rows, hash_id
from vigil.sinks.bus import BusWriter

from vigil.records import DeadLetter, Detection, RawLine, record_line

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BOSTON = DATA / "service_queues" / "boston_311_2015q1" / "boston_311_2015Q1.csv"
NAB = DATA / "nab"
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]

pytestmark = pytest.mark.skipif(
    not (BOSTON.exists() and NAB.exists()), reason="../shared/datasets not present"
)


# ---------------------------------------------------------------- helpers
def boston_section(**inp: Any) -> dict[str, Any]:
    """The shipped Boston configuration, labels unfolded, its input replaced by ``inp``."""
    raw = yaml.safe_load((ROOT / "examples" / "boston311.yaml").read_text())
    sq = raw["service_queues"]
    mapping = sq["inputs"][0]["mapping"]
    sq.update(top_agencies=50, top_services=500, top_channels=50)
    sq["inputs"] = [{**inp, "mapping": mapping}]
    return sq


def boston_file_section() -> dict[str, Any]:
    return boston_section(kind="replay", paths=[str(BOSTON)], format="csv")


def boston_bus_section(url: str, stream: str) -> dict[str, Any]:
    return boston_section(kind="redis_stream", url=url, stream=stream, batch_size=2000)


def boston_lines() -> list[RawLine]:
    mapping = parse_config({"service_queues": boston_file_section()}).service_queues
    rows, unreadable = bus_rows([str(BOSTON)], "csv", mapping.inputs[0].mapping)
    assert unreadable == 0
    return [record_line(r, "service_queues") for r in rows]


def write(url: str, stream: str, lines: list[RawLine], shards: int = 1) -> None:
    from prometheus_client import CollectorRegistry

    w = BusWriter(url, stream, shards, registry=CollectorRegistry())
    for i in range(0, len(lines), 2000):
        w.write(lines[i : i + 2000])
    w.close()


def exact(s: Any) -> str:
    """A queue figure without its (sketched, randomized) processing-time quantiles."""
    return repr(dataclasses.replace(s, p50_s=0.0, p90_s=0.0, p99_s=0.0))


def det_key(d: Detection) -> tuple[Any, ...]:
    return (d.kind, d.entity, d.ts, d.observed, d.threshold, d.extra)


NAB_FILES = [
    NAB / "realKnownCause" / "ambient_temperature_system_failure.csv",
    NAB / "realKnownCause" / "ec2_request_latency_system_failure.csv",
    NAB / "artificialWithAnomaly" / "art_daily_jumpsup.csv",
]


def nab_section(**inp: Any) -> dict[str, Any]:
    cols = {"series": None, "ts": "timestamp", "value": "value"}
    # 16 shards put these three series in three shards. Series of one shard share its
    # event clock (idle expiry), so their results depend on how files interleave, which
    # differs between reading three files at once and one stream holding them in turn.
    return {"inputs": [{**inp, "columns": cols, "tz": "UTC"}], "shards": 16}


def run_indicators(section: dict[str, Any], until_empty: bool) -> tuple[list[Any], list[Any]]:
    cfg = parse_config({"indicators": section}).indicators
    srcs = indicator_sources(cfg)
    if until_empty:
        srcs = [(_UntilEmpty(s), inp) for s, inp in srcs]  # type: ignore[arg-type]
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    metrics: list[Any] = []
    run_main(indicators_flow(cfg, srcs, TestingSink(dets), TestingSink(dead), TestingSink(metrics)))
    return dets, dead


# ---------------------------------------------------------------- same as the file
def test_queue_rows_from_the_bus_give_the_figures_of_the_file(redis_server: RedisServer) -> None:
    direct_dets, direct_stats, direct_dead = replay(
        parse_config({"service_queues": boston_file_section()}).service_queues
    )
    lines = boston_lines()
    # A case becomes its arrival and its completion, each one entry at its own time.
    kinds = collections.Counter(json.loads(x.text)[BUS_EVENT] for x in lines)
    assert kinds["received"] > 26_000 and kinds["closed"] > 15_000, kinds
    assert all("case_title" not in x.text and "latitude" not in x.text for x in lines[:100])
    write(redis_server.url, "q", lines)

    cfg = parse_config({"service_queues": boston_bus_section(redis_server.url, "q")})
    (src,) = queue_sources(cfg.service_queues)
    dets: list[Detection] = []
    stats: list[Any] = []
    dead: list[DeadLetter] = []
    run_main(
        queues_flow(
            cfg.service_queues,
            [_UntilEmpty(src)],  # type: ignore[list-item]
            TestingSink(dets),
            TestingSink(dead),
            TestingSink(stats),
        )
    )
    assert len(direct_dets) > 20
    assert sorted(map(det_key, dets)) == sorted(map(det_key, direct_dets))
    assert sorted(map(exact, stats)) == sorted(map(exact, direct_stats))
    # Processing-time quantiles come from randomized KLL sketches: two runs over the same
    # file differ in ~0.4% of windows. The bus run may differ no more than that.
    same = collections.Counter(map(repr, stats)) & collections.Counter(map(repr, direct_stats))
    assert sum(same.values()) >= 0.98 * len(direct_stats)
    assert collections.Counter((d.step, d.reason) for d in dead) == collections.Counter(
        (d.step, d.reason) for d in direct_dead
    )


def test_indicator_records_from_the_bus_give_the_alerts_of_the_file(
    redis_server: RedisServer,
) -> None:
    files = [str(p) for p in NAB_FILES]
    direct_dets, direct_dead = run_indicators(
        nab_section(kind="file", paths=files, format="csv"), until_empty=False
    )
    write(redis_server.url, "ind", indicator_lines(files), shards=2)
    dets, dead = run_indicators(
        nab_section(kind="redis_stream", url=redis_server.url, stream="ind", shards=2),
        until_empty=True,
    )
    assert len(direct_dets) >= 3
    assert sorted(map(det_key, dets)) == sorted(map(det_key, direct_dets))
    assert [(d.reason) for d in dead] == [d.reason for d in direct_dead] == []


# ---------------------------------------------------------------- SIGKILL and restart
class FeedRun:
    """``vigil run FEED`` as a subprocess with a recovery directory, killed and restarted."""

    def __init__(self, feed: str, cfg: Path, tmp: Path) -> None:
        self.feed, self.cfg, self.tmp = feed, cfg, tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        argv = [*VIGIL, "run", self.feed, "-c", str(self.cfg)]
        argv += ["--recovery-dir", str(self.tmp / "recovery"), "--snapshot-interval", "0.5"]
        with open(self.tmp / f"vigil-{self.runs}.log", "wb") as log:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=log, cwd=self.tmp, env=env
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def log_text(self) -> str:
        return (self.tmp / f"vigil-{self.runs}.log").read_text(errors="replace")


class Producer(threading.Thread):
    """Writes ``lines`` into the bus in chunks, paced over ``duration_s``; holds back the
    last ``tail`` lines until :attr:`release` is set (so the final run has work to do)."""

    def __init__(self, url: str, stream: str, lines: list[RawLine], duration_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.stream, self.lines, self.duration_s = url, stream, lines, duration_s
        self.tail = min(3000, len(lines) // 10)
        self.release = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from prometheus_client import CollectorRegistry

        try:
            w = BusWriter(self.url, self.stream, 1, registry=CollectorRegistry(), max_wait_s=60)
            head = self.lines[: -self.tail]
            chunk = max(1, len(head) // 40)
            for i in range(0, len(head), chunk):
                w.write(head[i : i + chunk])
                time.sleep(self.duration_s / 40)
            self.release.wait(timeout=120)
            w.write(self.lines[-self.tail :])
            w.close()
        except BaseException as ex:  # reported by the test
            self.error = ex


def all_read(url: str, stream: str, total: int) -> bool:
    """The flow's group has been delivered every entry of the stream."""
    r = redis.Redis.from_url(url)
    try:
        info = r.xinfo_stream(stream)
        groups = r.xinfo_groups(stream)
    finally:
        r.close()
    last = info["last-generated-id"]
    return info["entries-added"] == total and any(g["last-delivered-id"] == last for g in groups)


def entries_read(url: str, stream: str) -> int:
    """Entries the flow's group has been delivered (0 before it exists)."""
    r = redis.Redis.from_url(url)
    try:
        groups = r.xinfo_groups(stream) if r.exists(stream) else []
    finally:
        r.close()
    return max((int(g.get("entries-read") or 0) for g in groups), default=0)


def kill_loop(run: FeedRun, producer: Producer, *, kills: int, seed: int) -> list[int]:
    """Kill ``run`` ``kills`` times while ``producer`` writes; return the entries read at
    each kill (so the test can show the kills fell mid-stream)."""
    rng = random.Random(seed)
    stream = f"{producer.stream}:0"
    at_kill = []
    producer.start()
    for _ in range(kills):
        run.start()
        time.sleep(rng.uniform(1.5, 3.5))
        assert run.proc is not None and run.proc.poll() is None, run.log_text()[-2000:]
        run.kill()
        at_kill.append(entries_read(producer.url, stream))
    producer.join(timeout=0.1)
    run.start()
    producer.release.set()
    producer.join(timeout=180)
    assert producer.error is None, producer.error
    return at_kill


def feed_config(tmp: Path, section: str, body: dict[str, Any], metrics_port: int = 0) -> Path:
    cfg = {
        section: body,
        "metrics": {"port": metrics_port},
        "alerts": {"file": str(tmp / "alerts.jsonl")},
        "dead_letters": {"file": str(tmp / "dead.jsonl")},
    }
    path = tmp / "vigil.yaml"
    path.write_text(json.dumps(cfg))
    return path


def gauges(port: int, name: str) -> dict[str, float]:
    """``agency -> value`` of a queue gauge for the agency as a whole."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels.get("service") == "_all":
                out[s.labels["agency"]] = s.value
    return out


def test_queue_feed_killed_mid_stream_loses_nothing(
    aof_redis: AofRedisServer, tmp_path: Path
) -> None:
    from conftest import free_port

    lines = boston_lines()
    # Rows the flow must dead-letter, each with an id the test can recognise (hashed, as
    # the dead letter shows it), spread over the stream.
    rng = random.Random(7)
    bad_ids = {f"bad-{k}" for k in range(40)}
    for rid in sorted(bad_ids):
        row = {"case_enquiry_id": rid, "department": "PWDx", "open_dt": "not a time"}
        lines.insert(rng.randrange(len(lines)), record_line(row, "service_queues"))
    # What the flow must show at the end: the backlog and overdue count of each agency in
    # the newest window it closed, from an uninterrupted run over the same entries.
    write(aof_redis.url, "expected", lines)
    cfg = parse_config({"service_queues": boston_bus_section(aof_redis.url, "expected")})
    (src,) = queue_sources(cfg.service_queues)
    stats: list[Any] = []
    sink: list[Any] = []
    run_main(
        queues_flow(
            cfg.service_queues,
            [_UntilEmpty(src)],  # type: ignore[list-item]
            TestingSink(sink),
            TestingSink(sink),
            TestingSink(stats),
        )
    )
    newest = max(json_time(x) for x in lines)
    backlog: dict[str, float] = {}
    overdue: dict[str, float] = {}
    for s in stats:
        if s.service == "" and s.ts <= newest:
            backlog[s.agency], overdue[s.agency] = s.backlog, s.overdue

    port = free_port()
    path = feed_config(
        tmp_path, "service_queues", boston_bus_section(aof_redis.url, "q"), metrics_port=port
    )
    run = FeedRun("service_queues", path, tmp_path)
    try:
        at_kill = kill_loop(run, Producer(aof_redis.url, "q", lines, duration_s=8), kills=3, seed=3)
        assert at_kill[0] > 0 and at_kill[-1] < len(lines), at_kill  # killed mid-stream
        wait_until(lambda: all_read(aof_redis.url, "q:0", len(lines)), 120, "every entry read")
        expected_dead = {hash_id(rid) for rid in bad_ids}
        wait_until(lambda: dead_ids(tmp_path) >= expected_dead, 60, "every bad row dead-lettered")
        wait_until(
            lambda: gauges(port, "vigil_queue_backlog_requests") == backlog,
            60,
            "the backlog of every agency",
        )
        assert gauges(port, "vigil_queue_overdue_requests") == overdue
        assert dead_ids(tmp_path) == expected_dead
        assert run.runs == 4
    finally:
        run.stop()


def json_time(line: RawLine) -> float:
    """The event time of a Boston bus row (its open or close time, New York)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    row = json.loads(line.text)
    key = "closed_dt" if row.get(BUS_EVENT) == "closed" else "open_dt"
    try:
        dt = datetime.strptime(row[key], "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007
    except ValueError:
        return 0.0
    return dt.replace(tzinfo=ZoneInfo("America/New_York")).timestamp()


def dead_ids(tmp: Path) -> set[str]:
    out = set()
    for d in _jsonl(tmp / "dead.jsonl"):
        try:
            out.add(json.loads(d["payload"])["case_enquiry_id"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def test_indicator_feed_killed_mid_stream_loses_nothing(
    aof_redis: AofRedisServer, tmp_path: Path
) -> None:
    files = [str(p) for p in NAB_FILES]
    direct, _ = run_indicators(
        nab_section(kind="file", paths=files, format="csv"), until_empty=False
    )
    expected = {(d.entity, d.ts) for d in direct}
    assert len(expected) >= 10
    lines = indicator_lines(files)
    rng = random.Random(5)
    bad = {f"bad-{k}" for k in range(30)}
    for tag in sorted(bad):
        rec = record_line({"timestamp": tag, "value": "1"}, files[0], csv_row=True)
        lines.insert(rng.randrange(len(lines)), rec)
    body = nab_section(kind="redis_stream", url=aof_redis.url, stream="ind", batch_size=200)
    run = FeedRun("indicators", feed_config(tmp_path, "indicators", body), tmp_path)
    try:
        at_kill = kill_loop(
            run, Producer(aof_redis.url, "ind", lines, duration_s=8), kills=3, seed=4
        )
        assert at_kill[0] > 0 and at_kill[-1] < len(lines), at_kill  # killed mid-stream
        wait_until(lambda: all_read(aof_redis.url, "ind:0", len(lines)), 120, "every entry read")

        def fired() -> set[tuple[str, float]]:
            from datetime import datetime

            return {
                (a["labels"]["entity"], datetime.fromisoformat(a["startsAt"]).timestamp())
                for a in _jsonl(tmp_path / "alerts.jsonl")
            }

        def dead() -> set[str]:
            return {json.loads(d["payload"])["timestamp"] for d in _jsonl(tmp_path / "dead.jsonl")}

        wait_until(lambda: dead() == bad and fired() >= expected, 60, "every record accounted")
        time.sleep(1.0)  # anything extra would show up now
        assert fired() == expected
        assert dead() == bad
    finally:
        run.stop()


# ---------------------------------------------------------------- vigil ingest --feed
def _vigil(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*VIGIL, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_ingest_writes_queue_rows_and_indicator_records(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    cfg = tmp_path / "q.yaml"
    cfg.write_text(json.dumps({"service_queues": boston_bus_section(url, "vigil:queues")}))
    r = _vigil("ingest", "--feed", "service_queues", "-c", str(cfg), "--file", str(BOSTON))
    assert r.returncode == 2 and "--to" in r.stderr  # the bus is not optional
    r = _vigil(
        "ingest", "--to", url, "--feed", "service_queues", "-c", str(cfg), "--file", str(BOSTON)
    )
    assert r.returncode == 0, r.stderr
    expected = boston_lines()
    summary = json.loads(r.stderr.strip().splitlines()[-1])["summary"]
    assert summary == {"written": len(expected), "dropped": 0, "unreadable": 0}
    rs = redis.Redis.from_url(url)
    head = rs.xrange("vigil:queues:0", count=3)
    assert [f[b"text"].decode() for _, f in head] == [x.text for x in expected[:3]]
    assert {f[b"fmt"] for _, f in head} == {b"json"}

    files = [str(p) for p in NAB_FILES]
    r = _vigil("ingest", "--to", url, "--feed", "indicators", "--shards", "2", "--file", *files[:1])
    assert r.returncode == 0, r.stderr
    n = len(indicator_lines(files[:1]))
    assert json.loads(r.stderr.strip().splitlines()[-1])["summary"]["written"] == n
    assert rs.xlen("vigil:indicators:0") + rs.xlen("vigil:indicators:1") == n
    rs.close()


def test_ingest_mistakes_are_one_line_and_a_nonzero_exit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    for args, says in [
        (["--feed", "service_queues", "--file", str(BOSTON)], "needs --config"),
        (["--feed", "indicators", "--syslog", "5514"], "--syslog receives log lines"),
        (["--feed", "indicators", "--file", str(tmp_path / "none.csv")], "cannot read"),
    ]:
        r = _vigil("ingest", "--to", url, *args)
        assert r.returncode != 0 and says in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_case_row_sent_again_when_it_closes_is_one_request(redis_server: RedisServer) -> None:
    """A live portal's case table: a row is sent when the case opens and again, with its
    close time, when it closes; the flow counts one arrival and one completion."""
    import csv

    with BOSTON.open(encoding="utf-8") as f:
        rows = [r for _, r in zip(range(400), csv.DictReader(f), strict=False)]
    closed = [r for r in rows if r["closed_dt"] and r["department"] == "PWDx"][:2]
    assert len(closed) == 2
    opened = [{**r, "closed_dt": "", "ontime_status": "", "case_status": "Open"} for r in closed]
    # Both opened, then both sent again with their close times, in close order.
    sent = [*opened, *sorted(closed, key=lambda r: r["closed_dt"])]
    lines = [record_line(r, "portal", csv_row=True) for r in sent]
    write(redis_server.url, "live", lines)
    cfg = parse_config({"service_queues": boston_bus_section(redis_server.url, "live")})
    (src,) = queue_sources(cfg.service_queues)
    stats: list[Any] = []
    dead: list[DeadLetter] = []
    dets: list[Detection] = []
    run_main(
        queues_flow(
            cfg.service_queues,
            [_UntilEmpty(src)],  # type: ignore[list-item]
            TestingSink(dets),
            TestingSink(dead),
            TestingSink(stats),
        )
    )
    agency = [s for s in stats if s.service == "" and s.agency == "PWDx"]
    assert sum(s.arrivals for s in agency) == 2
    assert sum(s.completions for s in agency) == 2
    assert agency[-1].backlog == 0
    assert dead == []
