"""From a portal's rows to :class:`~vigil.flows.queues.records.QueueEvent`, by configuration alone.

:class:`CaseMapper` applies a :class:`~vigil.flows.queues.config.FieldMapping`: it reads only the
mapped fields (everything else, addresses and names included, is never looked at), hashes
the request id, parses local times in the mapping's time zone, and folds agencies,
services and channels beyond the top-N into ``"other"`` (:class:`LabelFolder`), so metric
label sets stay bounded.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from vigil.flows.queues.config import FieldMapping
from vigil.flows.queues.deadlines import DeadlineTable
from vigil.flows.queues.records import (
    CLOSE_BEFORE_OPEN,
    CLOSE_TIME_WITH_OPEN_STATUS,
    CLOSED,
    CLOSED_WITHOUT_CLOSE_TIME,
    DATA_QUALITY,
    RECEIVED,
    STATUS,
    UNPARSABLE_CLOSE_TIME,
    QueueEvent,
)

from vigil.records import DeadLetter

OTHER = "other"
_MAX_LABEL = 64


class LabelFolder:
    """Keep at most ``limit`` distinct labels; fold the rest into ``"other"``.

    Names in ``fixed`` always keep their own label. The remaining places go to the most
    frequent names when :meth:`prime` is given counts (a replay knows its whole table),
    otherwise to the first names seen (live).

    Examples
    --------
    >>> f = LabelFolder(2)
    >>> [f.fold(x) for x in ["PWD", "ISD", "PARK", "PWD", ""]]
    ['PWD', 'ISD', 'other', 'PWD', 'other']
    >>> g = LabelFolder(1)
    >>> g.prime({"rare": 1, "busy": 9})
    >>> g.fold("rare"), g.fold("busy")
    ('other', 'busy')
    """

    def __init__(self, limit: int, fixed: Iterable[str] = ()) -> None:
        self.limit = limit
        self._kept: set[str] = set(fixed)
        self._closed = False

    def prime(self, counts: Mapping[str, int]) -> None:
        """Admit the most frequent names up to the limit, and admit no others later."""
        for name, _n in Counter(counts).most_common():
            if len(self._kept) >= self.limit:
                break
            if name:
                self._kept.add(name[:_MAX_LABEL])
        self._closed = True

    def fold(self, name: str | None) -> str:
        if not name:
            return OTHER
        name = name.strip()[:_MAX_LABEL]
        if name in self._kept:
            return name
        if not self._closed and name and len(self._kept) < self.limit:
            self._kept.add(name)
            return name
        return OTHER

    @property
    def kept(self) -> frozenset[str]:
        return frozenset(self._kept)


class TimeParser:
    """Local, offset-less timestamps of one format and zone to epoch seconds.

    Examples
    --------
    >>> TimeParser("iso", "America/New_York")("2015-01-27 09:00:00")
    1422367200.0
    >>> TimeParser("%m/%d/%Y %I:%M:%S %p", "America/Los_Angeles")("01/02/2018 01:00:00 PM")
    1514926800.0
    >>> TimeParser("iso", "UTC")("")
    """

    def __init__(self, fmt: str, tz: str) -> None:
        self.fmt = fmt
        self.tz = ZoneInfo(tz)
        self._iso_like = fmt == "%Y-%m-%d %H:%M:%S"

    def __call__(self, text: str | None) -> float | None:
        if text is None:
            return None
        if isinstance(text, int | float):
            return float(text)
        text = text.strip()
        if not text:
            return None
        if self.fmt == "iso":
            dt = datetime.fromisoformat(text)
        elif self._iso_like and len(text) == 19 and text[10] == " " and text[4] == "-":
            dt = datetime.fromisoformat(text)  # same result as strptime, ~10x faster
        else:
            dt = datetime.strptime(text, self.fmt)  # noqa: DTZ007 - zone attached below
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return dt.timestamp()

    def end_of_local_day_if_midnight(self, ts: float) -> float:
        """A due *date* (00:00 local) becomes the last second of that day."""
        local = datetime.fromtimestamp(ts, tz=self.tz)
        if local.hour == 0 and local.minute == 0 and local.second == 0:
            nxt = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            return nxt.astimezone(UTC).timestamp() - 1.0
        return ts


def hash_id(raw: str, salt: bytes = b"") -> str:
    """A stable, salted 64-bit digest of a request id (hex). Never reversible into the id.

    >>> hash_id("101001240734") == hash_id("101001240734") != hash_id("101001240735")
    True
    >>> len(hash_id("x"))
    16
    """
    return hashlib.blake2b(raw.encode(), digest_size=8, key=salt[:64]).hexdigest()


class CaseMapper:
    """Rows of a portal's export to lifecycle events, as a :class:`FieldMapping` says.

    Parameters
    ----------
    mapping
        Field names, time format and zone.
    agencies, services, channels
        Folders that bound each label set (shared by every input of a flow).
    salt
        Key of the request-id hash.
    origin
        Where the rows come from, for dead letters.
    deadlines
        The service-level table: the deadline of a record without its own due date.

    Examples
    --------
    >>> from vigil.flows.queues.config import FieldMapping
    >>> m = FieldMapping(id="case", agency="dept", received_at="open", closed_at="closed",
    ...                  due_at="due", timezone="America/New_York")
    >>> mapper = CaseMapper(m, LabelFolder(5), LabelFolder(5), LabelFolder(5))
    >>> evs = mapper.convert({"case": "42", "dept": "PWDx", "open": "2015-01-27 09:00:00",
    ...                       "due": "2015-01-28 09:00:00", "closed": "2015-01-27 10:00:00",
    ...                       "name": "Jane Citizen"})
    >>> [(e.kind, e.agency, e.ts) for e in evs]
    [('received', 'PWDx', 1422367200.0), ('closed', 'PWDx', 1422370800.0)]
    >>> mapper.convert({"case": "43", "dept": "PWDx", "open": "yesterday"})[0].reason
    'bad timestamp: received_at'
    """

    def __init__(
        self,
        mapping: FieldMapping,
        agencies: LabelFolder,
        services: LabelFolder,
        channels: LabelFolder,
        *,
        salt: bytes = b"",
        origin: str = "",
        deadlines: DeadlineTable | None = None,
    ) -> None:
        self.mapping = mapping
        self.deadlines = deadlines if deadlines else None
        self.agencies = agencies
        self.services = services
        self.channels = channels
        self.salt = salt
        self.origin = origin
        self.time = TimeParser(mapping.time_format, mapping.timezone or "UTC")
        m = mapping
        self._on_time_values = frozenset(v.lower() for v in m.on_time_values)
        self._hold = frozenset(s.lower() for s in m.hold_statuses)
        self._resume = frozenset(s.lower() for s in m.resume_statuses)
        self._closed_st = frozenset(s.lower() for s in m.closed_statuses)
        self._open_st = frozenset(s.lower() for s in m.open_statuses)

    def prime(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Fold agencies and services to the real top-N of a whole table (replays)."""
        m = self.mapping
        self.agencies.prime(Counter(str(r.get(m.agency) or "") for r in rows))
        if m.service:
            self.services.prime(Counter(str(r.get(m.service) or "") for r in rows))
        if m.channel:
            self.channels.prime(Counter(str(r.get(m.channel) or "") for r in rows))

    def safe_payload(self, row: Mapping[str, Any]) -> str:
        """The mapped fields of a row, id hashed: what a dead letter may show."""
        m = self.mapping
        keep = {
            k: row.get(k)
            for k in (
                m.agency,
                m.service,
                m.channel,
                m.received_at,
                m.due_at,
                m.closed_at,
                m.event,
                m.event_at,
                m.status,
            )
            if k and k in row
        }
        if m.id in row:
            raw = str(row[m.id] or "").strip()
            keep[m.id] = hash_id(raw, self.salt) if raw else ""  # never a hash of nothing
        return orjson.dumps(keep, default=str).decode()[:512]

    def _dead(self, reason: str, row: Mapping[str, Any]) -> DeadLetter:
        return DeadLetter("map", reason, self.safe_payload(row), "service_queues", self.origin)

    def _quality(self, reason: str, row: Mapping[str, Any]) -> DeadLetter:
        """A row set aside for its data quality (counted, not in any figure)."""
        return DeadLetter(
            DATA_QUALITY, reason, self.safe_payload(row), "service_queues", self.origin
        )

    def _time(self, row: Mapping[str, Any], key: str | None) -> float | None:
        if key is None:
            return None
        return self.time(row.get(key))

    def convert(self, row: Mapping[str, Any]) -> list[QueueEvent | DeadLetter]:
        """The events of one row (a case gives up to two), or one dead letter."""
        m = self.mapping
        raw_id = row.get(m.id)
        if raw_id is None or not str(raw_id).strip():
            return [self._dead("missing field: id", row)]
        agency_raw = row.get(m.agency)
        if agency_raw is None or agency_raw == "":
            return [self._dead("missing field: agency", row)]
        rid = hash_id(str(raw_id).strip(), self.salt)
        agency = self.agencies.fold(str(agency_raw))
        service = self.services.fold(str(row.get(m.service) or "")) if m.service else OTHER
        channel = self.channels.fold(str(row.get(m.channel) or "")) if m.channel else OTHER
        kind = RECEIVED
        if m.event is not None and row.get(m.event) not in (None, ""):
            k = m.event_values.get(str(row[m.event]))
            if k is None:
                return [self._dead("unknown event kind", row)]
            kind = k
        try:
            if m.event is not None and m.event in row:
                ts = self._time(row, m.event_at)
                if ts is None:
                    ts = self._time(row, m.received_at if kind == RECEIVED else m.closed_at)
            else:
                ts = self._time(row, m.received_at)
        except (ValueError, TypeError, OverflowError):
            return [self._dead(f"bad timestamp: {'event_at' if m.event else 'received_at'}", row)]
        if ts is None:
            return [self._dead("missing field: received_at", row)]
        try:
            due = self._time(row, m.due_at)
        except (ValueError, TypeError, OverflowError):
            return [self._dead("bad timestamp: due_at", row)]
        if due is not None and m.due_date_is_end_of_day:
            due = self.time.end_of_local_day_if_midnight(due)
        on_time: bool | None = None
        if m.on_time and row.get(m.on_time) not in (None, ""):
            on_time = str(row[m.on_time]).strip().lower() in self._on_time_values
        if kind == STATUS:
            st = str(row.get(m.status) or "").strip().lower() if m.status else ""
            norm = "hold" if st in self._hold else "resume" if st in self._resume else "other"
            return [QueueEvent(ts, STATUS, rid, agency, service, channel, status=norm)]
        if kind == CLOSED:
            return [QueueEvent(ts, CLOSED, rid, agency, service, channel, on_time=on_time)]
        source = "data" if due is not None else ""
        if due is None and self.deadlines is not None:
            raw_service = str(row.get(m.service) or "").strip() if m.service else None
            due = self.deadlines.due(str(agency_raw).strip(), raw_service, ts)
            source = "table" if due is not None else ""
        closed: float | None = None
        case_row = m.event is None or m.event not in row
        if case_row:
            # A case row's lifecycle must make sense, or the row is set aside whole (in
            # no figure, counted with its reason), never half-counted.
            try:
                closed = self._time(row, m.closed_at)
            except (ValueError, TypeError, OverflowError):
                return [self._quality(UNPARSABLE_CLOSE_TIME, row)]
            if closed is not None and closed < ts:
                return [self._quality(CLOSE_BEFORE_OPEN, row)]
            if m.status:
                st = str(row.get(m.status) or "").strip().lower()
                if closed is None and st in self._closed_st:
                    return [self._quality(CLOSED_WITHOUT_CLOSE_TIME, row)]
                if closed is not None and st in self._open_st:
                    return [self._quality(CLOSE_TIME_WITH_OPEN_STATUS, row)]
        out: list[QueueEvent | DeadLetter] = [
            QueueEvent(ts, RECEIVED, rid, agency, service, channel, due=due, due_source=source)
        ]
        if closed is not None:
            out.append(
                QueueEvent(
                    closed,
                    CLOSED,
                    rid,
                    agency,
                    service,
                    channel,
                    due=due,
                    received=ts,
                    on_time=on_time,
                    due_source=source,
                )
            )
        return out


