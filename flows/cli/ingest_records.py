"""``vigil ingest`` for the record feeds: indicators, service queues and media into the bus.

::

    vigil ingest --to URL --feed indicators --csv 'kpi/*.csv' --json points.json
    vigil ingest --to URL --feed service_queues -c vigil.yaml --csv cases.csv
    vigil ingest --to URL --feed media -c vigil.yaml --csv posts.csv
    vigil ingest --to URL --feed media --rss https://example.org/rss --rss saved.xml
    vigil ingest --to URL --feed media --http https://portal.example/api/posts --polls 1

Files (``--file`` by extension, ``--csv``, ``--json`` as JSON lines or one JSON array,
``--rss FILE``) are read whole and written in order, one record per entry
(:func:`vigil.records.record_line`). URLs (``--http``, ``--rss URL``) are polled by Vigil's
own pollers (:mod:`vigil.sources.http_poll`: conditional GET, backoff, de-duplication)
every ``--interval`` seconds, ``--polls`` times or until stopped; with ``--state-dir`` what
was seen survives a restart. Everything goes through the same
:class:`~vigil.sinks.bus.BusWriter` as log lines (sharding, back-pressure, ``--on-full``).

What each feed sends: an indicator record as it is; a queue row through the mapping of the
configuration's ``service_queues`` input (:func:`vigil.flows.queues.mapping.bus_rows`; a
polled row keeps only the mapped fields); a media post as it is, a file's posts in the
order a replay reads them (by the ``fields`` of the configuration's media input, if any),
a poll's new items oldest first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vigil.flows.cli.bus import _CHUNK, _produce, _Writers, indicator_lines
from vigil.sources.http_poll import HTTPJSONSource
from vigil.sources.replay import expand_paths
from vigil.sources.rss import RSSSource, decode_feed

from vigil.records import RawLine, record_line

__all__ = ["ingest_records", "json_as_lines"]

#: A polled item travels wrapped (see :class:`_Wrapped`): the record is under this key.
_RECORD = "record"


class RecordsError(ValueError):
    """A user's mistake in what to ingest (one line, exit 2)."""


# ---------------------------------------------------------------- files
def json_as_lines(path: str, tmp: str) -> str:
    """``path`` if it holds JSON lines; if it holds one JSON array, a JSON-lines copy of it
    (same file name, in ``tmp``) with one element per line.

    >>> import tempfile, pathlib
    >>> d = tempfile.mkdtemp()
    >>> _ = pathlib.Path(d, "a.json").write_text('[{"v": 1}, {"v": 2}]')
    >>> copy = json_as_lines(f"{d}/a.json", tempfile.mkdtemp())
    >>> pathlib.Path(copy).name, pathlib.Path(copy).read_text()
    ('a.json', '{"v":1}\\n{"v":2}\\n')
    """
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(4096).lstrip()
        if not head.startswith("["):
            return path
        f.seek(0)
        try:
            doc = json.load(f)
        except ValueError as ex:
            msg = f"{path}: starts like a JSON array but is not one ({ex})"
            raise RecordsError(msg) from None
    out = Path(tmp) / Path(path).name
    with out.open("w", encoding="utf-8") as f:
        for x in doc:
            f.write(json.dumps(x, separators=(",", ":"), ensure_ascii=False) + "\n")
    return str(out)


def _files(args: argparse.Namespace, tmp: str) -> list[tuple[str, str]]:
    """Every file to read, with its format (``csv`` or ``jsonl``), in the order given."""
    by_ext = args.format if args.format in ("csv", "jsonl") else None
    out: list[tuple[str, str]] = []
    for opt, patterns in (("--file", args.file), ("--csv", args.csv), ("--json", args.json)):
        for pattern in patterns or ():
            paths = expand_paths([pattern])
            if not paths:
                msg = f"{opt} {pattern!r} matches no file"
                raise RecordsError(msg)
            for p in paths:
                if opt == "--csv":
                    out.append((p, "csv"))
                elif opt == "--json":
                    out.append((json_as_lines(p, tmp), "jsonl"))
                else:
                    out.append((p, by_ext or ("csv" if p.endswith(".csv") else "jsonl")))
    return out


