"""CLI of the bus and of scale-out: ``vigil ingest``, ``vigil replay --to``, local clusters.

::

    vigil ingest --to redis://HOST:6379/0 --file '/var/log/auth.log' --format ssh
    vigil ingest --to redis://HOST:6379/0 --syslog 0.0.0.0:5514 --format ssh --on-full drop
    vigil ingest --to redis://HOST:6379/0 --feed indicators --file 'kpi/*.csv'
    vigil ingest --to redis://HOST:6379/0 --feed service_queues -c vigil.yaml --csv cases.csv
    vigil ingest --to redis://HOST:6379/0 --feed media --rss https://example.org/rss
    vigil replay auth.log --format ssh --to redis://HOST:6379/0 --shards 4
    vigil run security -c vigil.yaml --processes 2 --recovery-dir state/

``vigil ingest`` runs a small dataflow on a collector host: Vigil's own file follower and
syslog receiver (:mod:`vigil.sources.files`, :mod:`vigil.sources.syslog`) feed
:class:`vigil.sinks.bus.BusSink`.
With ``--state-dir`` file offsets survive a restart (bytewax recovery), so after a crash the
lines since the last snapshot are sent again: the bus gets every line at least once.

``--feed indicators``, ``--feed service_queues`` and ``--feed media`` write records instead
of log lines, one record per entry (:func:`vigil.records.record_line`), from CSV, JSON,
RSS files and polled HTTP/RSS URLs (:mod:`vigil.flows.cli.ingest_records`) through the
same :class:`~vigil.sinks.bus.BusWriter` (same sharding, back-pressure and ``--on-full``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.recovery import init_db_dir
from bytewax.testing import run_main
from vigil.sinks.bus import BusSink, BusWriter

from vigil.records import RawLine

__all__ = ["register", "replay_to_bus", "run_local_cluster"]

log = logging.getLogger("vigil")


# ---------------------------------------------------------------- producers
def _writer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, metavar="URL", help="redis://HOST:PORT/DB of the bus")
    p.add_argument(
        "--stream",
        help="stream name (default vigil:lines; --feed indicators: vigil:indicators, "
        "--feed service_queues: vigil:queues, --feed media: vigil:media, the defaults of "
        "those feeds' bus inputs)",
    )
    p.add_argument("--shards", type=int, default=1, help="streams <stream>:0..N-1 (default 1)")
    p.add_argument(
        "--max-len", type=int, default=1_000_000, help="entries per stream at most (default 1e6)"
    )
    p.add_argument(
        "--on-full",
        choices=("block", "drop"),
        default="block",
        help="when a stream is full: wait for consumers (default) or drop and count",
    )
    p.add_argument("--shard-by", choices=("origin", "line"), default="origin")


#: The bus each feed's ``redis_stream`` input reads by default.
DEFAULT_STREAMS = {
    "security": "vigil:lines",
    "indicators": "vigil:indicators",
    "service_queues": "vigil:queues",
    "media": "vigil:media",
}


class _Writers:
    """Creates one BusWriter per worker and remembers them for the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.made: list[BusWriter] = []
        self._lock = threading.Lock()

    def __call__(self) -> BusWriter:
        a = self.args
        feed = getattr(a, "feed", "security")
        w = BusWriter(
            a.to,
            a.stream or DEFAULT_STREAMS[feed],
            a.shards,
            max_len=a.max_len,
            on_full=a.on_full,
            shard_by=a.shard_by,
        )
        with self._lock:
            self.made.append(w)
        return w

    def summary(self) -> dict[str, int]:
        return {
            "written": sum(w.written for w in self.made),
            "dropped": sum(w.dropped for w in self.made),
        }