# ---------------------------------------------------------------- rows on the bus
#: The field a bus row carries when it is one lifecycle event of a case-table row
#: (``received`` or ``closed``), written by ``vigil ingest --feed service_queues``.
BUS_EVENT = "vigil_event"
#: Bus rows that cannot be read: stable dead-letter reasons (step ``map``).
BUS_BAD_JSON = "bad json"
BUS_NOT_OBJECT = "not an object"
BUS_TOO_LONG = "row too long"
BUS_UNMAPPABLE = "unmappable row"

_UNBOUNDED = 1 << 30


def event_mapping(m: FieldMapping) -> FieldMapping:
    """The mapping of a case table's rows that name their lifecycle event (``BUS_EVENT``).

    Their time is the received or closed time of the row (``event_at`` is never present).
    """
    values: dict[str, Any] = {RECEIVED: RECEIVED, CLOSED: CLOSED, STATUS: STATUS}
    return m.model_copy(
        update={"event": BUS_EVENT, "event_at": f"{BUS_EVENT}_at", "event_values": values}
    )


def mapped_fields(m: FieldMapping) -> tuple[str, ...]:
    """The fields of a row the mapping reads (all that a producer needs to send)."""
    keys = (m.id, m.agency, m.service, m.channel, m.received_at, m.due_at, m.closed_at)
    keys2 = (m.on_time, m.status, m.event, m.event_at if m.event else None)
    return tuple(dict.fromkeys(k for k in (*keys, *keys2) if k))


