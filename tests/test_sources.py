"""Tests of the line sources: file tail, syslog receiver, replay.

Sources are driven two ways: through ``run_main`` (with recovery where resume matters), and
by calling partition methods directly where a test needs to interleave writes and reads.
Syslog tests talk to real UDP and TCP sockets on 127.0.0.1.
"""

from __future__ import annotations

import calendar
import itertools
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import (
    AbortExecution,
    FixedPartitionedSource,
    StatefulSourcePartition,
)
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from hypothesis import given, settings
from hypothesis import strategies as st
from vigil.flows.security.parsers import LineParser
from vigil.sources import FileState, FileTailSource, ReplaySource, SyslogSource
from vigil.sources.syslog import TcpFramer

from vigil.records import RawLine

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
AUTH_LOG = DATASETS / "security" / "ssh_auth_elastic" / "auth.log"


# -- helpers -------------------------------------------------------------------------------


def syslog_time(line: RawLine) -> float | None:
    """Event time of an RFC 3164 line (``Mar 27 13:06:56 ...``), year fixed to 2024."""
    try:
        return float(calendar.timegm(time.strptime("2024 " + line.text[:15], "%Y %b %d %H:%M:%S")))
    except ValueError:
        return None


def auth_log_times() -> list[float]:
    """Event time of every line of auth.log (all of them have one)."""
    times = [syslog_time(RawLine("ssh", "", t)) for t in AUTH_LOG.read_text().splitlines()]
    return [t for t in times if t is not None]


def leading_number(line: RawLine) -> float | None:
    """``"5 text"`` -> 5.0; no number -> None."""
    head = line.text.split(" ", 1)[0]
    try:
        return float(head)
    except ValueError:
        return None


def drain(part: StatefulSourcePartition[RawLine, Any], max_calls: int = 10_000) -> list[RawLine]:
    """Call next_batch until the source has nothing more right now (or has ended)."""
    out: list[RawLine] = []
    for _ in range(max_calls):
        try:
            batch = part.next_batch()
        except StopIteration:
            return out
        out += batch
        if not batch and part.next_awake() is not None:
            return out
    msg = "source kept making progress without data"
    raise AssertionError(msg)


def collect(
    part: StatefulSourcePartition[RawLine, Any], n: int, timeout: float = 5.0
) -> list[RawLine]:
    """Poll a partition fed by another thread until it returned ``n`` lines."""
    out: list[RawLine] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        if time.monotonic() > deadline:
            msg = f"got {len(out)} of {n} lines: {out!r}"
            raise TimeoutError(msg)
        batch = part.next_batch()
        out += batch
        if not batch:
            time.sleep(0.002)
    return out


def texts(lines: Iterable[RawLine]) -> list[str]:
    return [r.text for r in lines]


def run_flow(
    source: FixedPartitionedSource[RawLine, Any], recovery: Path | None = None
) -> list[RawLine]:
    out: list[RawLine] = []
    flow = Dataflow("sources_test")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(
        flow,
        epoch_interval=timedelta(0),
        recovery_config=RecoveryConfig(recovery) if recovery is not None else None,
    )
    return out


class _AbortingPartition(StatefulSourcePartition[RawLine, Any]):
    def __init__(self, owner: AbortOnce, inner: StatefulSourcePartition[RawLine, Any]) -> None:
        self._owner = owner
        self._inner = inner

    def next_batch(self) -> Iterable[RawLine]:
        if self._owner.batches_left is not None:
            if self._owner.batches_left == 0:
                self._owner.batches_left = None  # abort only once
                self._inner.close()  # bytewax does not close on abort
                raise AbortExecution
            self._owner.batches_left -= 1
        return self._inner.next_batch()

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class AbortOnce(FixedPartitionedSource[RawLine, Any]):
    """Wrap a source and abort the execution (as a crash would) after some batches."""

    def __init__(self, inner: FixedPartitionedSource[RawLine, Any], after_batches: int) -> None:
        self.inner = inner
        self.batches_left: int | None = after_batches
        self.resume_states: list[Any] = []

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _AbortingPartition:
        self.resume_states.append(resume_state)
        return _AbortingPartition(self, self.inner.build_part(step_id, for_part, resume_state))