def _produce(
    sources: Sequence[Source[Any]],
    args: argparse.Namespace,
    *,
    state_dir: str | None = None,
    to_lines: Callable[[list[Any]], list[RawLine]] | None = None,
) -> dict[str, int]:
    """Run ``sources`` into the bus until they end (or Ctrl-C); ``to_lines`` maps each
    batch of items to lines when the sources do not yield lines themselves."""
    flow = Dataflow("vigil_ingest")
    ins = [op.input(f"ingest_in_{i}", flow, s) for i, s in enumerate(sources)]
    raw = ins[0] if len(ins) == 1 else op.merge("ingest_inputs", *ins)
    if to_lines is not None:
        raw = op.flat_map_batch("ingest_lines", raw, to_lines)
    writers = _Writers(args)
    op.output("bus_out", raw, BusSink(writers))
    rc = None
    if state_dir is not None:
        from vigil.flows.cli.runner import recovery_config

        rc = recovery_config(state_dir, 1)
    with contextlib.suppress(KeyboardInterrupt):
        run_main(flow, epoch_interval=timedelta(seconds=1), recovery_config=rc)
    return writers.summary()


def replay_to_bus(args: argparse.Namespace) -> int:
    """``vigil replay FILE... --to URL``: write the lines into the bus, paced by ``--speed``."""
    from vigil.flows.security.parsers import LineParser
    from vigil.sources.replay import ReplaySource

    src = ReplaySource(
        args.files,
        args.format,
        speed=args.speed,
        time_of=LineParser(year=args.year).event_time,
    )
    summary = _produce([src], args)
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        return host or "0.0.0.0", int(port)
    except ValueError as ex:
        msg = f"expected [HOST:]PORT, got {value!r}"
        raise argparse.ArgumentTypeError(msg) from ex


