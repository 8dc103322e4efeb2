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
import math
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from vigil.flows.config import load_config
from vigil.flows.queues.config import QueueFileInput, ServiceQueuesConfig
from vigil.flows.queues.deadlines import DeadlineTable
from vigil.flows.queues.flow import id_salt, make_calendar
from vigil.flows.queues.mapping import CaseMapper, LabelFolder
from vigil.flows.queues.records import CLOSED, DATA_QUALITY, RECEIVED, QueueEvent
from vigil.sources.case_replay import CaseReplaySource

from vigil.records import DeadLetter

ALL_SERVICES = "(all)"
_UNBOUNDED = 10**9  # the scorecard is not a metric: every agency and service by name


@dataclass
class ScoreRow:
    """One line of the scorecard.

    ``on_time_pct`` is the share of the completions that have a deadline verdict (the
    publisher's on-time flag, the record's due date, or the service-level table), and
    ``None`` when none has: no deadline source, no on-time claim. ``backlog`` and
    ``overdue_now`` are levels at the period's end (open; open past their deadline,
    ``None`` when no open request has a deadline). ``deadline_source`` says where the
    deadlines came from: ``data``, ``table``, ``data+table`` or ``none``;
    ``with_deadline`` and ``table_deadlines`` count the completions judged, and those of
    them judged on a table deadline.
    """

    agency: str
    service: str
    received: int
    completed: int
    on_time_pct: float | None
    median_hours: float | None
    p90_hours: float | None
    backlog: int = 0
    overdue_now: int | None = None
    deadline_source: str = "none"
    with_deadline: int = 0
    table_deadlines: int = 0


class _Acc:
    __slots__ = (
        "backlog",
        "completed",
        "from_data",
        "from_table",
        "judged",
        "on_time",
        "open_due",
        "overdue",
        "proc",
        "received",
        "table_judged",
    )

    def __init__(self) -> None:
        self.received = 0
        self.completed = 0
        self.on_time = 0
        self.judged = 0
        self.table_judged = 0
        self.from_data = 0
        self.from_table = 0
        self.backlog = 0
        self.overdue = 0
        self.open_due = 0
        self.proc: list[float] = []  # processing times (s), for exact quantiles

    def source(self) -> str:
        if self.from_data and self.from_table:
            return "data+table"
        return "data" if self.from_data else "table" if self.from_table else "none"


