"""Records that travel through Vigil's dataflows.

All records are frozen, slotted dataclasses holding plain values, so they pickle cheaply
when bytewax moves them between workers. Timestamps are float epoch seconds (UTC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line exactly as a source read it, before any parsing.

    Parameters
    ----------
    fmt
        Name of the parser that understands this line (``"ssh"``, ``"zeek"``, ...).
    origin
        Where it came from: a file path, ``"syslog/udp"``, ``"replay:<path>"``.
    text
        The line, without its newline.
    ref_ts
        A reference wall time for the line (file modification time, reception time). Used
        to infer the year of syslog timestamps, which carry none. ``0.0`` when unknown.
    oversize
        Set by a source when the line exceeded its size limit. ``text`` then holds only a
        prefix, and the flow dead-letters the line instead of parsing it.
    """

    fmt: str
    origin: str
    text: str
    ref_ts: float = 0.0
    oversize: bool = False


# Mapping from attribute name to the Elastic Common Schema field name.
ECS_FIELDS: dict[str, str] = {
    "ts": "@timestamp",
    "dataset": "event.dataset",
    "action": "event.action",
    "outcome": "event.outcome",
    "reason": "event.reason",
    "severity": "event.severity",
    "source_ip": "source.ip",
    "source_port": "source.port",
    "destination_ip": "destination.ip",
    "destination_port": "destination.port",
    "transport": "network.transport",
    "bytes": "network.bytes",
    "conn_state": "network.state",
    "user_name": "user.name",
    "rule_name": "rule.name",
    "http_status": "http.response.status_code",
    "http_method": "http.request.method",
    "url_path": "url.path",
    "host_name": "host.name",
    "process_name": "process.name",
    "process_pid": "process.pid",
    "user_agent": "user_agent.original",
}


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One normalized security event, whatever format it came from.

    Attribute names are the Elastic Common Schema names with dots replaced by underscores
    (see :data:`ECS_FIELDS`; :meth:`to_ecs` gives the dotted form).

    ``action`` vocabulary (``event.action``):

    - ``"authentication"``: a login attempt; ``outcome`` is ``"success"`` or ``"failure"``;
      ``reason`` says how (``"password"``, ``"publickey"``, ``"invalid_user"``, ``"pam"``).
    - ``"connection"``: a network flow or a firewall log line (``conn_state`` has Zeek's state
      or ``"blocked"``/``"allowed"``); ``reason`` is ``"backward"`` for a flow Zeek recorded
      backwards (no opening SYN, from a well-known port to an ephemeral one): the scan
      rules ignore it.
    - ``"ids_alert"``: an IDS alert (``rule_name``, ``severity``: 1 is most severe).
    - ``"http_request"``: a web access log line (``http_status``, ``url_path``).
    - ``"other"``: a well-formed line with no security meaning (cron, systemd ...).
    """

    ts: float
    dataset: str
    action: str
    outcome: str = "unknown"
    reason: str | None = None
    severity: int | None = None
    source_ip: str | None = None
    source_port: int | None = None
    destination_ip: str | None = None
    destination_port: int | None = None
    transport: str | None = None
    bytes: int | None = None
    conn_state: str | None = None
    user_name: str | None = None
    rule_name: str | None = None
    http_status: int | None = None
    http_method: str | None = None
    url_path: str | None = None
    host_name: str | None = None
    process_name: str | None = None
    process_pid: int | None = None
    user_agent: str | None = None

    def to_ecs(self) -> dict[str, Any]:
        """The event as a flat dict keyed by ECS field names, without unset fields.

        >>> SecurityEvent(ts=1.5, dataset="ssh", action="other", host_name="h").to_ecs()
        {'@timestamp': 1.5, 'event.dataset': 'ssh', 'event.action': 'other',
         'event.outcome': 'unknown', 'host.name': 'h'}
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[ECS_FIELDS[f.name]] = v
        return out


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be processed, with a stable, low-cardinality reason.

    ``reason`` can be a metric label; detail belongs in ``payload``.
    """

    step: str
    reason: str
    payload: str
    fmt: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Detection:
    """A finding of a detector, before it becomes an alert.

    Parameters
    ----------
    kind
        Detection kind, e.g. ``"ssh_brute_force"``, ``"port_scan"``.
    entity
        What it is about (a source IP, a series, an agency). Never personal data.
    severity
        ``"info"``, ``"warning"``, ``"high"`` or ``"critical"``.
    ts
        Event time at which the condition was met.
    observed, threshold
        The measured value and the threshold or baseline it was compared against.
    summary, description
        Human explanation: what was observed against what.
    window_s
        Length of the window the observation covers, in seconds.
    feed
        Which flow produced it (``"security"``, ``"indicators"`` ...).
    expected, lower, upper
        For baseline detectors: the expected value and band.
    start
        Event time at which the episode this detection belongs to began (the condition was
        first met). ``None``: this detection starts it (``ts``). Alerting gives one alert per
        episode, with ``startsAt`` = ``start``.
    hold_s
        How long the episode holds after ``ts`` without new evidence (the rule's window, or
        the detector's own notion). ``0``: ``window_s``, else the alerting default. The alert
        resolves when its feed's event time passes ``ts + hold_s`` with no newer
        detection, and ``endsAt`` is that time.
    start_value
        The measured value when the episode began (``None``: ``observed``).
    peak, peak_ts
        The highest value of the episode so far and when it was measured.
    first_seen
        Event time of the first evidence counted towards the episode (may precede
        ``start``: the failures that led up to a brute force).
    evidence
        A bounded sample of what was involved: ``(name, ((item, count), ...))`` pairs,
        at most 10 items each, largest counts first (``("ports", (("22/tcp", 41), ...))``).
    clock
        The event-time domain the detection belongs to (``"security/ssh"``): alert timers
        of one domain run on that domain's event time only, so feeds and log sources of
        different eras never move each other's clocks. ``""``: the feed's own domain.
    log_source
        The log source (parser format or input) the evidence came from.
    """

    kind: str
    entity: str
    severity: str
    ts: float
    observed: float
    threshold: float
    summary: str
    description: str
    window_s: float = 0.0
    feed: str = "security"
    expected: float | None = None
    lower: float | None = None
    upper: float | None = None
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    start: float | None = None
    hold_s: float = 0.0
    start_value: float | None = None
    peak: float | None = None
    peak_ts: float | None = None
    first_seen: float | None = None
    evidence: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    clock: str = ""
    log_source: str = ""

    @property
    def fingerprint_key(self) -> str:
        """Identity of the condition: the same kind on the same entity is the same alert."""
        return f"{self.feed}:{self.kind}:{self.entity}"

    @property
    def episode_start(self) -> float:
        """When the episode began (``start``, else ``ts``)."""
        return self.ts if self.start is None else self.start

    @property
    def domain(self) -> str:
        """The event-time domain of this detection (``clock``, else the feed)."""
        return self.clock or self.feed

    @property
    def is_update(self) -> bool:
        """Whether this detection updates an episode that began earlier."""
        return self.start is not None and self.ts > self.start


@dataclass(frozen=True, slots=True)
class Watermark:
    """Progress of one producer of detections in one event-time domain.

    ``producer`` promises that every detection it emits from now on for ``clock`` has an
    event time of at least ``ts`` (less the alerting lateness, for inputs that are not in
    time order). Alerting advances a domain's clock to the smallest promise of its
    producers, so its timers (``for``, resolve, group waits) fire at the same event times
    whether the data is replayed at full speed, paced, or arrives live.

    ``of`` is how many producers the clock has: until each has made a promise, the clock
    does not move (a producer that has not spoken yet may still emit old detections).

    >>> Watermark("security/ssh", "rules/3", 1.5e9, of=17)
    Watermark(clock='security/ssh', producer='rules/3', ts=1500000000.0, of=17)
    """

    clock: str
    producer: str
    ts: float
    of: int = 0


@dataclass(slots=True)
class Tally:
    """Counts a step made over one batch, for metrics (so metrics cost O(batches), not O(lines)).

    ``lines`` maps (format, outcome) to a count, outcome being ``"parsed"`` or
    ``"dead_lettered"``; ``events`` maps (dataset, action) to a count; ``late`` counts
    events that arrived behind the watermark (they are still processed).
    ``buckets`` maps a dataset to a tumbling-window start to per-series counts
    (``"events"``, ``"auth_failures"``, ``"connections"``, ``"http_errors"``), for the
    volume baselines; ``sources`` the same per source address (an anomaly's top
    contributors).
    """

    step: str
    lines: dict[tuple[str, str], int] = field(default_factory=dict)
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    late: int = 0
    buckets: dict[str, dict[float, dict[str, int]]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    sources: dict[str, dict[float, dict[str, int]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One value of a monitored series with its baseline, for gauges and plots."""

    feed: str
    series: str
    ts: float
    value: float
    expected: float
    lower: float
    upper: float
    score: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Aggregates of one agency (or one agency's service) over one closed window.

    ``service`` is ``""`` for the agency as a whole. Counts cover the window
    ``[ts - window_s, ts)``; ``backlog`` and ``overdue`` are levels at ``ts``;
    ``breaches`` and ``met`` count the deadlines that passed while open, and those met by
    a completion, in the window; the rate and quantiles cover the trailing ``trail_s``
    seconds (``nan`` when nothing completed).
    """

    ts: float
    window_s: float
    agency: str
    service: str
    arrivals: int
    completions: int
    backlog: int
    overdue: int
    breaches: int
    met: int
    on_time_rate: float
    p50_s: float
    p90_s: float
    p99_s: float
    trail_s: float = 86400.0
    channels: tuple[tuple[str, int], ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- the bus
# How a RawLine travels on the bus (Redis Streams): the producer (sinks/bus.py) and the
# consumer (sources/redis_streams.py) share this wire form. Records of the other feeds (a
# queue case or lifecycle event, an indicator point) travel as RawLines too, one record
# per entry: ``text`` is one JSON object and ``fmt`` says where it came from.

#: ``fmt`` of an entry whose text is a JSON object (a JSON line as the producer read it).
RECORD_JSON = "json"
#: ``fmt`` of an entry whose text is a CSV row as ``{column: value}`` (values are strings).
RECORD_CSV_ROW = "csv_row"


def stream_names(stream: str, shards: int) -> list[str]:
    """Names of the streams of a bus: ``<stream>:0`` ... ``<stream>:<shards-1>``.

    Examples
    --------
    >>> stream_names("vigil:lines", 2)
    ['vigil:lines:0', 'vigil:lines:1']
    """
    return [f"{stream}:{i}" for i in range(shards)]


def entry_fields(line: RawLine) -> dict[str, str]:
    """The stream entry fields that carry ``line`` (what producers write).

    Examples
    --------
    >>> entry_fields(RawLine("ssh", "auth.log", "hello", 1.5))
    {'fmt': 'ssh', 'origin': 'auth.log', 'text': 'hello', 'ref_ts': '1.5'}
    """
    out = {"fmt": line.fmt, "origin": line.origin, "text": line.text}
    if line.ref_ts:
        out["ref_ts"] = repr(line.ref_ts)
    if line.oversize:
        out["oversize"] = "1"
    return out


def record_line(record: dict[str, Any], origin: str, *, csv_row: bool = False) -> RawLine:
    """A record of a feed (a CSV row or a parsed JSON object) as one bus line.

    Examples
    --------
    >>> line = record_line({"series": "cpu", "ts": "60", "value": "1.5"}, "cpu.csv", csv_row=True)
    >>> line.fmt, line.text
    ('csv_row', '{"series":"cpu","ts":"60","value":"1.5"}')
    """
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
    return RawLine(RECORD_CSV_ROW if csv_row else RECORD_JSON, origin, text)


def _pickle_by_fields(cls: type) -> None:
    """Pickle ``cls`` as ``cls(*field values)``.

    The ``__getstate__``/``__setstate__`` that ``dataclass(frozen=True, slots=True)`` generates run
    in Python and cost ~3 us per event when bytewax moves shard lists between processes; this
    reduce is one C ``attrgetter`` call to dump and one ``__init__`` call to load. ``__setstate__``
    stays, so pickles written before (recovery snapshots) still load.

    >>> import pickle
    >>> e = SecurityEvent(1.5, "ssh", "other", host_name="h")
    >>> pickle.loads(pickle.dumps(e)) == e
    True
    """
    names = tuple(f.name for f in fields(cls))
    getter = attrgetter(*names)
    if len(names) == 1:

        def __reduce__(self: Any) -> tuple[Any, ...]:
            return (type(self), (getter(self),))

    else:

        def __reduce__(self: Any) -> tuple[Any, ...]:
            return (type(self), getter(self))

    cls.__reduce__ = __reduce__  # type: ignore[method-assign,assignment]


for _cls in (
    RawLine,
    SecurityEvent,
    DeadLetter,
    Detection,
    Watermark,
    Tally,
    SeriesPoint,
    QueueStats,
):
    _pickle_by_fields(_cls)