class BusRowMapper:
    """Bus entries (one row as a JSON object each) to lifecycle events or dead letters.

    A row is read through the input's mapping like a row of a file. A row of a case table
    that names its event (``vigil_event``: ``received`` or ``closed``) is that one event. A
    case row without it gives its arrival and, when it has a close time, its completion: a
    case sent again when it closes repeats an arrival the flow already has, which the flow
    recognises by the request id (``duplicate_received``) and does not count twice.

    Examples
    --------
    >>> from vigil.records import RawLine
    >>> m = FieldMapping(id="case", agency="dept", received_at="open", closed_at="closed")
    >>> bus = BusRowMapper(CaseMapper(m, LabelFolder(5), LabelFolder(5), LabelFolder(5)))
    >>> row = ('{"case": "42", "dept": "PWD", "open": "2015-01-27 09:00:00", '
    ...        '"closed": "2015-01-27 10:00:00", "vigil_event": "closed"}')
    >>> [(e.kind, e.ts) for e in bus.convert([RawLine("json", "o", row)])]
    [('closed', 1422352800.0)]
    >>> bad = [RawLine("json", "o", "{oops"), RawLine("json", "o", "[1]")]
    >>> [d.reason for d in bus.convert(bad)]
    ['bad json', 'not an object']
    """

    def __init__(self, cases: CaseMapper) -> None:
        self.cases = cases
        self.events: CaseMapper | None = None
        if cases.mapping.event is None:
            self.events = CaseMapper(
                event_mapping(cases.mapping),
                cases.agencies,
                cases.services,
                cases.channels,
                salt=cases.salt,
                origin=cases.origin,
                deadlines=cases.deadlines,
            )

    def _bad(self, reason: str, origin: str) -> DeadLetter:
        # No payload: a row that cannot be read may hold anything, names included.
        return DeadLetter("map", reason, "", "service_queues", origin)

    def convert(self, lines: Sequence[Any]) -> list[QueueEvent | DeadLetter]:
        out: list[QueueEvent | DeadLetter] = []
        for line in lines:
            if line.oversize:
                out.append(self._bad(BUS_TOO_LONG, line.origin))
                continue
            try:
                row = orjson.loads(line.text)
            except orjson.JSONDecodeError:
                out.append(self._bad(BUS_BAD_JSON, line.origin))
                continue
            if not isinstance(row, dict):
                out.append(self._bad(BUS_NOT_OBJECT, line.origin))
                continue
            mapper = self.events if self.events is not None and BUS_EVENT in row else self.cases
            try:
                out.extend(mapper.convert(row))
            except Exception:  # a field of an unexpected type: this row only
                out.append(self._bad(BUS_UNMAPPABLE, line.origin))
        return out