class _StoppingPartition(StatefulSourcePartition[RawLine, Any]):
    def __init__(self, inner: StatefulSourcePartition[RawLine, Any], n: int) -> None:
        self._inner = inner
        self._left = n

    def next_batch(self) -> Iterable[RawLine]:
        if self._left <= 0:
            raise StopIteration
        batch = list(self._inner.next_batch())
        self._left -= len(batch)
        return batch

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class StopAfter(FixedPartitionedSource[RawLine, Any]):
    """Wrap an endless source so that it ends after ``n`` lines."""

    def __init__(self, inner: FixedPartitionedSource[RawLine, Any], n: int) -> None:
        self.inner = inner
        self.n = n

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StoppingPartition:
        return _StoppingPartition(self.inner.build_part(step_id, for_part, resume_state), self.n)


@pytest.fixture
def recovery_dir(tmp_path: Path) -> Path:
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    return db


@pytest.fixture
def tail_part() -> Iterable[Callable[..., Any]]:
    """Build FileTailSource partitions that are closed after the test."""
    parts: list[Any] = []

    def build(path: Path, resume: FileState | None = None, **kw: Any) -> Any:
        kw.setdefault("follow", True)
        src = FileTailSource([str(path)], "ssh", **kw)
        part = src.build_part("in", str(path), resume)
        parts.append(part)
        return part

    yield build
    for p in parts:
        p.close()


# -- FileTailSource --------------------------------------------------------------------------


