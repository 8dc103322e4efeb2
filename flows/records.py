"""Records that travel through Vigil's dataflows.

All records are frozen, slotted dataclasses holding plain values, so they pickle cheaply
when bytewax moves them between workers. Timestamps are float epoch seconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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
      or ``"blocked"``/``"allowed"``).
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
        Detection kind, e.g. ``"ssh_brute_force"``, ``"port_scan_vertical"``.
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

    @property
    def fingerprint_key(self) -> str:
        """Identity of the condition: the same kind on the same entity is the same alert."""
        return f"{self.feed}:{self.kind}:{self.entity}"


@dataclass(slots=True)
class Tally:
    """Counts a step made over one batch, for metrics (so metrics cost O(batches), not O(lines)).

    ``lines`` maps (format, outcome) to a count, outcome being ``"parsed"`` or
    ``"dead_lettered"``; ``events`` maps (dataset, action) to a count; ``late`` counts
    events that arrived behind the watermark (they are still processed).
    ``buckets`` maps a dataset to a tumbling-window start to per-series counts
    (``"events"``, ``"auth_failures"``, ``"connections"``, ``"http_errors"``), for the
    volume baselines.
    """

    step: str
    lines: dict[tuple[str, str], int] = field(default_factory=dict)
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    late: int = 0
    buckets: dict[str, dict[float, dict[str, int]]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)


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
