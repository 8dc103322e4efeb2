"""Inputs of the media flow: recorded posts replayed, the bus, and the configured sources built.

:class:`PostReplaySource` replays JSON lines or CSV files of posts (for example the
airline tweets) in event-time order, as fast as possible or at ``speed`` x real time. Rows
are plain dicts; the flow maps and validates their fields. (It sits here rather than in
``sources/`` because it shares the field mapping with the media parser.)

On the bus a post is one entry whose text is the row as a JSON object
(:func:`vigil.records.record_line`). :func:`post_lines` makes those entries from files, in
the order a replay reads them (``vigil ingest --feed media``); :class:`BusItems` turns
entries back into the rows a replay gives, so a flow reading the bus sees what it would see
reading the files.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition
from typing_extensions import override
from vigil.flows.media.config import (
    HTTPJSONInput,
    MediaConfig,
    MediaStreamInput,
    PostReplayInput,
    RSSInput,
)
from vigil.sources.http_poll import HTTPJSONSource
from vigil.sources.replay import expand_paths
from vigil.sources.rss import RSSSource

from vigil.records import RECORD_JSON, RawLine, record_line

__all__ = [
    "BusItems",
    "PostReplaySource",
    "decode_post",
    "event_order",
    "make_media_sources",
    "post_lines",
    "read_posts",
]

_BATCH = 500


def read_posts(path: str, fmt: str) -> list[dict[str, Any]]:
    """Every row of a JSON-lines or CSV file as a dict; a bad JSON line becomes a
    ``{"_dead": "bad json", ...}`` row (dead-lettered by the flow)."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "csv":
            rows.extend(dict(r) for r in csv.DictReader(f))
        else:
            rows.extend(decode_post(line, path) for line in f if line.strip())
    return rows


def decode_post(text: str, origin: str) -> dict[str, Any]:
    """One JSON line as a post row; a line that is not a JSON object becomes a dead row.

    >>> decode_post('{"id": 1}', "a.jsonl"), decode_post("[1]", "a.jsonl")["_dead"]
    ({'id': 1}, 'not an object')
    """
    try:
        obj = json.loads(text)
    except ValueError:
        return {"_dead": "bad json", "origin": origin, "payload": text[:512]}
    if isinstance(obj, dict):
        return obj
    return {"_dead": "not an object", "origin": origin, "payload": text[:512]}


def event_order(
    rows: Sequence[dict[str, Any]], time_of: Callable[[dict[str, Any]], float | None]
) -> tuple[list[int], list[float]]:
    """The indices of ``rows`` in event-time order (stable for ties), and their times.

    A row without a usable time (or a dead row) keeps the time of the row before it, so it
    stays next to its neighbours (``-inf`` before the first timed row).

    >>> event_order([{"t": 3}, {"t": None}, {"t": 1}], lambda r: r["t"])
    ([2, 0, 1], [1, 3, 3])
    """
    keyed = []
    last = -math.inf
    for i, r in enumerate(rows):
        t = None if "_dead" in r else time_of(r)
        last = t if t is not None else last  # untimed rows stay next to their neighbours
        keyed.append((last, i))
    keyed.sort()
    return [i for _, i in keyed], [t for t, _ in keyed]


def post_lines(
    files: Sequence[tuple[str, str]], time_of: Callable[[dict[str, Any]], float | None]
) -> list[RawLine]:
    """The posts of files (pattern, ``csv`` or ``jsonl``) as bus entries, merged in the
    order :class:`PostReplaySource` reads them.

    A row travels as it is (a CSV row as ``{column: value}``), its origin the file's name;
    a JSON line that is not an object travels as its text, so the flow dead-letters it as
    it does reading the file.
    """
    rows: list[dict[str, Any]] = []
    texts: list[str | None] = []
    origins: list[str] = []
    csv_rows: list[bool] = []
    for pattern, fmt in files:
        for p in expand_paths([pattern]):
            got = read_posts(p, fmt)
            rows.extend(got)
            origins.extend([Path(p).name] * len(got))
            csv_rows.extend([fmt == "csv"] * len(got))
            if fmt == "csv":
                texts.extend([None] * len(got))
            else:  # read_posts reads the lines that are not blank, one row each
                with open(p, encoding="utf-8", newline="") as f:
                    texts.extend(ln.rstrip("\r\n") for ln in f if ln.strip())
    order, _ = event_order(rows, time_of)
    out = []
    for i in order:
        text = texts[i]
        if "_dead" in rows[i] and text is not None:  # its origin: the path, as in a replay
            out.append(RawLine(RECORD_JSON, str(rows[i]["origin"]), text))
        else:
            out.append(record_line(rows[i], origins[i], csv_row=csv_rows[i]))
    return out