class _Entry:
    __slots__ = ("kind", "row", "ts")

    def __init__(self, ts: float | None, kind: str, row: dict[str, Any]) -> None:
        self.ts, self.kind, self.row = ts, kind, row


def bus_rows(
    paths: Sequence[str],
    fmt: str,
    mapping: FieldMapping,
    *,
    until: str = "last_arrival",
) -> tuple[list[dict[str, Any]], int]:
    """A recorded table or event log as the rows a live feed would have sent, in order.

    Only the mapped fields are kept (names, addresses and the like never reach the bus).
    An event log's rows are sent as they are. A case table's row, which holds a whole
    lifecycle, becomes what a portal sends live: its arrival (``vigil_event: received``) at
    its received time and its completion (``vigil_event: closed``) at its close time. Rows
    the flow will dead-letter or set aside (bad times, a close before the open) are sent
    once as they are, so the flow counts them with their reason. All are ordered by event
    time as a replay orders them, and with ``until="last_arrival"`` end at the last
    arrival, like the replay. Returns the rows and the count of unreadable lines.
    """
    from vigil.sources.case_replay import CaseReplaySource

    keep = mapped_fields(mapping)
    case_table = mapping.event is None
    probe = CaseMapper(
        mapping, LabelFolder(_UNBOUNDED), LabelFolder(_UNBOUNDED), LabelFolder(_UNBOUNDED)
    )

    def convert(row: dict[str, Any]) -> list[_Entry]:
        recs = probe.convert(row)
        slim = {k: row[k] for k in keep if k in row}
        events = [r for r in recs if isinstance(r, QueueEvent)]
        if case_table and len(events) == len(recs):
            return [_Entry(r.ts, r.kind, {**slim, BUS_EVENT: r.kind}) for r in events]
        ts = events[0].ts if events else None
        kind = events[0].kind if events else ""
        return [_Entry(ts, kind, slim)]

    src = CaseReplaySource(
        paths,
        fmt,
        convert,
        stop_after_last=(lambda e: e.kind == RECEIVED) if until == "last_arrival" else None,
    )
    items = src.load()
    rows = [e.row for e in items if isinstance(e, _Entry)]
    return rows, len(items) - len(rows)
