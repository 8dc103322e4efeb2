"""Parsing of the indicator flow: JSON lines and CSV rows to points, or dead letters.

The reasons of its dead letters (:data:`REASONS`), the :class:`IndicatorParser` of one
input and the batch parse step that groups points by shard of series. Its own module so
:mod:`vigil.flows.indicators.flow` keeps the dataflow wiring; re-exported there.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import PurePath
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson
from vigil.flows.config.base import shard_of
from vigil.flows.indicators.config import IndicatorInput, IndicatorStreamInput
from vigil.flows.indicators.records import IndicatorPoint

from vigil.records import RECORD_CSV_ROW, DeadLetter, RawLine, Tally

# Dead-letter reasons: stable and low-cardinality (a metric label).
BAD_JSON = "bad json"
NOT_OBJECT = "not an object"
BAD_CSV_ROW = "bad csv row"
MISSING_SERIES = "missing field: series"
MISSING_TS = "missing field: ts"
MISSING_VALUE = "missing field: value"
BAD_NUMBER = "bad number"
NON_FINITE = "non-finite value"
BAD_TS = "bad timestamp"
NAIVE_TS = "timestamp without time zone"
BAD_LABELS = "bad labels"
TOO_LONG = "line too long"
#: Every dead-letter reason of this flow.
REASONS = (
    BAD_JSON,
    NOT_OBJECT,
    BAD_CSV_ROW,
    MISSING_SERIES,
    MISSING_TS,
    MISSING_VALUE,
    BAD_NUMBER,
    NON_FINITE,
    BAD_TS,
    NAIVE_TS,
    BAD_LABELS,
    TOO_LONG,
)


class _Bad(Exception):
    """A record that cannot be read; ``args[0]`` is one of :data:`REASONS`."""


def parse_ts(v: Any, tz: ZoneInfo | None) -> float:
    """Epoch seconds from a number, a numeric string or an ISO 8601 string.

    A string without a zone takes ``tz``; without ``tz`` it is an error.

    Examples
    --------
    >>> parse_ts("2024-05-01T08:00:00+07:00", None)
    1714525200.0
    >>> parse_ts("2024-05-01 08:00:00", ZoneInfo("Asia/Ho_Chi_Minh"))
    1714525200.0
    >>> parse_ts(1714525200, None)
    1714525200.0
    >>> parse_ts("2024-05-01 08:00:00", None)
    Traceback (most recent call last):
    ...
    vigil.flows.indicators.parsing._Bad: timestamp without time zone
    """
    if isinstance(v, bool):
        raise _Bad(BAD_TS)
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        s = v.strip()
        try:
            f = float(s)
        except ValueError:
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                raise _Bad(BAD_TS) from None
            if dt.tzinfo is None:
                if tz is None:
                    raise _Bad(NAIVE_TS) from None
                dt = dt.replace(tzinfo=tz)
            return dt.timestamp()
    else:
        raise _Bad(BAD_TS)
    if not math.isfinite(f):
        raise _Bad(BAD_TS)
    return f


def _value(v: Any) -> float:
    if v is None or v == "":
        raise _Bad(MISSING_VALUE)
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise _Bad(BAD_NUMBER)
    try:
        f = float(v)
    except ValueError:
        raise _Bad(BAD_NUMBER) from None
    if not math.isfinite(f):
        raise _Bad(NON_FINITE)
    return f


def _file_series_name(template: str, origin: str) -> str:
    p = PurePath(origin.removeprefix("replay:"))
    return template.format(stem=p.stem, parent=p.parent.name, name=p.name)


class IndicatorParser:
    """Turns raw lines of one input into :class:`IndicatorPoint` or :class:`DeadLetter`.

    CSV files need their header row. A file read from its start gives it as its first
    line; a file resumed in the middle (after a restart) has its header read from the file
    itself, so the flow never loses track of its columns.

    Parameters
    ----------
    inp
        The input's settings (format, column names, time zone).

    Examples
    --------
    >>> from vigil.flows.indicators.config import IndicatorInput, IndicatorStreamInput
    >>> p = IndicatorParser(IndicatorInput(paths=("x",), format="jsonl"))
    >>> p.parse(RawLine("jsonl", "x", '{"series": "a", "ts": 60, "value": "1.5"}'))
    IndicatorPoint(series='a', ts=60.0, value=1.5, labels=())
    >>> p.parse(RawLine("jsonl", "x", '{"series": "a", "ts": 60, "value": "NaN"}')).reason
    'non-finite value'

    From the bus, every entry is one JSON object; a CSV row's (``fmt`` ``csv_row``) are
    read with the CSV rules (label columns):

    >>> from vigil.flows.indicators.config import IndicatorStreamInput
    >>> b = IndicatorParser(IndicatorStreamInput(columns={"labels": ["host"]}))
    >>> b.parse(RawLine("csv_row", "x", '{"series": "a", "ts": "60", "value": "2", "host": "h1"}'))
    IndicatorPoint(series='a', ts=60.0, value=2.0, labels=(('host', 'h1'),))
    """

    def __init__(self, inp: IndicatorInput | IndicatorStreamInput) -> None:
        self.inp = inp
        self._bus = isinstance(inp, IndicatorStreamInput)
        #: The tally's name for what this input reads.
        self.fmt = "bus" if isinstance(inp, IndicatorStreamInput) else inp.format
        self.tz = ZoneInfo(inp.tz) if inp.tz else None
        self._headers: dict[str, tuple[str, list[str]]] = {}  # origin -> (line, columns)
        self._names: dict[str, str] = {}  # origin -> series name (columns.series is None)

    def _series_of_file(self, origin: str) -> str:
        name = self._names.get(origin)
        if name is None:
            name = self._names[origin] = _file_series_name(self.inp.series_name, origin)
        return name

    def _header(self, raw: RawLine) -> tuple[str, list[str]] | None:
        """The (header line, columns) of the line's file; ``None`` if this line is it."""
        h = self._headers.get(raw.origin)
        if h is None:
            first: str | None = None
            try:
                with open(raw.origin.removeprefix("replay:"), encoding="utf-8") as f:
                    first = f.readline().rstrip("\r\n")
            except OSError:
                first = None  # not a file (a test source, a bus): this line is the header
            if first is None:
                first = raw.text
            h = self._headers[raw.origin] = (first, next(csv.reader([first]), []))
            if len(self._headers) > 10_000:
                self._headers.pop(next(iter(self._headers)))
        return None if raw.text == h[0] else h

    def parse(self, raw: RawLine) -> IndicatorPoint | DeadLetter | None:
        """One line; ``None`` for a CSV header line or a blank line."""
        if raw.oversize:
            return DeadLetter("indicators_parse", TOO_LONG, raw.text, raw.fmt, raw.origin)
        if not raw.text.strip():
            return None
        try:
            csv_rules = raw.fmt == RECORD_CSV_ROW if self._bus else self.fmt == "csv"
            if not self._bus and csv_rules:
                h = self._header(raw)
                if h is None:
                    return None
                row = next(csv.reader([raw.text]), [])
                if len(row) > len(h[1]):
                    raise _Bad(BAD_CSV_ROW)
                rec: dict[str, Any] = dict(zip(h[1], row, strict=False))
            else:
                try:
                    obj = orjson.loads(raw.text)
                except orjson.JSONDecodeError:
                    raise _Bad(BAD_JSON) from None
                if not isinstance(obj, dict):
                    raise _Bad(NOT_OBJECT)
                rec = obj
            return self._point(rec, raw.origin, csv_rules)
        except _Bad as ex:
            return DeadLetter(
                "indicators_parse", str(ex.args[0]), raw.text[:512], raw.fmt, raw.origin
            )

    def _point(self, rec: dict[str, Any], origin: str, csv_rules: bool) -> IndicatorPoint:
        cols = self.inp.columns
        if cols.series is None:
            series = self._series_of_file(origin)
        else:
            s = rec.get(cols.series)
            if s is None or s == "":
                raise _Bad(MISSING_SERIES)
            series = str(s)
        ts_raw = rec.get(cols.ts)
        if ts_raw is None or ts_raw == "":
            raise _Bad(MISSING_TS)
        ts = parse_ts(ts_raw, self.tz)
        value = _value(rec.get(cols.value))
        labels: tuple[tuple[str, str], ...] = ()
        if csv_rules:
            if cols.labels:
                labels = tuple((k, str(rec.get(k, ""))) for k in cols.labels)
        else:
            lab = rec.get("labels")
            if lab is not None:
                if not isinstance(lab, dict):
                    raise _Bad(BAD_LABELS)
                labels = tuple(sorted((str(k), str(v)) for k, v in lab.items()))
        return IndicatorPoint(series, ts, value, labels)