def test_file_reads_every_line_and_ends(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\r\n\nbad \xff byte\nlast without newline")
    out = run_flow(FileTailSource([str(log)], "ssh"))
    assert texts(out) == ["one", "two", "", "bad \ufffd byte", "last without newline"]
    mtime = log.stat().st_mtime
    assert {(r.fmt, r.origin, r.ref_ts, r.oversize) for r in out} == {
        ("ssh", str(log), mtime, False)
    }


def test_file_glob_of_several_files(tmp_path: Path) -> None:
    for name, n in [("b.log", 3), ("a.log", 2), ("c.txt", 1)]:
        (tmp_path / name).write_text("".join(f"{name}:{i}\n" for i in range(n)))
    # The second pattern matches a.log again: it must still be read once.
    src = FileTailSource([str(tmp_path / "*.log"), str(tmp_path / "a.log")], "ssh")
    assert src.list_parts() == [str(tmp_path / "a.log"), str(tmp_path / "b.log")]
    out = run_flow(src)
    by_origin: dict[str, list[str]] = {}
    for r in out:
        by_origin.setdefault(r.origin, []).append(r.text)
    assert by_origin == {
        str(tmp_path / "a.log"): ["a.log:0", "a.log:1"],
        str(tmp_path / "b.log"): ["b.log:0", "b.log:1", "b.log:2"],
    }


def test_file_follow_appends_and_holds_partial_line(tmp_path: Path, tail_part: Any) -> None:
    log = tmp_path / "a.log"
    log.write_text("l1\nl2\n")
    part = tail_part(log, poll_interval_s=0.25)
    assert texts(drain(part)) == ["l1", "l2"]
    # Nothing new: an empty batch and a wake-up one poll interval later, never a block.
    before = datetime.now(UTC)
    assert part.next_batch() == []
    awake = part.next_awake()
    assert awake is not None
    assert timedelta(seconds=0.2) < awake - before < timedelta(seconds=1)
    with log.open("a") as f:
        f.write("l3\nhal")
    assert texts(drain(part)) == ["l3"]
    assert part.snapshot() == FileState(log.stat().st_ino, 9)  # start of the partial line
    with log.open("a") as f:
        f.write("f\n")
    assert texts(drain(part)) == ["half"]
    assert part.snapshot().offset == log.stat().st_size


def test_file_follow_rotation_by_rename_and_recreate(tmp_path: Path, tail_part: Any) -> None:
    log = tmp_path / "a.log"
    log.write_text("o1\no2\n")
    part = tail_part(log)
    assert texts(drain(part)) == ["o1", "o2"]
    old = log.stat().st_ino
    log.rename(tmp_path / "a.log.1")
    # The writer still appends to the old file for a moment after the rename.
    with (tmp_path / "a.log.1").open("a") as f:
        f.write("o3\nunfinished")
    log.write_text("n1\nn2\n")
    assert log.stat().st_ino != old
    assert texts(drain(part)) == ["o3", "unfinished", "n1", "n2"]
    assert part.snapshot() == FileState(log.stat().st_ino, 6)
    with log.open("a") as f:
        f.write("n3\n")
    assert texts(drain(part)) == ["n3"]


def test_file_follow_truncation_restarts_at_zero(tmp_path: Path, tail_part: Any) -> None:
    log = tmp_path / "a.log"
    log.write_text("aaaa\nbbbb\ncc")
    part = tail_part(log)
    assert texts(drain(part)) == ["aaaa", "bbbb"]
    log.write_text("x\n")  # copytruncate: same inode, smaller size
    assert texts(drain(part)) == ["x"]
    assert part.snapshot() == FileState(log.stat().st_ino, 2)


def test_file_follow_waits_for_file_to_be_created(tmp_path: Path, tail_part: Any) -> None:
    log = tmp_path / "later.log"
    assert FileTailSource([str(log)], "ssh", follow=True).list_parts() == [str(log)]
    assert FileTailSource([str(log)], "ssh", follow=False).list_parts() == []
    part = tail_part(log)
    assert part.next_batch() == []
    assert part.next_awake() is not None
    assert part.snapshot() == FileState(None, 0)
    log.write_text("first\n")
    assert texts(drain(part)) == ["first"]


def test_file_start_at_end_skips_old_lines_and_a_fragment(tmp_path: Path, tail_part: Any) -> None:
    log = tmp_path / "a.log"
    log.write_text("old\nwriting in progr")
    part = tail_part(log, start_at_end=True)
    assert drain(part) == []
    with log.open("a") as f:
        f.write("ess\nnew\n")
    assert texts(drain(part)) == ["new"]


def test_file_oversize_lines_give_one_dead_record_each(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    huge = b"y" * (3 << 20)  # 3 MiB: spans several 1 MiB reads
    big = "é" * 40_000  # 80,000 bytes: over the limit inside one read
    log.write_bytes(b"before\n" + huge + b"\nmiddle\n" + big.encode() + b"\nafter\n")
    out = run_flow(FileTailSource([str(log)], "ssh"))
    assert [(r.text[:6], len(r.text), r.oversize) for r in out] == [
        ("before", 6, False),
        ("yyyyyy", 512, True),
        ("middle", 6, False),
        ("éééééé", 512, True),
        ("after", 5, False),
    ]


def test_file_oversize_line_arriving_over_several_writes(tmp_path: Path, tail_part: Any) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    part = tail_part(log, max_line_bytes=100)
    out: list[RawLine] = []
    for chunk in ["x" * 60, "x" * 60, "x" * 500, "x" * 10 + "\nok\n"]:
        with log.open("a") as f:
            f.write(chunk)
        out += drain(part)
    assert [(r.text, r.oversize) for r in out] == [("x" * 120, True), ("ok", False)]


def test_file_resume_inside_an_oversize_line_skips_its_rest(tmp_path: Path, tail_part: Any) -> None:
    log = tmp_path / "a.log"
    log.write_text("a\n" + "x" * 200)
    part = tail_part(log, max_line_bytes=100)
    assert [(r.text[:1], r.oversize) for r in drain(part)] == [("a", False), ("x", True)]
    state = part.snapshot()
    assert state == FileState(log.stat().st_ino, 202, skipping=True)
    with log.open("a") as f:
        f.write("xxx\nnext\n")
    assert texts(drain(tail_part(log, state, max_line_bytes=100))) == ["next"]


def test_file_resume_state_of_another_inode_reads_from_start(
    tmp_path: Path, tail_part: Any
) -> None:
    log = tmp_path / "a.log"
    log.write_text("a\nb\n")
    stale = FileState(log.stat().st_ino + 1, 2)
    assert texts(drain(tail_part(log, stale, follow=False))) == ["a", "b"]
    same = FileState(log.stat().st_ino, 2)
    assert texts(drain(tail_part(log, same, follow=False))) == ["b"]


def test_file_resume_through_bytewax_recovery(tmp_path: Path, recovery_dir: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"l{i}\n" for i in range(20)))
    src = AbortOnce(FileTailSource([str(log)], "ssh", batch_size=3), after_batches=3)

    first = run_flow(src, recovery_dir)  # aborted after 3 batches, like a crash
    assert texts(first) == [f"l{i}" for i in range(9)]
    second = run_flow(src, recovery_dir)
    assert src.resume_states[1] == FileState(log.stat().st_ino, 27)  # bytes of l0..l8
    assert texts(second) == [f"l{i}" for i in range(9, 20)]  # nothing re-emitted

    with log.open("a") as f:
        f.write("l20\nl21\n")
    assert texts(run_flow(src, recovery_dir)) == ["l20", "l21"]
    assert run_flow(src, recovery_dir) == []


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(
        st.text(st.characters(blacklist_characters="\n\r", codec="utf-8"), max_size=30),
        max_size=30,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    resume_at=st.integers(min_value=0, max_value=8),
)
def test_file_follow_any_write_pattern_gives_the_lines(
    lines: list[str], cuts: list[int], resume_at: int
) -> None:
    """Whatever the write boundaries, and after a resume anywhere, each line comes once."""
    data = "".join(f"{line}\n" for line in lines).encode()
    points = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    with tempfile.TemporaryDirectory() as d:
        log = Path(d, "a.log")
        log.write_bytes(b"")
        src = FileTailSource([str(log)], "ssh", follow=True, batch_size=4)
        part = src.build_part("in", str(log), None)
        out: list[RawLine] = []
        start = 0
        for k, end in enumerate(points):
            with log.open("ab") as f:
                f.write(data[start:end])
            start = end
            out += drain(part)
            if k == resume_at:  # restart from the snapshot, as bytewax would
                state = part.snapshot()
                part.close()
                part = src.build_part("in", str(log), state)
        out += drain(part)
        part.close()
    assert texts(out) == lines


# -- SyslogSource ----------------------------------------------------------------------------


@pytest.fixture
def syslog_part() -> Iterable[Callable[..., Any]]:
    parts: list[Any] = []

    def build(**kw: Any) -> Any:
        part = SyslogSource(port=0, **kw).build_part("in", "syslog", None)
        parts.append(part)
        return part

    yield build
    for p in parts:
        p.close()


def octet(msg: str) -> bytes:
    raw = msg.encode()
    return b"%d %s" % (len(raw), raw)


def test_syslog_udp_one_datagram_one_message(syslog_part: Any) -> None:
    part = syslog_part(tcp=False, max_line_bytes=100)
    before = time.time()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for msg in [b"<34>Oct 11 22:14:15 h su: a\n", b"<13>1 2024-01-01T00:00:00Z h app - - - b"]:
            s.sendto(msg, ("127.0.0.1", part.port))
        s.sendto(b"<13>" + b"z" * 1000, ("127.0.0.1", part.port))
        s.sendto(b"<13>after\r\n", ("127.0.0.1", part.port))
        out = collect(part, 4)
    assert [(r.text[:30], r.oversize) for r in out] == [
        ("<34>Oct 11 22:14:15 h su: a", False),
        ("<13>1 2024-01-01T00:00:00Z h a", False),
        ("<13>" + "z" * 26, True),
        ("<13>after", False),
    ]
    assert len(out[2].text) == 512
    assert {(r.origin, r.fmt) for r in out} == {("syslog/udp", "ssh")}
    assert all(before <= r.ref_ts <= time.time() for r in out)


def test_syslog_tcp_both_framings_split_sends_two_clients(syslog_part: Any) -> None:
    part = syslog_part(udp=False)
    addr = ("127.0.0.1", part.port)
    with socket.create_connection(addr) as c1, socket.create_connection(addr) as c2:
        c1.sendall(b"<13>c1 first\n<13>c1 sec")
        c2.sendall(octet("<13>c2 counted\nwith newline inside") + octet("<13>c2 n")[:3])
        time.sleep(0.05)  # let the receiver see the halves as separate reads
        c1.sendall(b"ond\n" + octet("<13>c1 counted"))
        c2.sendall(octet("<13>c2 n")[3:] + b"<13>c2 plain\n")
        out = collect(part, 6)
    assert {r.origin for r in out} == {"syslog/tcp"}
    got = texts(out)
    from_c1 = [t for t in got if t.startswith("<13>c1")]
    from_c2 = [t for t in got if t.startswith("<13>c2")]
    assert from_c1 == ["<13>c1 first", "<13>c1 second", "<13>c1 counted"]
    assert from_c2 == ["<13>c2 counted\nwith newline inside", "<13>c2 n", "<13>c2 plain"]


def test_syslog_tcp_last_message_without_newline_on_close(syslog_part: Any) -> None:
    part = syslog_part(udp=False)
    with socket.create_connection(("127.0.0.1", part.port)) as c:
        c.sendall(b"<13>one\n<13>no newline")
    assert texts(collect(part, 2)) == ["<13>one", "<13>no newline"]


def test_syslog_tcp_oversize_in_both_framings(syslog_part: Any) -> None:
    part = syslog_part(udp=False, max_line_bytes=100)
    with socket.create_connection(("127.0.0.1", part.port)) as c:
        c.sendall(b"<13>" + b"n" * 5000)
        time.sleep(0.02)
        c.sendall(b"n" * 5000 + b"\n<13>ok1\n")
        c.sendall(octet("<13>" + "o" * 3000) + b"<13>ok2\n")
        out = collect(part, 4)
    assert [(r.text[:7], len(r.text), r.oversize) for r in out] == [
        ("<13>nnn", 512, True),
        ("<13>ok1", 7, False),
        ("<13>ooo", 512, True),
        ("<13>ok2", 7, False),
    ]


def test_syslog_close_stops_thread_and_frees_port(syslog_part: Any) -> None:
    before = threading.active_count()
    part = syslog_part()
    assert threading.active_count() == before + 1
    port = part.port
    part.close()
    part.close()  # idempotent
    assert threading.active_count() == before
    # Both ports can be bound again at once.
    again = SyslogSource(port=port).build_part("in", "syslog", None)
    assert again.port == port
    again.close()


def test_syslog_through_run_main_with_on_bound() -> None:
    n = 5
    senders: list[threading.Thread] = []

    def send(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(3):
                s.sendto(b"<13>udp %d" % i, ("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"<13>tcp 0\n" + octet("<13>tcp 1"))

    def on_bound(port: int) -> None:
        t = threading.Thread(target=send, args=(port,))
        t.start()
        senders.append(t)

    assert SyslogSource().list_parts() == ["syslog"]
    src = SyslogSource(port=0, on_bound=on_bound, poll_interval_s=0.005)
    out = run_flow(StopAfter(src, n))
    for t in senders:
        t.join()
    assert sorted(texts(out)) == ["<13>tcp 0", "<13>tcp 1", "<13>udp 0", "<13>udp 1", "<13>udp 2"]


messages = st.lists(
    st.tuples(
        st.text(st.characters(blacklist_characters="\n\r", codec="utf-8"), max_size=20),
        st.booleans(),
    ),
    max_size=10,
)


@settings(max_examples=100, deadline=None)
@given(msgs=messages, cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=10))
def test_tcp_framer_any_split_of_mixed_framings(
    msgs: list[tuple[str, bool]], cuts: list[int]
) -> None:
    stream = b"".join(
        octet(f"<13>{m}") if counted else f"<13>{m}\n".encode() for m, counted in msgs
    )
    points = sorted({0, len(stream)} | {c % (len(stream) + 1) for c in cuts})
    framer = TcpFramer("ssh", "syslog/tcp", 65536)
    out: list[RawLine] = []
    for a, b in itertools.pairwise(points):
        out += framer.feed(stream[a:b], 1.0)
    out += framer.finish(2.0)
    assert texts(out) == [f"<13>{m}" for m, _ in msgs]


# -- ReplaySource ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_replay_auth_log_as_fast_as_possible() -> None:
    expected = AUTH_LOG.read_text().splitlines()
    out = run_flow(ReplaySource([str(AUTH_LOG)], "ssh", time_of=syslog_time))
    assert texts(out) == expected  # the file is in time order already
    assert {(r.origin, r.ref_ts) for r in out} == {(f"replay:{AUTH_LOG}", AUTH_LOG.stat().st_mtime)}


def test_replay_merges_files_in_time_order(tmp_path: Path) -> None:
    lines = AUTH_LOG.read_text().splitlines()[:2000]
    (tmp_path / "even.log").write_text("\n".join(lines[0::2]) + "\n")
    (tmp_path / "odd.log").write_text("\n".join(lines[1::2]) + "\n")
    src = ReplaySource([str(tmp_path / "*.log")], "ssh", time_of=syslog_time)
    out = run_flow(src)
    assert sorted(texts(out)) == sorted(lines)
    times = [syslog_time(r) or 0.0 for r in out]
    assert 0.0 not in times
    assert times == sorted(times)
    for name, part in [("even.log", lines[0::2]), ("odd.log", lines[1::2])]:
        assert [r.text for r in out if r.origin.endswith(name)] == part  # stable


def test_replay_untimed_lines_stay_with_their_neighbours(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("x leading\n5 a\n- after a\n1 b\n")
    (tmp_path / "b.log").write_text("3 c\nboom\n")

    def time_of(line: RawLine) -> float | None:
        if line.text == "boom":
            raise RuntimeError  # a failing time_of must not stop the replay
        return leading_number(line)

    paths = [str(tmp_path / "a.log"), str(tmp_path / "b.log")]
    out = run_flow(ReplaySource(paths, "ssh", time_of=time_of, sort=True))
    # A file's leading untimed lines (a header) stay first, even before older rows.
    assert texts(out) == ["x leading", "1 b", "3 c", "boom", "5 a", "- after a"]
    # By default each file keeps its order ("1 b" stays after "5 a", as `vigil run` reads
    # it) and files merge by the newest time seen in each.
    merged = run_flow(ReplaySource(paths, "ssh", time_of=time_of))
    assert texts(merged) == ["x leading", "3 c", "boom", "5 a", "- after a", "1 b"]


def test_a_sorted_replay_of_zeek_rows_out_of_order_keeps_the_header_first(
    tmp_path: Path,
) -> None:
    # Zeek writes a row when its connection ends, so rows are not in start-time order.
    real = (DATASETS / "security" / "zeek_nmap_portscan" / "conn.log").read_text().splitlines()
    header = [ln for ln in real[:10] if ln.startswith("#")]
    rows = [ln for ln in real if not ln.startswith("#")][:50]
    rows = rows[25:] + rows[:25]  # older rows after newer ones
    log = tmp_path / "conn.log"
    log.write_text("\n".join([*header, *rows]) + "\n")
    parser = LineParser()
    out = run_flow(ReplaySource([str(log)], "zeek", time_of=parser.event_time, sort=True))
    assert texts(out)[: len(header)] == header
    times = [parser.event_time(r) for r in out[len(header) :]]
    assert times == sorted(times) and len(times) == 50


def test_replay_honours_speed_with_a_fake_clock() -> None:
    lines = AUTH_LOG.read_text().splitlines()
    times = auth_log_times()
    assert len(times) == len(lines)
    t0 = times[0]
    clock = FakeClock(1000.0)
    speed = 60.0  # an hour of events per minute
    src = ReplaySource(
        [str(AUTH_LOG)], "ssh", speed=speed, time_of=syslog_time, now=clock, batch_size=10**6
    )
    part = src.build_part("in", "replay", None)

    def due_by(now: float) -> int:
        return sum(1 for t in times if 1000.0 + (t - t0) / speed <= now)

    got = part.next_batch()  # the first event is due at once
    assert len(got) == due_by(1000.0) > 0
    next_t = min(t for t in times if t > t0)
    awake = part.next_awake()
    assert awake is not None
    wait = (awake - datetime.now(UTC)).total_seconds()
    assert wait == pytest.approx((next_t - t0) / speed, abs=0.5)

    # The log spans about 24 days, so about 24 * 24 minutes at this speed.
    assert 30000 < (max(times) - t0) / speed < 36000
    for step in [0.5, 5, 60, 600, 6000, 30000]:
        clock.t = 1000.0 + step
        got += part.next_batch()
        assert 0 < len(got) == due_by(clock.t) < len(times), step
        assert part.snapshot() == len(got)
        assert part.next_awake() is not None  # waiting for the next due line, not spinning
    assert part.next_batch() == []  # the clock has not moved: nothing more is due
    clock.t = 1000.0 + 36000
    got += part.next_batch()
    assert texts(got) == lines
    with pytest.raises(StopIteration):
        part.next_batch()


def test_replay_resume_by_index_direct() -> None:
    src = ReplaySource([str(AUTH_LOG)], "ssh", time_of=syslog_time, batch_size=100)
    first = src.build_part("in", "replay", None)
    head = first.next_batch() + first.next_batch()
    assert first.snapshot() == 200
    rest = drain(src.build_part("in", "replay", first.snapshot()))
    assert texts(head + rest) == AUTH_LOG.read_text().splitlines()


def test_replay_resume_through_bytewax_recovery(recovery_dir: Path) -> None:
    expected = AUTH_LOG.read_text().splitlines()
    replay = ReplaySource([str(AUTH_LOG)], "ssh", time_of=syslog_time, batch_size=500)
    src = AbortOnce(replay, after_batches=4)
    first = run_flow(src, recovery_dir)
    assert len(first) == 2000
    second = run_flow(src, recovery_dir)
    assert src.resume_states == [None, 2000]
    assert texts(first + second) == expected


def test_replay_oversize_line(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("1 a\n2 " + "x" * 500 + "\n3 c\n")
    src = ReplaySource([str(tmp_path / "a.log")], "ssh", time_of=leading_number, max_line_bytes=100)
    out = run_flow(src)
    assert [(r.text[:3], r.oversize) for r in out] == [
        ("1 a", False),
        ("2 x", True),
        ("3 c", False),
    ]


def test_replay_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(["a"], "ssh", speed=0, time_of=leading_number)
    with pytest.raises(TypeError, match="sequence"):
        ReplaySource("a.log", "ssh", time_of=leading_number)


def test_sources_package_imports_without_side_effects() -> None:
    code = """
import os, threading
import vigil.sources
assert threading.active_count() == 1
links = []
for fd in os.listdir("/proc/self/fd"):
    try:
        links.append(os.readlink(f"/proc/self/fd/{fd}"))
    except FileNotFoundError:  # the fd listdir itself used
        pass
assert not [x for x in links if x.startswith("socket:")], links
"""
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_a_stop_request_ends_a_wrapped_input_where_it_is(tmp_path: Path) -> None:
    from vigil.sources import stop

    (tmp_path / "a.log").write_text("one\ntwo\nthree\n")
    src = stop.stoppable(FileTailSource([str(tmp_path / "a.log")], "ssh", batch_size=1))
    assert stop.stoppable(src) is src  # wrapping twice changes nothing
    part = src.build_part("in", src.list_parts()[0], None)
    stop.reset()
    try:
        assert [r.text for r in part.next_batch()] == ["one"]
        assert part.snapshot().offset == 4  # the inner partition's own resume state
        stop.request_stop()
        with pytest.raises(StopIteration):
            part.next_batch()
        assert part.next_awake() is None  # polled at once, so the stop is seen at once
        assert part.snapshot().offset == 4  # a restart resumes after "one"
    finally:
        stop.reset()
        part.close()
