"""``vigil scorecard build``: the public scorecard as a static site.

::

    vigil scorecard build --config examples/boston311.yaml --out site/ \\
        [--period 2015-02 | --period 30d | --from 2015-02-01 --to 2015-03-01] [--lang en]

writes ``index.html`` (every agency), ``agency/<name>.html`` (one page per agency, a row
per service) and the same figures as ``scorecard.json`` / ``scorecard.csv`` (and
``agency/<name>.json`` / ``.csv``) beside them.

The figures are the report's (:func:`vigil.flows.queues.cli.scorecard`, so the site and
``vigil report service-queues`` agree to the digit) plus what a public page needs:

- **on time** only where a deadline is known: a completion counts when the publisher gave
  a verdict or the request had a due time; with none, the page says "không có hạn" /
  "no deadline" instead of a percentage;
- **backlog**: requests received before the period's end (the *as of* time: the end, or
  the latest event when the period reaches past the data) and not completed by then;
  **overdue now**: those of them whose deadline has passed;
- **trend**: received and on-time share against the previous period of the same length.

Pages are plain HTML with inline CSS and inline SVG charts: no script, no external font
or URL, ``lang`` set, tables with captions and ``<th scope>``, colours at WCAG AA
contrast or better, readable on a phone (tables scroll sideways inside their region). All
text is escaped; request ids never reach this module's output (events carry only salted
hashes, and those are not shown either).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from vigil.flows.queues.cli import ALL_SERVICES, ScoreRow, scorecard
from vigil.flows.queues.records import CLOSED, RECEIVED, QueueEvent
from vigil.flows.queues.site_html import agency_page, index_page


class PeriodError(ValueError):
    """A ``--period`` / ``--from`` / ``--to`` the site cannot use (a user's mistake)."""


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in epoch seconds, with the time zone its dates are read in."""

    start: float
    end: float
    tz: str

    def previous(self) -> Period:
        """The period just before this one, of the same length."""
        return Period(2 * self.start - self.end, self.start, self.tz)

    def first_day(self) -> str:
        return datetime.fromtimestamp(self.start, ZoneInfo(self.tz)).date().isoformat()

    def last_day(self) -> str:
        return datetime.fromtimestamp(self.end - 1, ZoneInfo(self.tz)).date().isoformat()

    def iso(self) -> dict[str, str]:
        z = ZoneInfo(self.tz)
        return {
            "start": datetime.fromtimestamp(self.start, z).isoformat(),
            "end": datetime.fromtimestamp(self.end, z).isoformat(),
            "timezone": self.tz,
        }


def _local(text: str, tz: ZoneInfo) -> datetime:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as ex:
        msg = f"not a date or time: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        raise PeriodError(msg) from ex
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


def parse_period(
    spec: str | None, start: str | None, end: str | None, tz: str, latest: float | None
) -> Period:
    """The period of ``--period`` (``YYYY-MM`` or ``Nd``) or of ``--from``/``--to``.

    ``Nd`` is the ``N`` whole local days up to and including the day of the latest event
    (``latest``); ``--to`` is exclusive, as in ``vigil report service-queues``.

    >>> p = parse_period("2015-02", None, None, "America/New_York", None)
    >>> p.first_day(), p.last_day()
    ('2015-02-01', '2015-02-28')
    >>> p = parse_period("7d", None, None, "UTC", 1423785600.0)  # 2015-02-13 00:00 UTC
    >>> p.first_day(), p.last_day()
    ('2015-02-07', '2015-02-13')
    >>> parse_period("soon", None, None, "UTC", None)
    Traceback (most recent call last):
    ...
    vigil.flows.queues.site.PeriodError: --period must be YYYY-MM or a number of days ...
    """
    z = ZoneInfo(tz)
    if start is not None or end is not None:
        if spec is not None or start is None or end is None:
            msg = "give either --period or both --from and --to"
            raise PeriodError(msg)
        s, e = _local(start, z).timestamp(), _local(end, z).timestamp()
    else:
        spec = spec or "30d"
        if m := re.fullmatch(r"(\d{4})-(\d{2})", spec):
            y, mo = int(m[1]), int(m[2])
            if not 1 <= mo <= 12:
                msg = f"--period month must be 01-12, got {spec!r}"
                raise PeriodError(msg)
            first = datetime(y, mo, 1, tzinfo=z)
            nxt = datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=z)
            s, e = first.timestamp(), nxt.timestamp()
        elif m := re.fullmatch(r"([1-9]\d{0,3})d", spec):
            if latest is None:
                msg = f"--period {spec}: the inputs hold no events to count back from"
                raise PeriodError(msg)
            last = datetime.fromtimestamp(latest, z).date() + timedelta(days=1)
            first_d = last - timedelta(days=int(m[1]))
            s = _midnight(first_d, z)
            e = _midnight(last, z)
        else:
            msg = f"--period must be YYYY-MM or a number of days such as 30d, got {spec!r}"
            raise PeriodError(msg)
    if not s < e:
        msg = "the period must end after it starts (--from before --to)"
        raise PeriodError(msg)
    return Period(s, e, tz)


def _midnight(d: date, z: ZoneInfo) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=z).timestamp()


@dataclass
class SiteRow:
    """One row of the site: an agency's total (service ``"(all)"``) or one service."""

    agency: str
    service: str
    received: int
    completed: int
    #: Share of the completions with a known deadline that met it; None: none known.
    on_time_pct: float | None
    #: Completions in the period whose deadline (or the publisher's verdict) is known.
    with_deadline: int
    #: Open at the *as of* time and past their deadline; None: no open one has a deadline.
    overdue_now: int | None
    backlog: int
    median_hours: float | None
    p90_hours: float | None
    prev_received: int
    prev_completed: int
    prev_on_time_pct: float | None
    #: Received against the previous period, in %; None when it received nothing.
    received_change_pct: float | None
    #: On-time share against the previous period, in percentage points.
    on_time_change_points: float | None
    #: Where the deadlines came from, when the scorecard says (``ScoreRow.deadline_source``).
    deadline_source: str | None = None


class _Extra:
    __slots__ = ("backlog", "known", "on_time", "overdue")

    def __init__(self) -> None:
        self.known = 0
        self.on_time = 0
        self.backlog = 0
        self.overdue = 0


def _extras(events: Sequence[Any], start: float, end: float, as_of: float) -> dict[Any, _Extra]:
    """Deadline-known completions in ``[start, end)``, and backlog / overdue at ``as_of``.

    The same event semantics as :func:`~vigil.flows.queues.cli.scorecard`: the verdict of
    a close is the publisher's flag, else its time against the due time of its arrival.
    """
    out: dict[tuple[str, str], _Extra] = {}

    def accs(agency: str, service: str) -> tuple[_Extra, _Extra]:
        a = out.get((agency, ALL_SERVICES)) or out.setdefault((agency, ALL_SERVICES), _Extra())
        b = out.get((agency, service)) or out.setdefault((agency, service), _Extra())
        return a, b

    opened: dict[str, tuple[str, str, float | None]] = {}
    horizon = max(end, as_of)
    for ev in events:
        if type(ev) is not QueueEvent:
            continue
        if ev.ts >= horizon:
            break  # events come sorted by time (load_events)
        if ev.kind == RECEIVED:
            if ev.ts < as_of:
                opened[ev.rid] = (ev.agency, ev.service, ev.due)
        elif ev.kind == CLOSED:
            known = opened.pop(ev.rid, None) if ev.ts < as_of else opened.get(ev.rid)
            if not start <= ev.ts < end:
                continue
            due = ev.due if ev.due is not None else (known[2] if known else None)
            if ev.on_time is None and due is None:
                continue
            ok = ev.on_time if ev.on_time is not None else ev.ts <= due  # type: ignore[operator]
            for acc in accs(ev.agency, ev.service):
                acc.known += 1
                acc.on_time += bool(ok)
    for agency, service, due in opened.values():
        for acc in accs(agency, service):
            acc.backlog += 1
            acc.overdue += due is not None and due < as_of
    return out


def _pct(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 2) if den else None


def _honest_on_time(row: ScoreRow, extra: _Extra | None) -> float | None:
    """The row's on-time share, or None when no completion had a known deadline.

    When the scorecard says where its deadlines came from (a ``deadline_source`` field,
    e.g. from a service-level table this module cannot see), its figure is used.
    """
    if hasattr(row, "deadline_source"):
        src = row.deadline_source
        return None if src in (None, "", "none") else row.on_time_pct
    if extra is None or extra.known == 0:
        return None
    if extra.known == row.completed:
        return row.on_time_pct  # every completion decided: exactly the report's figure
    return _pct(extra.on_time, extra.known)


def _scorecard(events: Sequence[Any], start: float, end: float, at: float) -> list[ScoreRow]:
    try:
        return scorecard(events, start, end, at=at)  # type: ignore[call-arg,unused-ignore]
    except TypeError:  # a scorecard without ``at`` (backlog counted here instead)
        return scorecard(events, start, end)


def _change_pct(cur: int, prev: int) -> float | None:
    return round(100.0 * (cur - prev) / prev, 1) if prev else None


def site_rows(events: Sequence[Any], period: Period, latest: float | None) -> list[SiteRow]:
    """The site's rows for ``period`` (``events`` sorted by time, as ``load_events`` gives).

    ``latest`` is the time of the latest event: backlog and overdue are counted at the
    period's end, or just after ``latest`` when the period reaches past the data. Figures
    the scorecard gives (``ScoreRow`` fields) are taken as they are; the ones an older
    scorecard lacks (backlog, overdue, deadline coverage) are counted by :func:`_extras`.
    """
    prev = period.previous()
    as_of = period.end if latest is None else min(period.end, latest + 1.0)
    cur_rows = _scorecard(events, period.start, period.end, as_of)
    prev_rows = {
        (r.agency, r.service): r for r in _scorecard(events, prev.start, prev.end, prev.end)
    }
    ex = _extras(events, period.start, period.end, as_of)
    pex = _extras(events, prev.start, prev.end, prev.end)
    keys = {(r.agency, r.service) for r in cur_rows}
    # An agency with requests still open but no activity in the period is shown too.
    extra_keys = sorted(k for k, e in ex.items() if e.backlog and k not in keys)
    blank = [ScoreRow(a, s, 0, 0, None, None, None) for a, s in extra_keys]
    rows: list[SiteRow] = []
    empty = ScoreRow("", "", 0, 0, None, None, None)
    for r in sorted(
        [*cur_rows, *blank], key=lambda r: (r.agency, r.service != ALL_SERVICES, r.service)
    ):
        key = (r.agency, r.service)
        p = prev_rows.get(key, empty)
        e = ex.get(key) or _Extra()
        on_time = _honest_on_time(r, e)
        prev_on_time = _honest_on_time(p, pex.get(key)) if key in prev_rows else None
        if hasattr(r, "overdue_now"):  # None there: no open request has a deadline
            overdue: int | None = r.overdue_now
        else:
            overdue = e.overdue
        rows.append(
            SiteRow(
                agency=r.agency,
                service=r.service,
                received=r.received,
                completed=r.completed,
                on_time_pct=on_time,
                with_deadline=int(getattr(r, "with_deadline", e.known)),
                overdue_now=overdue,
                backlog=int(getattr(r, "backlog", e.backlog)),
                median_hours=r.median_hours,
                p90_hours=r.p90_hours,
                prev_received=p.received,
                prev_completed=p.completed,
                prev_on_time_pct=prev_on_time,
                received_change_pct=_change_pct(r.received, p.received),
                on_time_change_points=(
                    round(on_time - prev_on_time, 1)
                    if on_time is not None and prev_on_time is not None
                    else None
                ),
                deadline_source=getattr(r, "deadline_source", None),
            )
        )
    return rows


# --- output ------------------------------------------------------------------------------

COLUMNS = [f.name for f in fields(SiteRow)]


def to_csv(rows: Iterable[SiteRow]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in asdict(r).items()})
    return buf.getvalue()


