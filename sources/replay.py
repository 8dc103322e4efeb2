"""Replay recorded log files as if they were arriving live.

All lines of the given files are read when the partition is built and emitted with the
gaps between their event times divided by ``speed``. Each file keeps its own order (a Zeek
log is written as connections end, not as they start; its ``#`` headers stay before their
rows), and files are merged by the newest event time seen so far in each: the same order
as ``vigil run`` reads a file in, so a replay at any speed and a run give the same events to
the same rules in the same order. The snapshot is the index of the next line to emit, so a
resumed replay carries on where it stopped.
"""

from __future__ import annotations

import glob
import gzip
import heapq
import math
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override
from vigil.sources.files import decode_block

from vigil.records import RawLine

__all__ = ["ReplaySource"]

_NO_TIME = -math.inf  # sort key of a line whose file has no timed line at all


#: The first two bytes of a gzip file.
GZIP_MAGIC = b"\x1f\x8b"


def expand_paths(patterns: Sequence[str]) -> list[str]:
    """Paths matched by each pattern, sorted per pattern, first occurrence kept.

    Parameters
    ----------
    patterns
        Paths or glob patterns. A plain path is kept even if it does not exist, so that
        reading it reports the missing file instead of silently replaying nothing.

    Examples
    --------
    >>> expand_paths(["/nonexistent/a.log", "/nonexistent/a.log"])
    ['/nonexistent/a.log']
    """
    out: dict[str, None] = {}
    for pattern in patterns:
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        out.update(dict.fromkeys(matched))
    return list(out)


def read_lines(path: str, fmt: str, origin: str, max_line_bytes: int) -> list[RawLine]:
    """Every line of a file as ``RawLine`` records (``ref_ts`` = the file's mtime).

    A gzip-compressed file (a rotated ``auth.log.2.gz``) is decompressed first.

    Parameters
    ----------
    path
        File to read.
    fmt, origin
        Copied into every record.
    max_line_bytes
        Longer lines become one ``RawLine(oversize=True)`` each.
    """
    with open(path, "rb") as f:
        ref_ts = os.fstat(f.fileno()).st_mtime
        data = f.read()
    if data[:2] == GZIP_MAGIC:
        data = gzip.decompress(data)
    if not data:
        return []
    if data.endswith(b"\n"):
        data = data[:-1]
    return decode_block(data, fmt, origin, ref_ts, max_line_bytes)


def _event_times(lines: list[RawLine], time_of: Callable[[RawLine], float | None]) -> list[float]:
    """Event time of each line of one file; untimed lines borrow a neighbour's time.

    A line without a time gets the time of the previous timed line, so a stable sort keeps
    it with its neighbour; lines before the first timed line (a Zeek file's ``#fields``
    header) get ``-inf`` and stay first, even when later rows are older than the first one
    (Zeek writes a row when its connection ends). A file without any timed line gets
    ``-inf`` throughout.

    Examples
    --------
    >>> lines = [RawLine("zeek", "f", t) for t in ("#fields", "20", "10", "#close", "30")]
    >>> _event_times(lines, lambda r: None if r.text[0] == "#" else float(r.text))
    [-inf, 20.0, 10.0, 10.0, 30.0]
    """
    raw: list[float | None] = []
    for line in lines:
        t: float | None = None
        if not line.oversize:
            try:
                t = time_of(line)
            except Exception:  # a bad line must not stop the replay; it just has no time
                t = None
            if t is not None and not math.isfinite(t):
                t = None
        raw.append(t)
    prev = _NO_TIME
    out: list[float] = []
    for t in raw:
        if t is not None:
            prev = t
        out.append(prev)
    return out


T = TypeVar("T")


class PacedPartition(StatefulSourcePartition[T, int]):
    """Emit ``items`` in order, each when its event time (``times``) is due at ``speed``.

    Shared by every replay source. The snapshot is the index of the next item, so a resume
    continues where it stopped; pacing restarts from the resumed item. Never blocks: an item
    not yet due ends the batch and sets ``next_awake``.
    """

    def __init__(
        self,
        items: list[T],
        times: list[float],
        *,
        speed: float | None,
        batch_size: int,
        now: Callable[[], float],
        resume_state: int | None,
    ) -> None:
        self._lines = items
        self._times = times
        self._speed = speed
        self._batch_size = batch_size
        self._now = now
        self._i = 0 if resume_state is None else resume_state
        # Wall time (on the `now` clock) and event time that are matched up when the
        # first item is emitted; every later item is due relative to them.
        self._anchor: tuple[float, float] | None = None
        self._next_awake: datetime | None = None

    def _due(self, i: int) -> float:
        """Time on the `now` clock at which line ``i`` is due."""
        assert self._anchor is not None and self._speed is not None
        t = self._times[i]
        wall0, t0 = self._anchor
        if t == _NO_TIME or t0 == _NO_TIME:
            return _NO_TIME  # nothing to space it by: due at once
        return wall0 + (t - t0) / self._speed

    @override
    def next_batch(self) -> list[T]:
        i, n = self._i, len(self._lines)
        if i >= n:
            raise StopIteration
        end = min(n, i + self._batch_size)
        self._next_awake = None
        if self._speed is not None:
            now = self._now()
            if self._anchor is None:
                t0 = next((t for t in self._times[i:] if t != _NO_TIME), _NO_TIME)
                self._anchor = (now, t0)
            j = i
            while j < end and self._due(j) <= now:
                j += 1
            if j < end:  # stopped at a line not yet due: sleep until it is
                delay = timedelta(seconds=self._due(j) - now)
                self._next_awake = datetime.now(UTC) + delay
            end = j
        self._i = end
        return self._lines[i:end]

    @override
    def next_awake(self) -> datetime | None:
        return self._next_awake

    @override
    def snapshot(self) -> int:
        return self._i