def _nearest_rank(xs: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``xs`` by nearest rank (the smallest value with at least
    ``q`` of the values at or below it); None when empty.

    >>> _nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5), _nearest_rank([1.0, 2.0, 3.0], 0.9)
    (2.0, 3.0)
    """
    if not xs:
        return None
    return xs[max(0, math.ceil(q * len(xs)) - 1)]


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


# An open request: received, due, where its deadline came from, agency, service.
_Open = tuple[float, float | None, str, str, str]


def scorecard(
    events: Iterable[Any], start: float, end: float, *, at: float | None = None
) -> list[ScoreRow]:
    """Scorecard rows of lifecycle events over ``[start, end)`` (epoch seconds).

    A completion counts in the period it happened in; it is on time by the publisher's
    flag when the mapping names one, else when it closed by its deadline (the record's,
    or the service-level table's). A completion with neither has no verdict: it is not in
    the on-time share, and a row without any has ``on_time_pct=None``. Processing time is
    closed minus received. Backlog and overdue are counted at ``at`` (default ``end``).
    Quantiles are exact (nearest rank): a published figure is the same on every run.
    Events need not be only :class:`QueueEvent` (dead letters are skipped).

    Examples
    --------
    >>> evs = [QueueEvent(0.0, "received", "a", "PWD", "lights", due=7200.0),
    ...        QueueEvent(3600.0, "closed", "a", "PWD", "lights"),
    ...        QueueEvent(10.0, "received", "b", "PWD", "lights", due=20.0),
    ...        QueueEvent(7210.0, "closed", "b", "PWD", "lights"),
    ...        QueueEvent(20.0, "received", "c", "ISD", "permit")]
    >>> [(r.agency, r.service, r.received, r.completed, r.on_time_pct, r.backlog)
    ...  for r in scorecard(evs, 0, 1e9)]  # doctest: +NORMALIZE_WHITESPACE
    [('ISD', '(all)', 1, 0, None, 1), ('ISD', 'permit', 1, 0, None, 1),
     ('PWD', '(all)', 2, 2, 50.0, 0), ('PWD', 'lights', 2, 2, 50.0, 0)]
    """
    at = end if at is None else at
    accs: dict[tuple[str, str], _Acc] = {}

    def acc_of(agency: str, service: str) -> tuple[_Acc, _Acc]:
        a = accs.get((agency, ALL_SERVICES)) or accs.setdefault((agency, ALL_SERVICES), _Acc())
        b = accs.get((agency, service)) or accs.setdefault((agency, service), _Acc())
        return a, b

    opened: dict[str, _Open] = {}
    snapped = False

    def snap() -> None:
        for _received, due, src, agency, service in opened.values():
            for acc in acc_of(agency, service):
                acc.backlog += 1
                if due is not None:  # open requests' deadlines are sources too
                    acc.open_due += 1
                    acc.overdue += due < at
                    if src == "table":
                        acc.from_table += 1
                    else:
                        acc.from_data += 1

    for ev in events:
        if type(ev) is not QueueEvent:
            continue
        if not snapped and ev.ts >= at:
            snap()
            snapped = True
        if ev.kind == RECEIVED:
            opened[ev.rid] = (ev.ts, ev.due, ev.due_source, ev.agency, ev.service)
            if start <= ev.ts < end:
                for acc in acc_of(ev.agency, ev.service):
                    acc.received += 1
        elif ev.kind == CLOSED:
            known = opened.pop(ev.rid, None)
            received = ev.received if ev.received is not None else (known or (None,))[0]
            due, src = (ev.due, ev.due_source) if ev.due is not None else (None, "")
            if due is None and known is not None and known[1] is not None:
                due, src = known[1], known[2]
            if not start <= ev.ts < end:
                continue
            if ev.on_time is not None:
                verdict: bool | None = ev.on_time
                src = "data"
            else:
                verdict = None if due is None else ev.ts <= due
            for acc in acc_of(ev.agency, ev.service):
                acc.completed += 1
                if verdict is not None:
                    acc.judged += 1
                    acc.on_time += verdict
                    if src == "table":
                        acc.table_judged += 1
                        acc.from_table += 1
                    else:
                        acc.from_data += 1
                if received is not None:
                    acc.proc.append(max(ev.ts - received, 0.0))
    if not snapped:
        snap()
    rows = []
    for (agency, service), a in sorted(accs.items()):
        if not (a.received or a.completed or a.backlog):
            continue
        a.proc.sort()
        rows.append(
            ScoreRow(
                agency,
                service,
                a.received,
                a.completed,
                round(100.0 * a.on_time / a.judged, 2) if a.judged else None,
                _hours(_nearest_rank(a.proc, 0.5)),
                _hours(_nearest_rank(a.proc, 0.9)),
                backlog=a.backlog,
                overdue_now=a.overdue if a.open_due else None,
                deadline_source=a.source(),
                with_deadline=a.judged,
                table_deadlines=a.table_judged,
            )
        )
    return rows


def load_events(cfg: ServiceQueuesConfig) -> list[Any]:
    """Every lifecycle event of the configured inputs, in event-time order, unfolded,
    with the dead letters and data-quality records of their rows (``ts`` 0: first)."""
    salt = id_salt(cfg)
    table = DeadlineTable(cfg.service_levels, make_calendar(cfg))
    out: list[Any] = []
    for inp in cfg.inputs:
        if not isinstance(inp, QueueFileInput):
            continue  # the bus: a report replays files only
        mapper = CaseMapper(
            inp.mapping,
            LabelFolder(_UNBOUNDED),
            LabelFolder(_UNBOUNDED),
            LabelFolder(_UNBOUNDED),
            salt=salt,
            origin=",".join(inp.paths),
            deadlines=table,
        )
        out.extend(CaseReplaySource(inp.paths, inp.format, mapper.convert).load())
    out.sort(key=lambda e: getattr(e, "ts", 0.0))
    return out


def set_aside(events: Iterable[Any]) -> list[tuple[str, str, int]]:
    """Rows kept out of every figure: ``(kind, reason, count)``, kind ``"data quality"``
    (a lifecycle that makes no sense) or ``"dead-lettered"`` (a row that cannot be read).

    >>> from vigil.records import DeadLetter
    >>> set_aside([DeadLetter("data_quality", "close_before_open", "{}"),
    ...            DeadLetter("map", "missing field: id", "{}"),
    ...            DeadLetter("data_quality", "close_before_open", "{}")])
    [('data quality', 'close_before_open', 2), ('dead-lettered', 'missing field: id', 1)]
    """
    counts: Counter[tuple[str, str]] = Counter()
    for ev in events:
        if type(ev) is DeadLetter:
            kind = "data quality" if ev.step == DATA_QUALITY else "dead-lettered"
            counts[(kind, ev.reason)] += 1
    return [(k, r, n) for (k, r), n in sorted(counts.items())]


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


def _on_time(r: ScoreRow) -> str:
    if r.on_time_pct is not None:
        return f"{r.on_time_pct:.1f}%"
    return "no deadline" if r.completed else "-"


def print_table(rows: list[ScoreRow], out: Any, *, services: bool = True) -> None:
    """The scorecard as a text table; ``deadlines`` says where the deadlines came from."""
    head = (
        f"{'agency':<14} {'service':<36} {'received':>8} {'completed':>9} "
        f"{'on time':>11} {'median h':>8} {'p90 h':>7} {'backlog':>7} {'overdue':>7} "
        f"{'deadlines':<10}"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        if not services and r.service != ALL_SERVICES:
            continue
        overdue = "-" if r.overdue_now is None else str(r.overdue_now)
        print(
            f"{r.agency[:14]:<14} {r.service[:36]:<36} {r.received:>8} {r.completed:>9} "
            f"{_on_time(r):>11} {_fmt(r.median_hours, '8.1f'):>8} "
            f"{_fmt(r.p90_hours, '7.1f'):>7} {r.backlog:>7} {overdue:>7} "
            f"{r.deadline_source:<10}",
            file=out,
        )


def print_set_aside(counts: list[tuple[str, str, int]], rows_read: int, out: Any) -> None:
    """The rows kept out of the figures, by reason (all of the inputs, not one period)."""
    total = sum(n for _k, _r, n in counts)
    print(
        f"\nRows read: {rows_read}; set aside (in no figure above): {total}",
        file=out,
    )
    for kind, reason, n in counts:
        print(f"  {kind}: {reason}: {n}", file=out)


def rows_read(events: Iterable[Any]) -> int:
    """Rows behind ``events``: an arrival, an event-log row, or a row set aside each."""
    n = 0
    for ev in events:
        t = type(ev)
        if t is DeadLetter or (
            t is QueueEvent and not (ev.kind == CLOSED and ev.received is not None)
        ):
            n += 1
    return n


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
    events = load_events(cfg)
    rows = scorecard(events, start, end)
    aside = set_aside(events)
    n_rows = rows_read(events)
    print(
        f"Public-service scorecard {args.from_} to {args.to} ({cfg.calendar.timezone}); "
        "on time = share of completions within their deadline; backlog and overdue at the "
        "period's end; deadlines: from the data, the service-level table, or none "
        "(no on-time figure)",
        file=sys.stdout,
    )
    print_table(rows, sys.stdout, services=not args.agencies_only)
    print_set_aside(aside, n_rows, sys.stdout)
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
                    "rows_read": n_rows,
                    "set_aside": [{"kind": k, "reason": r, "rows": n} for k, r, n in aside],
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
    from vigil.flows.queues.site_serve import register_scorecard  # imports this module

    register_scorecard(sub)