def _rss_file_lines(paths: Sequence[str]) -> list[RawLine]:
    """The entries of saved RSS/Atom documents, oldest first (stable), origin the file."""
    out: list[tuple[float, int, RawLine]] = []
    for p in paths:
        try:
            items = decode_feed(Path(p).read_bytes(), {}, p)
        except ValueError as ex:
            msg = f"{p}: {ex}"
            raise RecordsError(msg) from None
        for it in items:
            out.append((float(it["published_at"]), len(out), record_line(it, p)))
    return [line for _, _, line in sorted(out, key=lambda x: x[:2])]


# ---------------------------------------------------------------- the feeds
def _queue_input(args: argparse.Namespace) -> Any:
    """The ``service_queues`` input whose mapping rows are read by."""
    from vigil.flows.config import load_config

    if not args.config:
        msg = "--feed service_queues needs --config (its service_queues input's mapping)"
        raise RecordsError(msg)
    inputs = load_config(args.config).service_queues.inputs
    return _chosen(args, inputs, "service_queues")


def _media_fields(args: argparse.Namespace) -> dict[str, str]:
    """The ``fields`` of the media input the posts are meant for ({} without --config)."""
    if not args.config:
        return {}
    from vigil.flows.config import load_config

    inp = _chosen(args, load_config(args.config).media.inputs, "media")
    return dict(getattr(inp, "fields", {}))


def _chosen(args: argparse.Namespace, inputs: Sequence[Any], section: str) -> Any:
    """``--input NAME``, else the section's bus input, else its first input."""
    if args.input is not None:
        chosen = [i for i in inputs if i.name == args.input]
    else:
        chosen = [i for i in inputs if i.kind == "redis_stream"] or list(inputs)
    if not chosen:
        what = f"an input named {args.input!r}" if args.input else "any input"
        msg = f"{args.config}: {section} has no {what}"
        raise RecordsError(msg)
    return chosen[0]


def file_lines(args: argparse.Namespace, files: list[tuple[str, str]]) -> tuple[list[RawLine], int]:
    """The records of ``files`` for ``args.feed`` as bus lines, and the unreadable count."""
    if args.feed == "indicators":
        return [x for p, fmt in files for x in indicator_lines([p], fmt)], 0
    if args.feed == "media":
        from vigil.flows.media.flow import item_time
        from vigil.flows.media.inputs import post_lines

        fields = _media_fields(args)
        return post_lines(files, lambda r: item_time(r, fields)), 0
    from vigil.flows.queues.mapping import bus_rows

    inp = _queue_input(args)
    fmts = {fmt for _, fmt in files}
    if len(fmts) > 1:  # one table or log, ordered by event time: one format
        msg = "--feed service_queues: give files of one format (CSV or JSON lines)"
        raise RecordsError(msg)
    paths = [p for p, _ in files]
    rows, unreadable = bus_rows(paths, fmts.pop(), inp.mapping, until=args.until)
    return [record_line(r, "service_queues") for r in rows], unreadable


# ---------------------------------------------------------------- polling
class _Wrapped:
    """A poller whose items are ``{"record": item, <id fields>}``: what the poller adds to
    an item (``source``, ``origin``) lands on the wrapper, so the record goes out as it came."""

    _id_fields: tuple[str, ...]

    def _decode(self, body: bytes, headers: Mapping[str, str], url: str) -> list[dict[str, Any]]:
        items = super()._decode(body, headers, url)  # type: ignore[misc]
        keys = self._id_fields
        return [{_RECORD: it, **{k: it[k] for k in keys if k in it}} for it in items]


class _RSSRecords(_Wrapped, RSSSource):
    pass


class _HTTPRecords(_Wrapped, HTTPJSONSource):
    pass


def _pollers(args: argparse.Namespace, urls: list[str], rss: list[str]) -> list[Any]:
    common = {"interval_s": args.interval, "timeout_s": args.timeout, "max_polls": args.polls}
    out: list[Any] = []
    if urls:
        ids = tuple(args.id_field or ("id", "url"))
        if args.feed == "media" and not args.id_field:
            f = _media_fields(args)
            ids = (f.get("id", "id"), f.get("url", "url"))
        out.append(
            _HTTPRecords(tuple(urls), "http", items_path=args.items_path, id_fields=ids, **common)
        )
    if rss:
        out.append(_RSSRecords(tuple(rss), "rss", **common))
    return out