Parsed = tuple[str, list[IndicatorPoint]] | DeadLetter | Tally


def make_parse_batch(
    inp: IndicatorInput | IndicatorStreamInput, shards: int
) -> Callable[[list[RawLine]], list[Parsed]]:
    """The parse step: a batch of lines to ``(shard, [points])`` groups, dead letters, a tally."""
    parser = IndicatorParser(inp)
    shard_cache: dict[str, str] = {}

    def parse_batch(raws: list[RawLine]) -> list[Parsed]:
        out: list[Parsed] = []
        groups: dict[str, list[IndicatorPoint]] = {}
        ok = dead = 0
        for raw in raws:
            r = parser.parse(raw)
            if r is None:
                ok += 1
            elif isinstance(r, IndicatorPoint):
                ok += 1
                key = shard_cache.get(r.series)
                if key is None:
                    if len(shard_cache) > 100_000:
                        shard_cache.clear()
                    key = shard_cache[r.series] = shard_of(r.series, shards)
                g = groups.get(key)
                if g is None:
                    groups[key] = [r]
                else:
                    g.append(r)
            else:
                dead += 1
                out.append(cast(DeadLetter, r))
        out.extend(groups.items())
        lines: dict[tuple[str, str], int] = {}
        if ok:
            lines[(parser.fmt, "parsed")] = ok
        if dead:
            lines[(parser.fmt, "dead_lettered")] = dead
        out.append(Tally("indicators_parse", lines=lines))
        return out

    return parse_batch