class ReplaySource(FixedPartitionedSource[RawLine, int]):
    """Emit the lines of recorded files in event-time order, paced like the original feed.

    One partition (``"replay"``) for the whole replay, so lines of all files are merged
    into one order. ``origin`` is ``"replay:<path>"``; ``ref_ts`` is the file's mtime.

    Parameters
    ----------
    paths
        Files or glob patterns; all their lines are read into memory when the partition is
        built.
    fmt
        Value of ``RawLine.fmt`` for every line.
    speed
        Event time runs this many times faster than wall time (``60``: an hour of events
        per minute). ``None``: as fast as the dataflow takes them.
    time_of
        Event time (epoch seconds) of a line, or ``None`` if it has none. A line without a
        time (or for which ``time_of`` raises) takes the time of the previous timed line of
        its file, so it keeps its place among its neighbours.
    sort
        Stable-sort all lines by event time. Without sorting (the default), each file keeps
        its order and files are merged by the newest time seen so far in each; a line
        older than its predecessors is emitted with them.
    batch_size
        Most lines returned by one ``next_batch``.
    now
        Monotonic clock in seconds, to pace the replay (inject a fake one in tests).
    max_line_bytes
        A longer line becomes one ``RawLine(oversize=True)`` with its first 512 characters.

    Notes
    -----
    Pacing restarts on resume: the line at the resume index is emitted at once and the
    following ones are spaced relative to it.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = pathlib.Path(d, "a.log").write_text("3 c\\n1 a\\n")
    ...     _ = pathlib.Path(d, "b.log").write_text("2 b\\n")
    ...     src = ReplaySource([f"{d}/*.log"], "demo", time_of=lambda r: float(r.text[0]))
    ...     part = src.build_part("in", "replay", None)
    >>> [r.text for r in part.next_batch()]
    ['2 b', '3 c', '1 a']
    """

    def __init__(
        self,
        paths: Sequence[str],
        fmt: str,
        *,
        speed: float | None = None,
        time_of: Callable[[RawLine], float | None],
        sort: bool = False,
        batch_size: int = 2048,
        now: Callable[[], float] = time.monotonic,
        max_line_bytes: int = 65536,
    ) -> None:
        if isinstance(paths, str):
            msg = f"paths must be a sequence of paths, not the string {paths!r}"
            raise TypeError(msg)
        if speed is not None and not speed > 0:
            msg = f"speed must be > 0 or None, got {speed!r}"
            raise ValueError(msg)
        self.paths = tuple(paths)
        self.fmt = fmt
        self.speed = speed
        self.time_of = time_of
        self.sort = sort
        self.batch_size = batch_size
        self.now = now
        self.max_line_bytes = max_line_bytes

    @override
    def list_parts(self) -> list[str]:
        return ["replay"]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> PacedPartition[RawLine]:
        lines: list[RawLine] = []
        times: list[float] = []
        per_file: list[list[tuple[float, int, int, RawLine]]] = []
        for f, path in enumerate(expand_paths(self.paths)):
            file_lines = read_lines(path, self.fmt, f"replay:{path}", self.max_line_bytes)
            file_times = _event_times(file_lines, self.time_of)
            if self.sort:
                lines += file_lines
                times += file_times
                continue
            top = _NO_TIME
            seq = []
            for k, (line, t) in enumerate(zip(file_lines, file_times, strict=True)):
                top = max(top, t)  # running newest: non-decreasing, so mergeable
                seq.append((top, f, k, line))
            per_file.append(seq)
        if self.sort:
            order = sorted(range(len(lines)), key=times.__getitem__)  # stable
            lines = [lines[k] for k in order]
            times = [times[k] for k in order]
        else:
            for top, _f, _k, line in heapq.merge(*per_file):
                lines.append(line)
                times.append(top)
        return PacedPartition(
            lines,
            times,
            speed=self.speed,
            batch_size=self.batch_size,
            now=self.now,
            resume_state=resume_state,
        )