def _to_lines(args: argparse.Namespace) -> Callable[[list[dict[str, Any]]], list[RawLine]]:
    """Polled (wrapped) items to bus lines: a media poll's items oldest first, a queue
    row slimmed to the mapped fields."""
    keep: tuple[str, ...] | None = None
    order: Callable[[dict[str, Any]], float | None] | None = None
    if args.feed == "service_queues":
        from vigil.flows.queues.mapping import mapped_fields

        keep = mapped_fields(_queue_input(args).mapping)
    elif args.feed == "media":
        from vigil.flows.media.flow import item_time

        fields = _media_fields(args)

        def order(r: dict[str, Any]) -> float | None:
            return item_time(r, fields)

    def to_lines(batch: list[dict[str, Any]]) -> list[RawLine]:
        recs = [(w[_RECORD], str(w.get("origin", ""))) for w in batch]
        if keep is not None:
            recs = [({k: r[k] for k in keep if k in r}, o) for r, o in recs]
        if order is not None:
            times = [order(r) for r, _ in recs]
            recs = [recs[i] for i in sorted(range(len(recs)), key=lambda i: times[i] or 0.0)]
        return [record_line(r, o) for r, o in recs]

    return to_lines


# ---------------------------------------------------------------- the command
def _split_rss(values: Sequence[str]) -> tuple[list[str], list[str]]:
    urls = [v for v in values if v.startswith(("http://", "https://"))]
    return urls, [v for v in values if v not in urls]


def _check(args: argparse.Namespace) -> None:
    if args.syslog is not None:
        msg = (
            f"--syslog receives log lines (--feed security); --feed {args.feed} reads "
            "--file, --csv, --json, --rss (media) or --http"
        )
        raise RecordsError(msg)
    if args.rss and args.feed != "media":
        msg = f"--rss is for --feed media (--feed {args.feed}: --file, --csv, --json or --http)"
        raise RecordsError(msg)
    bad = [u for u in args.http or () if not u.startswith(("http://", "https://"))]
    if bad:
        msg = f"--http expects an http(s):// URL, got {bad[0]!r} (a file: --json)"
        raise RecordsError(msg)
    if not (args.file or args.csv or args.json or args.rss or args.http):
        msg = f"nothing to read: --feed {args.feed} needs --file, --csv, --json"
        msg += ", --rss or --http" if args.feed == "media" else " or --http"
        raise RecordsError(msg)


def ingest_records(args: argparse.Namespace) -> int:
    """``vigil ingest --feed indicators|service_queues|media``: files, then any polls."""
    from vigil.flows.errors import VigilError

    rss_urls, rss_files = _split_rss(args.rss or ())
    try:
        _check(args)
        with tempfile.TemporaryDirectory(prefix="vigil-ingest-") as tmp:
            files = _files(args, tmp)
            lines, unreadable = file_lines(args, files) if files else ([], 0)
        lines += _rss_file_lines(expand_paths(rss_files))
        pollers = _pollers(args, list(args.http or ()), rss_urls)
        to_lines = _to_lines(args) if pollers else None
    except (RecordsError, VigilError) as ex:
        print(f"vigil ingest: {ex}", file=sys.stderr)
        return 2
    except OSError as ex:
        print(f"vigil ingest: cannot read {ex.filename}: {ex.strerror}", file=sys.stderr)
        return 1
    summary = {"written": 0, "dropped": 0}
    if lines:
        writer = _Writers(args)()
        try:
            for i in range(0, len(lines), _CHUNK):
                writer.write(lines[i : i + _CHUNK])
        finally:
            writer.close()
        summary = {"written": writer.written, "dropped": writer.dropped}
    elif not pollers:
        print("vigil ingest: nothing to write: the files hold no records", file=sys.stderr)
    if pollers:
        got = _produce(pollers, args, state_dir=args.state_dir, to_lines=to_lines)
        summary = {k: summary[k] + got[k] for k in summary}
    print(json.dumps({"summary": {**summary, "unreadable": unreadable}}), file=sys.stderr)
    return 0