def _positive(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = 0.0
    if not x > 0:
        msg = f"expected a number of seconds above 0, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return x


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        msg = f"expected a whole number of at least 1, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(value)


FEEDS = ("security", "indicators", "service_queues", "media")
_CHUNK = 1000


def indicator_lines(paths: Sequence[str], fmt: str | None = None) -> list[RawLine]:
    """The records of indicator files (CSV with a header row, or JSON lines) as bus lines.

    ``fmt`` ``csv`` or ``jsonl``; ``None``: by each file's extension (``.csv`` is CSV). A JSON
    line travels as it is (``fmt`` ``json``); a CSV row as ``{column: value}`` (``csv_row``),
    except a row with more fields than the header, which travels as its raw text so the flow
    dead-letters it as a bad CSV row, as it does reading the file. Blank lines are skipped.
    """
    import csv

    from vigil.sources.replay import expand_paths

    from vigil.records import RECORD_CSV_ROW, RECORD_JSON, record_line

    out: list[RawLine] = []
    for path in expand_paths(paths):
        kind = fmt or ("csv" if path.endswith(".csv") else "jsonl")
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            lines = [ln.rstrip("\r\n") for ln in f]
        if kind == "csv":
            header = next(csv.reader(lines[:1]), [])
            for ln in lines[1:]:
                if not ln.strip():
                    continue
                row = next(csv.reader([ln]), [])
                if len(row) > len(header):
                    out.append(RawLine(RECORD_CSV_ROW, path, ln))
                else:
                    out.append(
                        record_line(dict(zip(header, row, strict=False)), path, csv_row=True)
                    )
        else:
            out.extend(RawLine(RECORD_JSON, path, ln) for ln in lines if ln.strip())
    return out


def cmd_ingest(args: argparse.Namespace) -> int:
    from vigil.sinks.prometheus import serve
    from vigil.sources.files import FileTailSource
    from vigil.sources.syslog import SyslogSource

    if args.feed != "security":
        from vigil.flows.cli.ingest_records import ingest_records

        return ingest_records(args)
    if args.csv or args.json or args.rss or args.http:
        print(
            "vigil ingest: --csv, --json, --rss and --http send records (--feed indicators, "
            "service_queues or media); log lines come from --file or --syslog",
            file=sys.stderr,
        )
        return 2
    if not args.file and args.syslog is None:
        print("vigil ingest: give --file PATTERN and/or --syslog [HOST:]PORT", file=sys.stderr)
        return 2
    sources: list[Source[RawLine]] = []
    if args.file:
        sources.append(
            FileTailSource(
                args.file,
                args.format,
                follow=not args.no_follow,
                start_at_end=args.start_at_end,
                max_line_bytes=args.max_line_bytes,
            )
        )
    if args.syslog is not None:
        host, port = args.syslog
        sources.append(
            SyslogSource(
                host,
                port,
                fmt=args.format,
                max_line_bytes=args.max_line_bytes,
                on_bound=lambda p: print(f"syslog: listening on {host}:{p}", file=sys.stderr),
            )
        )
    stop = None
    if args.metrics_port is not None:
        bound, stop = serve(args.metrics_host, args.metrics_port)
        print(f"metrics: http://{args.metrics_host}:{bound}/metrics", file=sys.stderr)
    try:
        summary = _produce(sources, args, state_dir=args.state_dir)
    finally:
        if stop is not None:
            stop()
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


# ---------------------------------------------------------------- local cluster
def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # If the supervisor is killed (even with SIGKILL), its processes go too.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def split_recovery_dir(directory: str, processes: int, workers: int) -> list[Path]:
    """One recovery directory per process, ``<directory>/process-<i>``, holding its share.

    The same layout as a cluster across hosts, where each process holds only its own
    partitions. On first use ``processes * workers`` partitions are created and partition
    ``k`` goes to process ``k % processes``.
    """
    root = Path(directory)
    dirs = [root / f"process-{i}" for i in range(processes)]
    if not any(d.glob("part-*.sqlite3") for d in dirs if d.is_dir()):
        staging = root / "new"
        staging.mkdir(parents=True, exist_ok=True)
        init_db_dir(staging, processes * max(1, workers))
        for d in dirs:
            d.mkdir(exist_ok=True)
        for f in sorted(staging.glob("part-*.sqlite3")):
            k = int(f.stem.split("-")[1])
            f.rename(dirs[k % processes] / f.name)
        staging.rmdir()
    return dirs


def run_local_cluster(args: argparse.Namespace) -> int:
    """Run ``args.processes`` local processes of one cluster and supervise them.

    Each child is ``vigil run ... --process-id i --addresses <all>``, with metrics on the
    base port + ``i``. The recovery partitions (one per worker of the cluster) are created
    here, before any child starts, one directory per process (:func:`split_recovery_dir`).
    When one process ends, the others are stopped (a bytewax cluster cannot go on without
    a member) and its exit status is returned; restart the command to resume from the last
    snapshot.
    """
    n = args.processes
    addrs = ";".join(f"127.0.0.1:{p}" for p in _free_ports(n))
    dirs = split_recovery_dir(args.recovery_dir, n, args.workers) if args.recovery_dir else None
    base = [
        sys.executable,
        "-m",
        "vigil.flows.cli",
        "--log-level",
        args.log_level,
        "run",
        *args.flows,
    ]
    base += ["--config", args.config, "--workers", str(args.workers)]
    base += ["--snapshot-interval", str(args.snapshot_interval)]
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(n):
        argv = [*base, "--process-id", str(i), "--addresses", addrs]
        if dirs is not None:
            argv += ["--recovery-dir", str(dirs[i])]
        # Their own session: a terminal's Ctrl-C reaches only this supervisor, which passes
        # the stop on once (a second signal to a process would abort its flush).
        procs.append(subprocess.Popen(argv, preexec_fn=_die_with_parent, start_new_session=True))
    print(
        json.dumps(
            {"cluster": {"processes": n, "pids": [p.pid for p in procs], "addresses": addrs}}
        ),
        file=sys.stderr,
        flush=True,
    )

    # A clean stop: Ctrl-C or SIGTERM reaches this supervisor only; it passes SIGTERM on
    # once (each process then stops cleanly, sources/stop.py) and waits for all of them
    # to flush and end. A second signal aborts.
    stopping: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        while True:
            done = [p for p in procs if p.poll() is not None]
            if stopping and len(done) == n:
                code = max(abs(p.returncode or 0) for p in procs)
                break
            if done and not stopping:
                code = done[0].returncode or 0
                if len(done) < n:
                    log.warning(
                        "cluster: process %d ended with %s; stopping the others",
                        procs.index(done[0]),
                        code,
                    )
                    code = code or 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:  # a second signal: abort
        code = 130
        _stop_all(procs, grace_s=0)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        _stop_all(procs)
    return code


def _stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float = 5.0) -> None:
    """Stop the members still running: SIGTERM (a clean stop), then SIGKILL after
    ``grace_s`` (0 after an abort)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- registration
def register(sub: Any) -> None:
    """Add ``vigil ingest`` (``replay --to``, ``run --processes``: see flows/cli/__init__.py)."""
    g = sub.add_parser(
        "ingest",
        help="follow files, receive syslog or poll feeds on a collector host and write "
        "into the bus",
        description="Write into the bus. --feed security (the default): log lines from "
        "followed files and syslog. The record feeds read files whole (--file by "
        "extension, --csv, --json as JSON lines or one array) and poll URLs (--http: a JSON "
        "endpoint; --rss: a feed URL, or a saved feed file), one record per entry. "
        "--feed indicators: records as they are. --feed service_queues: the rows of a case "
        "table or event log as a live portal sends them, ordered by event time, read "
        "through the mapping of the --config's service_queues input (a case row becomes "
        "its arrival and, later, its completion). --feed media: posts and articles, a "
        "file's in event-time order (by the fields of the --config's media input).",
    )
    _writer_args(g)
    g.add_argument(
        "--feed",
        choices=FEEDS,
        default="security",
        help="what is sent: log lines (security, default), indicator records, queue "
        "records or media items",
    )
    g.add_argument(
        "-c",
        "--config",
        help="the configuration (--feed service_queues: needed, for its mapping; --feed "
        "media: its fields, to order posts)",
    )
    g.add_argument("--input", help="with --config: the input (name) whose mapping or fields to use")
    g.add_argument(
        "--until",
        choices=("last_arrival", "end"),
        default="last_arrival",
        help="--feed service_queues: end a case table at its last arrival (as a replay "
        "does) or send every completion",
    )
    g.add_argument("--file", action="append", metavar="PATTERN", help="file or glob to follow")
    g.add_argument("--csv", action="append", metavar="PATTERN", help="CSV file(s), a header row")
    g.add_argument(
        "--json", action="append", metavar="PATTERN", help="JSON-lines or JSON-array file(s)"
    )
    g.add_argument(
        "--rss", action="append", metavar="URL_OR_FILE", help="--feed media: an RSS/Atom feed"
    )
    g.add_argument("--http", action="append", metavar="URL", help="poll a JSON endpoint")
    g.add_argument("--items-path", help="--http: dotted path to the list of items")
    g.add_argument("--id-field", action="append", help="--http: the field(s) that identify an item")
    g.add_argument(
        "--interval", type=_positive, default=60.0, help="seconds between polls (default 60)"
    )
    g.add_argument("--timeout", type=_positive, default=10.0, help="seconds per request")
    g.add_argument(
        "--polls", type=_count, help="stop after this many polls of each URL (default: never)"
    )
    g.add_argument(
        "--syslog", type=_host_port, metavar="[HOST:]PORT", help="receive syslog (UDP and TCP)"
    )
    g.add_argument(
        "--format",
        "-f",
        default="ssh",
        help="format of the lines (default ssh); with --feed indicators|service_queues: "
        "csv or jsonl (default: by file extension)",
    )
    g.add_argument("--no-follow", action="store_true", help="read files to their end and stop")
    g.add_argument("--start-at-end", action="store_true", help="only lines written from now on")
    g.add_argument("--max-line-bytes", type=int, default=65536)
    g.add_argument("--state-dir", help="keep file offsets here so a restart resumes")
    g.add_argument("--metrics-port", type=int, help="serve vigil_bus_* metrics on this port")
    g.add_argument("--metrics-host", default="127.0.0.1")
    g.set_defaults(func=cmd_ingest)
