"""``vigil report service-queues``: the public scorecard of the service queues.

::

    vigil report service-queues --config examples/boston311.yaml \\
        --from 2015-02-01 --to 2015-03-01 [--csv out.csv] [--json out.json]

Per agency (and per service within it): requests received and completed in the period,
the on-time percentage of the completions, and their median and 90th-percentile
processing time. The inputs and field mapping come from the configuration's
``service_queues`` section; ``--from`` / ``--to`` are local dates or times in the
calendar's time zone (``--to`` is exclusive).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from datasketches import kll_floats_sketch
from vigil.flows.config import load_config
from vigil.flows.queues.config import QueueFileInput, ServiceQueuesConfig
from vigil.flows.queues.flow import id_salt
from vigil.flows.queues.mapping import CaseMapper, LabelFolder
from vigil.flows.queues.records import CLOSED, RECEIVED, QueueEvent
from vigil.sources.case_replay import CaseReplaySource

ALL_SERVICES = "(all)"
_UNBOUNDED = 10**9  # the scorecard is not a metric: every agency and service by name


@dataclass
class ScoreRow:
    """One line of the scorecard."""

    agency: str
    service: str
    received: int
    completed: int
    on_time_pct: float | None
    median_hours: float | None
    p90_hours: float | None


class _Acc:
    __slots__ = ("completed", "on_time", "proc", "received")

    def __init__(self) -> None:
        self.received = 0
        self.completed = 0
        self.on_time = 0
        self.proc = kll_floats_sketch(200)


def scorecard(events: Iterable[Any], start: float, end: float) -> list[ScoreRow]:
    """Scorecard rows of lifecycle events over ``[start, end)`` (epoch seconds).

    A completion counts in the period it happened in; it is on time by the publisher's
    flag when the mapping names one, else when it closed by its deadline (no deadline:
    on time). Processing time is closed minus received. Quantiles come from a KLL sketch
    (exact up to 200 completions per row, about 1% rank error beyond).

    Examples
    --------
    >>> evs = [QueueEvent(0.0, "received", "a", "PWD", "lights", due=7200.0),
    ...        QueueEvent(3600.0, "closed", "a", "PWD", "lights"),
    ...        QueueEvent(10.0, "received", "b", "PWD", "lights", due=20.0),
    ...        QueueEvent(7210.0, "closed", "b", "PWD", "lights")]
    >>> [(r.service, r.received, r.completed, r.on_time_pct) for r in scorecard(evs, 0, 1e9)]
    [('(all)', 2, 2, 50.0), ('lights', 2, 2, 50.0)]
    """
    accs: dict[tuple[str, str], _Acc] = {}
    opened: dict[str, tuple[float, float | None]] = {}
    for ev in events:
        if type(ev) is not QueueEvent:
            continue
        if ev.kind == RECEIVED:
            opened[ev.rid] = (ev.ts, ev.due)
            if start <= ev.ts < end:
                for key in ((ev.agency, ALL_SERVICES), (ev.agency, ev.service)):
                    acc = accs.get(key) or accs.setdefault(key, _Acc())
                    acc.received += 1
        elif ev.kind == CLOSED:
            known = opened.pop(ev.rid, None)
            received = ev.received if ev.received is not None else (known or (None,))[0]
            due = ev.due if ev.due is not None else (known[1] if known else None)
            if not start <= ev.ts < end:
                continue
            on_time = ev.on_time if ev.on_time is not None else due is None or ev.ts <= due
            for key in ((ev.agency, ALL_SERVICES), (ev.agency, ev.service)):
                acc = accs.get(key) or accs.setdefault(key, _Acc())
                acc.completed += 1
                acc.on_time += on_time
                if received is not None:
                    acc.proc.update(max(ev.ts - received, 0.0))
    rows = []
    for (agency, service), a in sorted(accs.items()):
        has = not a.proc.is_empty()
        rows.append(
            ScoreRow(
                agency,
                service,
                a.received,
                a.completed,
                round(100.0 * a.on_time / a.completed, 2) if a.completed else None,
                round(a.proc.get_quantile(0.5) / 3600, 2) if has else None,
                round(a.proc.get_quantile(0.9) / 3600, 2) if has else None,
            )
        )
    return rows


def load_events(cfg: ServiceQueuesConfig) -> list[Any]:
    """Every lifecycle event of the configured inputs, in event-time order, unfolded."""
    salt = id_salt(cfg)
    out: list[Any] = []
    for inp in cfg.inputs:
        assert isinstance(inp, QueueFileInput)
        mapper = CaseMapper(
            inp.mapping,
            LabelFolder(_UNBOUNDED),
            LabelFolder(_UNBOUNDED),
            LabelFolder(_UNBOUNDED),
            salt=salt,
            origin=",".join(inp.paths),
        )
        out.extend(CaseReplaySource(inp.paths, inp.format, mapper.convert).load())
    out.sort(key=lambda e: getattr(e, "ts", 0.0))
    return out


def _when(text: str, tz: ZoneInfo) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as ex:
        msg = f"not a date or time: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        raise argparse.ArgumentTypeError(msg) from ex
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(rows: list[ScoreRow], out: Any, *, services: bool = True) -> None:
    head = (
        f"{'agency':<14} {'service':<44} {'received':>9} {'completed':>9} "
        f"{'on time':>8} {'median h':>9} {'p90 h':>8}"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        if not services and r.service != ALL_SERVICES:
            continue
        print(
            f"{r.agency[:14]:<14} {r.service[:44]:<44} {r.received:>9} {r.completed:>9} "
            f"{_fmt(r.on_time_pct, '7.1f') + '%' if r.on_time_pct is not None else '-':>8} "
            f"{_fmt(r.median_hours, '9.1f'):>9} {_fmt(r.p90_hours, '8.1f'):>8}",
            file=out,
        )


def cmd_report_queues(args: argparse.Namespace) -> int:
    cfg = load_config(args.config).service_queues
    if not cfg.inputs:
        print(f"vigil report: {args.config} has no service_queues.inputs", file=sys.stderr)
        return 2
    tz = ZoneInfo(cfg.calendar.timezone)
    try:
        start, end = _when(args.from_, tz), _when(args.to, tz)
    except argparse.ArgumentTypeError as ex:
        print(f"vigil report: {ex}", file=sys.stderr)
        return 2
    if not start < end:
        print("vigil report: --from must be before --to", file=sys.stderr)
        return 2
    rows = scorecard(load_events(cfg), start, end)
    print(
        f"Public-service scorecard {args.from_} to {args.to} ({cfg.calendar.timezone}); "
        "on time = share of completions within their deadline",
        file=sys.stdout,
    )
    print_table(rows, sys.stdout, services=not args.agencies_only)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(ScoreRow.__dataclass_fields__))
            w.writeheader()
            for r in rows:
                w.writerow(asdict(r))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "from": args.from_,
                    "to": args.to,
                    "timezone": cfg.calendar.timezone,
                    "rows": [asdict(r) for r in rows],
                },
                f,
                indent=1,
            )
    return 0


def _report_subparsers(sub: Any) -> Any:
    """The ``report`` command's subcommands (another plugin may have created it)."""
    rep = sub.choices.get("report")
    if rep is None:
        rep = sub.add_parser("report", help="public reports (scorecards)")
        return rep.add_subparsers(dest="report", required=True, metavar="REPORT")
    for action in rep._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return rep.add_subparsers(dest="report", required=True, metavar="REPORT")


def register(sub: Any) -> None:
    """Add ``vigil report service-queues`` to the CLI (called by flows/cli/__init__.py)."""
    rs = _report_subparsers(sub)
    p = rs.add_parser(
        "service-queues",
        help="per agency and service: received, completed, on-time %%, median and p90 time",
    )
    p.add_argument("--config", "-c", required=True, help="YAML with a service_queues section")
    p.add_argument(
        "--from",
        dest="from_",
        metavar="DATE",
        required=True,
        help="start (local time, e.g. 2015-02-01), inclusive",
    )
    p.add_argument("--to", metavar="DATE", required=True, help="end (local time), exclusive")
    p.add_argument("--csv", help="also write the scorecard as CSV")
    p.add_argument("--json", help="also write the scorecard as JSON")
    p.add_argument("--agencies-only", action="store_true", help="print agency totals only")
    p.set_defaults(func=cmd_report_queues)
