"""Replay a case table or an event log (CSV or JSON lines) as a live lifecycle stream.

Every row of the given files is read when the partition is built and handed to an injected
``convert`` callable, which turns it into records carrying an event time ``ts`` (a case row
gives an arrival at its open time and a completion at its close time). The records of all
files are then stable-sorted by event time and emitted, paced by ``speed`` like
:class:`vigil.sources.replay.ReplaySource`. The snapshot is the index of the next record, so a
resumed replay carries on where it stopped.

The source does not know what a field means: that is the converter's business (the flow's
field mapping), which keeps this module free of domain parsing.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
from bytewax.inputs import FixedPartitionedSource
from typing_extensions import override
from vigil.sources.replay import PacedPartition, expand_paths

from vigil.records import DeadLetter

__all__ = ["CaseReplaySource", "read_rows"]


class RowConverter(Protocol):
    def __call__(self, row: dict[str, Any]) -> Sequence[Any]: ...


def read_rows(path: str, fmt: str) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    """Rows of a CSV file (header line first) or a JSON-lines file, and unreadable lines.

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = pathlib.Path(d, "a.jsonl")
    ...     _ = p.write_text('{"id": 1}\\nnot json\\n')
    ...     rows, dead = read_rows(str(p), "jsonl")
    >>> rows, [x.reason for x in dead]
    ([{'id': 1}], ['bad json'])
    """
    dead: list[DeadLetter] = []
    origin = f"replay:{path}"
    with open(path, "rb") as f:
        data = f.read()
    if fmt == "csv":
        text = data.decode("utf-8-sig", errors="replace")
        return list(csv.DictReader(io.StringIO(text, newline=""))), dead
    rows: list[dict[str, Any]] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            dead.append(DeadLetter("read", "bad json", "", fmt, origin))
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            dead.append(DeadLetter("read", "not an object", "", fmt, origin))
    return rows, dead


class CaseReplaySource(FixedPartitionedSource[Any, int]):
    """Emit the converted rows of recorded files in event-time order.

    Parameters
    ----------
    paths
        Files or glob patterns.
    fmt
        ``"csv"`` (a header line, then one row per line) or ``"jsonl"``.
    convert
        Row to records; each record with a float ``ts`` attribute takes its place in
        event-time order, others (dead letters) stay beside the previous record.
    stop_after_last
        When given, the replay ends with the last record for which it is true (e.g. the
        last arrival of a case table); the records after it are counted in ``cut``.
    prime
        Called once with every row of the replay before conversion, e.g. to choose the
        top-N label values from the whole table.
    speed
        Event time runs this many times faster than wall time; ``None``: as fast as the
        dataflow takes them.
    batch_size
        Most records per ``next_batch``.
    now
        Monotonic clock in seconds, to pace the replay.
    """

    def __init__(
        self,
        paths: Sequence[str],
        fmt: str,
        convert: RowConverter,
        *,
        prime: Callable[[list[dict[str, Any]]], None] | None = None,
        stop_after_last: Callable[[Any], bool] | None = None,
        speed: float | None = None,
        batch_size: int = 2000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = tuple(paths)
        self.fmt = fmt
        self.convert = convert
        self.prime = prime
        self.stop_after_last = stop_after_last
        self.cut = 0  # records after the cut-off, not replayed
        self.speed = speed
        self.batch_size = batch_size
        self.now = now

    def load(self) -> list[Any]:
        """All records of the replay, in the order they will be emitted."""
        rows: list[dict[str, Any]] = []
        dead: list[Any] = []
        for p in expand_paths(self.paths):
            r, d = read_rows(p, self.fmt)
            rows.extend(r)
            dead.extend(d)
        if self.prime is not None:
            self.prime(rows)
        keyed: list[tuple[float, int, Any]] = []
        last = float("-inf")
        seq = 0
        for row in rows:
            for rec in self.convert(row):
                ts = getattr(rec, "ts", None)
                if isinstance(ts, float):
                    last = ts
                    keyed.append((ts, seq, rec))
                else:
                    keyed.append((last, seq, rec))
                seq += 1
        keyed.sort(key=lambda x: (x[0], x[1]))
        out = [rec for _t, _s, rec in keyed]
        if self.stop_after_last is not None:
            stop = self.stop_after_last
            last = max((i for i, rec in enumerate(out) if stop(rec)), default=len(out) - 1)
            # Records without a time (dead letters of rows) are never cut: every row counts.
            kept = [r for r in out[last + 1 :] if not isinstance(getattr(r, "ts", None), float)]
            self.cut = len(out) - last - 1 - len(kept)
            out = out[: last + 1] + kept
        return dead + out

    @override
    def list_parts(self) -> list[str]:
        return ["case_replay"]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> PacedPartition[Any]:
        items = self.load()
        raw = [getattr(x, "ts", None) for x in items]
        # Dead letters carry no time: pace them with their neighbour.
        prev = next((t for t in raw if isinstance(t, float)), 0.0)
        times: list[float] = []
        for t in raw:
            if isinstance(t, float):
                prev = t
            times.append(prev)
        return PacedPartition(
            items,
            times,
            speed=self.speed,
            batch_size=self.batch_size,
            now=self.now,
            resume_state=resume_state,
        )