class BusItems:
    """The ``convert`` of a media bus input: entries to the rows a replay gives.

    Each row carries the input's name (``_input``, the ``source`` label of its items) and,
    unless it has its own, ``source`` and ``origin`` (the producer's file name or URL).
    It never raises: an entry it cannot read becomes a dead row.

    >>> conv = BusItems("bus")
    >>> [r.get("_dead") or r["id"] for r in conv([RawLine("json", "a.csv", '{"id": "x"}'),
    ...                                            RawLine("json", "a.csv", "nope")])]
    ['x', 'bad json']
    """

    TOO_LONG = "item too long"

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, lines: list[RawLine]) -> list[dict[str, Any]]:
        out = []
        for line in lines:
            if line.oversize:
                r = {"_dead": self.TOO_LONG, "origin": line.origin, "payload": line.text[:512]}
            else:
                r = decode_post(line.text, line.origin)
            r["_input"] = self.name
            r.setdefault("source", self.name)
            r.setdefault("origin", line.origin)
            out.append(r)
        return out


class _ReplayPartition(StatefulSourcePartition[dict[str, Any], int]):
    def __init__(
        self,
        rows: list[dict[str, Any]],
        times: list[float],
        speed: float | None,
        start: int,
        now: Callable[[], float],
    ) -> None:
        self._rows = rows
        self._times = times
        self._speed = speed
        self._i = start
        self._now = now
        self._t0 = now()
        first = next((t for t in times[start:] if not math.isinf(t)), None)
        self._e0 = first if first is not None else 0.0

    def _due(self, i: int) -> float:
        if self._speed is None or math.isinf(self._times[i]):
            return 0.0
        return self._t0 + (self._times[i] - self._e0) / self._speed

    @override
    def next_batch(self) -> list[dict[str, Any]]:
        if self._i >= len(self._rows):
            raise StopIteration
        now = self._now()
        out: list[dict[str, Any]] = []
        while self._i < len(self._rows) and len(out) < _BATCH and self._due(self._i) <= now:
            out.append(self._rows[self._i])
            self._i += 1
        return out

    @override
    def next_awake(self) -> datetime | None:
        if self._i >= len(self._rows) or self._speed is None:
            return None
        return datetime.fromtimestamp(self._due(self._i), UTC) + timedelta(milliseconds=1)

    @override
    def snapshot(self) -> int:
        return self._i


class PostReplaySource(FixedPartitionedSource[dict[str, Any], int]):
    """Replay posts from files, merged into event-time order (stable for ties).

    Parameters
    ----------
    paths
        Files or glob patterns.
    fmt
        ``"jsonl"`` or ``"csv"``.
    name
        The input's name (``source`` of rows that have none).
    time_of
        A row's event time (epoch seconds) or ``None`` (then it keeps its file position).
    speed
        Replay speed factor; ``None`` as fast as possible.
    """

    def __init__(
        self,
        paths: tuple[str, ...],
        fmt: str,
        name: str,
        time_of: Callable[[dict[str, Any]], float | None],
        *,
        speed: float | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.paths = paths
        self.fmt = fmt
        self.name = name
        self.time_of = time_of
        self.speed = speed
        self.now = now

    @override
    def list_parts(self) -> list[str]:
        return [f"{self.name}:replay"]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        rows: list[dict[str, Any]] = []
        for p in expand_paths(self.paths):
            for r in read_posts(p, self.fmt):
                r["_input"] = self.name  # the input, whatever the row's own columns
                r.setdefault("source", self.name)
                r.setdefault("origin", str(Path(p).name))
                rows.append(r)
        order, times = event_order(rows, self.time_of)
        rows = [rows[i] for i in order]
        return _ReplayPartition(rows, times, self.speed, resume_state or 0, self.now)


def make_media_sources(
    cfg: MediaConfig,
    time_of: Callable[[dict[str, Any], dict[str, str]], float | None],
    *,
    speed_override: float | str | None = "config",
    environ: Mapping[str, str] | None = None,
) -> list[Source[dict[str, Any]]]:
    """One bytewax source per configured media input."""
    from vigil.flows.bus_inputs import redis_stream_source

    out: list[Source[dict[str, Any]]] = []
    for inp in cfg.inputs:
        if isinstance(inp, MediaStreamInput):
            out.append(
                redis_stream_source(inp, environ, fmt=RECORD_JSON, convert=BusItems(inp.name))
            )
        elif isinstance(inp, RSSInput):
            out.append(
                RSSSource(
                    inp.urls,
                    inp.name,
                    interval_s=inp.interval_s,
                    timeout_s=inp.timeout_s,
                    max_backoff_s=inp.max_backoff_s,
                    max_polls=inp.max_polls,
                )
            )
        elif isinstance(inp, HTTPJSONInput):
            fields = inp.fields
            out.append(
                HTTPJSONSource(
                    (inp.url,),
                    inp.name,
                    items_path=inp.items_path,
                    id_fields=(fields.get("id", "id"), fields.get("url", "url")),
                    interval_s=inp.interval_s,
                    timeout_s=inp.timeout_s,
                    max_backoff_s=inp.max_backoff_s,
                    max_polls=inp.max_polls,
                )
            )
        elif isinstance(inp, PostReplayInput):
            speed = inp.speed if speed_override == "config" else speed_override
            fields = dict(inp.fields)

            def row_time(r: dict[str, Any], _f: dict[str, str] = fields) -> float | None:
                return time_of(r, _f)

            out.append(
                PostReplaySource(
                    inp.paths,
                    inp.format,
                    inp.name,
                    row_time,
                    speed=speed if isinstance(speed, float | int) else None,
                )
            )
    return out
