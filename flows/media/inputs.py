"""Inputs of the media flow: recorded posts replayed, and the configured sources built.

:class:`PostReplaySource` replays JSON lines or CSV files of posts (for example the
airline tweets) in event-time order, as fast as possible or at ``speed`` x real time. Rows
are plain dicts; the flow maps and validates their fields. (It sits here rather than in
``sources/`` because it shares the field mapping with the media parser.)
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition
from typing_extensions import override
from vigil.flows.media.config import HTTPJSONInput, MediaConfig, PostReplayInput, RSSInput
from vigil.sources.http_poll import HTTPJSONSource
from vigil.sources.replay import expand_paths
from vigil.sources.rss import RSSSource

__all__ = ["PostReplaySource", "make_media_sources", "read_posts"]

_BATCH = 500


def read_posts(path: str, fmt: str) -> list[dict[str, Any]]:
    """Every row of a JSON-lines or CSV file as a dict; a bad JSON line becomes a
    ``{"_dead": "bad json", ...}`` row (dead-lettered by the flow)."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "csv":
            rows.extend(dict(r) for r in csv.DictReader(f))
        else:
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    rows.append({"_dead": "bad json", "origin": path, "payload": line[:512]})
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
                else:
                    rows.append({"_dead": "not an object", "origin": path, "payload": line[:512]})
    return rows


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
        keyed = []
        last = -math.inf
        for i, r in enumerate(rows):
            t = None if "_dead" in r else self.time_of(r)
            last = t if t is not None else last  # untimed rows stay next to their neighbours
            keyed.append((last, i))
        keyed.sort()
        rows = [rows[i] for _, i in keyed]
        times = [t for t, _ in keyed]
        return _ReplayPartition(rows, times, self.speed, resume_state or 0, self.now)


def make_media_sources(
    cfg: MediaConfig,
    time_of: Callable[[dict[str, Any], dict[str, str]], float | None],
    *,
    speed_override: float | str | None = "config",
) -> list[Source[dict[str, Any]]]:
    """One bytewax source per configured media input."""
    out: list[Source[dict[str, Any]]] = []
    for inp in cfg.inputs:
        if isinstance(inp, RSSInput):
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
