"""A 2-process cluster (``vigil run --processes 2``) started on a large Redis Streams backlog.

Regression test for the crash recorded in the README: a cluster given 100 000+ lines at once
died within a second of starting with ``Send thread panic`` (bytewax's inter-process
transport), while 50 000 lines ran. The whole backlog must be read, every line counted once
across the processes, and both processes must still be running when it is done.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
from conftest import RedisServer, free_port

from vigil.records import RawLine, entry_fields, stream_names

ROOT = Path(__file__).resolve().parents[1]
AUTH_LOG = ROOT / "flows" / "demo_data" / "auth.log"
LINES = 150_000
_LINES_TOTAL = re.compile(r"^vigil_lines_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def _fill(url: str, stream: str, n: int) -> None:
    base = AUTH_LOG.read_text().splitlines()
    names = stream_names(stream, 2)
    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(names[i % 2], entry_fields(RawLine("ssh", f"c{i % 2}", base[i % len(base)])))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    r.close()


def _lines_counted(ports: list[int]) -> float | None:
    total = 0.0
    for p in ports:
        try:
            text = httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=1).text
        except httpx.HTTPError:
            return None
        total += sum(float(x) for x in _LINES_TOTAL.findall(text))
    return total


def _cluster_pids(log: Path) -> list[int]:
    m = re.search(r'"pids": \[([0-9, ]+)\]', log.read_text(errors="replace"))
    return [int(x) for x in m.group(1).split(",")] if m else []


def test_two_processes_read_a_150k_backlog(redis_server: RedisServer, tmp_path: Path) -> None:
    stream = f"cluster-{os.getpid()}"  # the server is shared by the session
    _fill(redis_server.url, stream, LINES)
    mport = free_port()
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(
        json.dumps(
            {
                "security": {
                    "year": 2017,
                    "inputs": [
                        {
                            "kind": "redis_stream",
                            "url": redis_server.url,
                            "stream": stream,
                            "shards": 2,
                            "batch_size": 2000,
                        }
                    ],
                },
                "metrics": {"port": mport},
                "alerts": {"file": str(tmp_path / "alerts.jsonl")},
                "dead_letters": {"file": str(tmp_path / "dead.jsonl")},
            }
        )
    )
    log = tmp_path / "vigil.log"
    argv = [sys.executable, "-m", "vigil.flows.cli", "run", "security", "-c", str(cfg)]
    argv += ["--processes", "2", "--recovery-dir", str(tmp_path / "recovery")]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "RUST_BACKTRACE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    got: float | None = None
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and proc.poll() is None:
            got = _lines_counted([mport, mport + 1])
            if got is not None and got >= LINES:
                break
            time.sleep(0.25)
        text = log.read_text(errors="replace")
        assert proc.poll() is None, f"cluster exited with {proc.returncode}:\n{text[-3000:]}"
        assert "panic" not in text.lower(), text[-3000:]
        pids = _cluster_pids(log)
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, 0)  # both members still running
        assert got == LINES, f"counted {got} of {LINES} lines"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