def to_json(rows: Iterable[SiteRow], period: Period, as_of: float, lang: str) -> str:
    doc = {
        "period": period.iso(),
        "previous_period": period.previous().iso(),
        "as_of": datetime.fromtimestamp(as_of, ZoneInfo(period.tz)).isoformat(),
        "language": lang,
        "rows": [asdict(r) for r in rows],
    }
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def slugs(agencies: Iterable[str]) -> dict[str, str]:
    """A file name per agency: letters, digits, ``-`` and ``_`` only, never colliding.

    >>> slugs(["PWDx", "HS/O", "HS O", ""])
    {'PWDx': 'PWDx', 'HS/O': 'HS_O', 'HS O': 'HS_O-2', '': 'agency'}
    """
    out: dict[str, str] = {}
    used: set[str] = set()
    for a in agencies:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", a)[:60] or "agency"
        s, n = base, 1
        while s.lower() in used:
            n += 1
            s = f"{base}-{n}"
        used.add(s.lower())
        out[a] = s
    return out


def build_site(
    events: Sequence[Any], period: Period, *, lang: str = "vi", latest: float | None = None
) -> dict[str, bytes]:
    """Every file of the site, by relative path (``index.html``, ``agency/X.html``, ...)."""
    if latest is None:
        latest = max((getattr(e, "ts", 0.0) for e in events), default=None)
    rows = site_rows(events, period, latest)
    as_of = period.end if latest is None else min(period.end, latest + 1.0)
    agencies = sorted({r.agency for r in rows})
    slug = slugs(agencies)
    files: dict[str, bytes] = {
        "index.html": index_page(rows, period, as_of, lang, slug).encode(),
        "scorecard.json": to_json(rows, period, as_of, lang).encode(),
        "scorecard.csv": to_csv(rows).encode(),
    }
    for a in agencies:
        mine = [r for r in rows if r.agency == a]
        files[f"agency/{slug[a]}.html"] = agency_page(mine, period, as_of, lang, slug[a]).encode()
        files[f"agency/{slug[a]}.json"] = to_json(mine, period, as_of, lang).encode()
        files[f"agency/{slug[a]}.csv"] = to_csv(mine).encode()
    return files


def write_site(files: dict[str, bytes], out: Path) -> None:
    for rel, data in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
