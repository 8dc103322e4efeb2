"""The bus: Redis Streams source and producer, against a real ``redis-server``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bytewax.operators as op
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.testing import TestingSink, run_main
from conftest import RedisServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from vigil.flows.config import parse_config
from vigil.flows.inputs import RedisStreamInput, make_sources
from vigil.sinks.bus import BusWriter
from vigil.sources.redis_streams import (
    RedisStreamSource,
    StreamPosition,
    _to_line,
    committed_key,
)

from vigil.records import RawLine, entry_fields, stream_names

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rs(redis_server: RedisServer) -> Iterator[redis.Redis]:
    redis_server.flushall()
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def _lines(n: int, origin: str = "o") -> list[RawLine]:
    return [RawLine("ssh", origin, f"line {i}") for i in range(n)]


def _writer(url: str, **kw: object) -> BusWriter:
    return BusWriter(url, "bus", registry=CollectorRegistry(), **kw)  # type: ignore[arg-type]


def _part(url: str, resume: StreamPosition | None = None, **kw: object):  # type: ignore[no-untyped-def]
    src = RedisStreamSource(url, ["bus:0"], **kw)  # type: ignore[arg-type]
    return src.build_part("in", "bus:0", resume)


# ---------------------------------------------------------------- source


def test_reads_raw_lines_and_snapshots_the_last_id(redis_server: RedisServer, rs: redis.Redis):
    ids = [rs.xadd("bus:0", entry_fields(line)) for line in _lines(5)]
    part = _part(redis_server.url, batch_size=3)
    first = part.next_batch()
    assert [r.text for r in first] == ["line 0", "line 1", "line 2"]
    assert part.next_awake() is None  # a full batch: read again at once
    assert part.snapshot() == StreamPosition(ids[2].decode())
    assert [r.text for r in part.next_batch()] == ["line 3", "line 4"]
    part.close()


def test_empty_read_returns_at_once_and_sets_next_awake(
    redis_server: RedisServer, rs: redis.Redis
) -> None:
    part = _part(redis_server.url, poll_interval_s=0.2)
    t0 = time.perf_counter()
    assert part.next_batch() == []
    assert time.perf_counter() - t0 < 0.1  # no BLOCK: never holds the worker
    awake = part.next_awake()
    assert awake is not None and awake.tzinfo is not None
    part.close()


def test_block_zero_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="blocks forever"):
        RedisStreamSource(redis_server.url, ["bus:0"], block_ms=0)


def test_resume_rewinds_the_group_to_the_snapshot(
    redis_server: RedisServer, rs: redis.Redis
) -> None:
    ids = [rs.xadd("bus:0", entry_fields(line)) for line in _lines(6)]
    part = _part(redis_server.url)
    assert len(part.next_batch()) == 6  # the group has now delivered everything
    part.close()
    resumed = _part(redis_server.url, StreamPosition(ids[2].decode()))
    assert [r.text for r in resumed.next_batch()] == ["line 3", "line 4", "line 5"]
    resumed.close()


def test_restart_without_resume_state_continues_from_committed(
    redis_server: RedisServer, rs: redis.Redis
) -> None:
    ids = [rs.xadd("bus:0", entry_fields(line)) for line in _lines(4)]
    rs.hset(committed_key("bus:0"), "vigil", ids[1])
    part = _part(redis_server.url)
    assert [r.text for r in part.next_batch()] == ["line 2", "line 3"]
    part.close()


def test_start_dollar_skips_the_backlog(redis_server: RedisServer, rs: redis.Redis) -> None:
    for line in _lines(3):
        rs.xadd("bus:0", entry_fields(line))
    part = _part(redis_server.url, start="$")
    assert part.next_batch() == []
    rs.xadd("bus:0", entry_fields(RawLine("ssh", "o", "new")))
    assert [r.text for r in part.next_batch()] == ["new"]
    part.close()


def test_entry_fields_round_trip_with_defaults_and_oversize(
    redis_server: RedisServer, rs: redis.Redis
) -> None:
    rs.xadd("bus:0", entry_fields(RawLine("zeek", "c1", "a\tb", 12.5)))
    rs.xadd("bus:0", {"text": "no fmt"})
    rs.xadd("bus:0", {"text": "x" * 5000, "ref_ts": "nan"})
    rs.xadd("bus:0", {"fmt": "ssh", "text": b"\xffbad utf8"})
    part = _part(redis_server.url, fmt="access", max_line_bytes=1000)
    a, b, c, d = part.next_batch()
    assert a == RawLine("zeek", "c1", "a\tb", 12.5)
    assert (b.fmt, b.origin, b.text) == ("access", "redis:bus:0", "no fmt")
    assert c.oversize and len(c.text) == 512 and c.ref_ts == 0.0
    assert d.text == "\ufffdbad utf8"
    part.close()


def test_trim_respects_committed_positions_and_foreign_groups(
    redis_server: RedisServer, rs: redis.Redis
) -> None:
    ids = [rs.xadd("bus:0", entry_fields(line)) for line in _lines(1000)]
    # Another application's group has read 300 entries and acknowledged none of them.
    rs.xgroup_create("bus:0", "other", id="0")
    rs.xreadgroup("other", "c", {"bus:0": ">"}, count=300)
    part = _part(redis_server.url, ack_lag=1, batch_size=1000)
    part.next_batch()
    part.snapshot()  # position = last id; nothing committed yet (ack_lag=1)
    part.snapshot()  # commits the last id
    assert rs.hget(committed_key("bus:0"), "vigil") == ids[-1]
    first = rs.xrange("bus:0", count=1)[0][0]
    assert first == ids[0]  # the other group's pending entries hold everything back
    rs.xack("bus:0", "other", *ids[:300])
    part.snapshot()
    first = rs.xrange("bus:0", count=1)[0][0]
    # Trimmed (approximately: whole nodes only), and never past the other group's position.
    assert first <= ids[299]
    assert 701 <= rs.xlen("bus:0") < 1000
    part.close()


def test_flow_reads_every_shard(redis_server: RedisServer, rs: redis.Redis) -> None:
    w = _writer(redis_server.url, shards=3, shard_by="line")
    w.write(_lines(300))
    assert sum(rs.xlen(s) for s in stream_names("bus", 3)) == 300
    assert all(rs.xlen(s) > 0 for s in stream_names("bus", 3))
    cfg = parse_config(
        {
            "security": {
                "inputs": [
                    {"kind": "redis_stream", "url": redis_server.url, "stream": "bus", "shards": 3}
                ]
            }
        }
    )
    (src,) = make_sources(cfg.security)
    assert isinstance(src, RedisStreamSource) and src.list_parts() == stream_names("bus", 3)

    out: list[RawLine] = []
    flow = Dataflow("t")
    op.output("out", op.input("in", flow, _UntilEmpty(src)), TestingSink(out))
    run_main(flow)
    assert sorted(r.text for r in out) == sorted(f"line {i}" for i in range(300))


class _UntilEmpty(FixedPartitionedSource[RawLine, StreamPosition]):
    """The bus source, made finite for a test: a partition ends at its first empty read."""

    def __init__(self, inner: RedisStreamSource) -> None:
        self.inner = inner

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: StreamPosition | None):  # type: ignore[no-untyped-def]
        part = self.inner.build_part(step_id, for_part, resume_state)
        inner_next = part.next_batch

        def next_batch() -> list[RawLine]:
            batch = inner_next()
            if not batch:
                raise StopIteration
            return batch

        part.next_batch = next_batch  # type: ignore[method-assign]
        return part


def test_config_rejects_bad_values() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RedisStreamInput(shards=0)
    with pytest.raises(ValidationError):
        RedisStreamInput(start="now")  # type: ignore[arg-type]


# ---------------------------------------------------------------- producer


def test_drop_when_full_counts_drops(redis_server: RedisServer, rs: redis.Redis) -> None:
    reg = CollectorRegistry()
    w = BusWriter(redis_server.url, "bus", max_len=50, on_full="drop", registry=reg)
    assert w.write(_lines(80)) == 50
    assert w.dropped == 30 and rs.xlen("bus:0") == 50
    assert reg.get_sample_value("vigil_bus_dropped_total", {"stream": "bus:0"}) == 30
    assert reg.get_sample_value("vigil_bus_written_total", {"stream": "bus:0"}) == 50


def test_block_when_full_waits_for_consumers(redis_server: RedisServer, rs: redis.Redis) -> None:
    w = _writer(redis_server.url, max_len=50, on_full="block", max_wait_s=20)
    w.write(_lines(50))
    done = threading.Event()

    def produce() -> None:
        w.write(_lines(30))
        done.set()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    time.sleep(0.5)
    assert not done.is_set()  # blocked: the stream is full
    rs.xtrim("bus:0", maxlen=0, approximate=False)  # what a consumer's trim does
    assert done.wait(10)
    assert rs.xlen("bus:0") == 30 and w.dropped == 0


def test_block_gives_up_after_max_wait(redis_server: RedisServer, rs: redis.Redis) -> None:
    w = _writer(redis_server.url, max_len=5, on_full="block", max_wait_s=0.3)
    w.write(_lines(5))
    with pytest.raises(TimeoutError, match="stayed full"):
        w.write(_lines(1))


def test_shard_by_origin_keeps_order_per_origin(redis_server: RedisServer, rs: redis.Redis):
    w = _writer(redis_server.url, shards=4)
    lines = [RawLine("ssh", f"host{i % 5}", f"{i % 5}:{i}") for i in range(100)]
    w.write(lines)
    per_origin: dict[str, list[int]] = {}
    for name in stream_names("bus", 4):
        for _, f in rs.xrange(name):
            origin, seq = f[b"text"].decode().split(":")
            per_origin.setdefault(origin, []).append(int(seq))
    assert all(v == sorted(v) for v in per_origin.values())
    assert sum(map(len, per_origin.values())) == 100


# ---------------------------------------------------------------- CLI


def _vigil(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_replay_to_bus(redis_server: RedisServer, rs: redis.Redis) -> None:
    log = ROOT / "flows" / "demo_data" / "auth.log"
    n = len(log.read_bytes().rstrip(b"\n").split(b"\n"))
    url = redis_server.url
    r = _vigil(
        "replay", str(log), "--format", "ssh", "--to", url, "--stream", "bus", "--shards", "2"
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stderr.strip().splitlines()[-1])["summary"]
    assert summary == {"written": n, "dropped": 0}
    assert rs.xlen("bus:0") + rs.xlen("bus:1") == n


def test_ingest_files_to_bus(redis_server: RedisServer, rs: redis.Redis, tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("one\ntwo\nthree\n")
    r = _vigil(
        "ingest",
        "--to",
        redis_server.url,
        "--stream",
        "bus",
        "--file",
        str(tmp_path / "*.log"),
        "--format",
        "ssh",
        "--no-follow",
        "--max-len",
        "2",
        "--on-full",
        "drop",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1])["summary"] == {
        "written": 2,
        "dropped": 1,
    }
    texts = [f[b"text"] for _, f in rs.xrange("bus:0")]
    assert texts == [b"one", b"two"]


@given(
    st.dictionaries(
        st.sampled_from([b"fmt", b"origin", b"text", b"ref_ts", b"oversize", b"other"]),
        st.binary(max_size=300),
    )
)
def test_any_entry_becomes_a_raw_line(fields: dict[bytes, bytes]) -> None:
    """Whatever a producer wrote, the source yields one RawLine and never raises."""
    line = _to_line(fields, "ssh", "redis:bus:0", 200)
    assert isinstance(line, RawLine) and isinstance(line.text, str)
    assert math.isfinite(line.ref_ts)
    assert len(line.text) <= 200 or line.oversize


# ---------------------------------------------------------------- Kafka (optional extra)


def test_kafka_message_becomes_a_line() -> None:
    from vigil.sources.kafka import message_line

    line = message_line(b"x" * 2000, [("origin", b"fw1")], "t", "iptables", max_line_bytes=1000)
    assert (line.fmt, line.origin, line.oversize, len(line.text)) == ("iptables", "fw1", True, 512)
    assert message_line(None, None, "t", "ssh") == RawLine("ssh", "kafka:t", "")


def test_kafka_input_without_the_extra_says_what_to_install() -> None:
    cfg = parse_config(
        {"security": {"inputs": [{"kind": "kafka", "brokers": ["b:9092"], "topics": ["t"]}]}}
    )
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        from vigil.flows.errors import ConfigError

        with pytest.raises(ConfigError, match=r"vigil\[kafka\]"):
            make_sources(cfg.security)
    else:  # pragma: no cover - the extra is installed: building needs no broker
        (src,) = make_sources(cfg.security)
        assert src.__class__.__name__ == "KafkaLineSource"


def test_redis_down_never_blocks_and_backs_off() -> None:
    from conftest import free_port

    part = _part(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    t0 = time.perf_counter()
    assert part.next_batch() == []
    assert time.perf_counter() - t0 < 0.5
    first = part.next_awake()
    assert first is not None
    part.next_batch()
    second = part.next_awake()
    assert second is not None and second > first  # exponential backoff, via next_awake
    assert part.snapshot() is None  # no position of its own yet
    part.close()
