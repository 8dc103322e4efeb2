"""Configuration section of the public-service queue flow (flows/queues/flow.py).

A portal's export plugs in through :class:`FieldMapping` alone: which column holds the id,
the agency, the service, the channel, the received / due / closed times, an optional
on-time flag, the timestamp format and the time zone the (offset-less) times are in.
``examples/boston311.yaml`` and ``examples/la311.yaml`` map two real, different schemas.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator
from vigil.flows.bus_inputs import BusSettings
from vigil.flows.config.base import Frozen, InputName, Severity, kind_or, known_zone


class FieldMapping(Frozen):
    """Where each field of a lifecycle event lives in the source rows.

    A row is either a *case* (one row per request with its received and closed times: it is
    replayed as an arrival at ``received_at`` and a completion at ``closed_at``) or, when
    ``event`` is set and the row has that field, one *lifecycle event* whose kind is the
    field's value (``event_values`` maps it to received / status / closed).
    """

    id: str
    agency: str
    service: str | None = None
    channel: str | None = None
    received_at: str
    due_at: str | None = None
    closed_at: str | None = None
    #: Field with the publisher's on-time verdict, and the values that mean "on time".
    on_time: str | None = None
    on_time_values: tuple[str, ...] = ("ONTIME", "on_time", "true", "1", "Y")
    #: Lifecycle-event rows: the field naming the event kind, its time, and the status.
    event: str | None = None
    event_values: dict[str, Literal["received", "status", "closed"]] = {
        "received": "received",
        "status": "status",
        "closed": "closed",
    }
    event_at: str = "ts"
    #: Event logs: the status of a status event. Case tables: the case's status, checked
    #: against its close time (``closed_statuses`` without a close time, or
    #: ``open_statuses`` with one, go to the data-quality stream).
    status: str | None = None
    closed_statuses: tuple[str, ...] = ("closed", "resolved", "completed", "cancelled")
    open_statuses: tuple[str, ...] = ("open", "new", "pending", "in progress", "assigned")
    hold_statuses: tuple[str, ...] = ("on_hold", "returned_for_documents")
    resume_statuses: tuple[str, ...] = ("resumed",)
    #: ``"iso"`` (ISO 8601; an offset in the value wins) or a ``strptime`` format.
    time_format: str = "iso"
    #: IANA time zone of times written without an offset (the usual case for exports);
    #: default: the calendar's (``service_queues.calendar.timezone``), so it is set once.
    timezone: str | None = None
    #: A due value at exactly 00:00 local is a due *date*: the deadline is the end of it.
    due_date_is_end_of_day: bool = False

    _tz_ok = field_validator("timezone")(known_zone)


DeadlineUnit = Literal["working_days", "working_hours", "hours", "days"]


class DeadlineSpec(Frozen):
    """A deadline: ``amount`` of ``unit`` after the receipt; YAML may say ``"5 working_days"``."""

    amount: float = Field(gt=0)
    unit: DeadlineUnit = "working_days"

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, v: object) -> object:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return {"amount": v}
        if isinstance(v, str):
            amount, _, unit = v.strip().partition(" ")
            try:
                num = float(amount)
            except ValueError:
                msg = f"a deadline is 'AMOUNT UNIT' such as '5 working_days', got {v!r}"
                raise ValueError(msg) from None
            return {"amount": num, "unit": unit.strip() or "working_days"}
        return v

    def __str__(self) -> str:
        return f"{self.amount:g} {self.unit}"


class ServiceLevels(Frozen):
    """The service-level table: deadlines for records that carry none (no ``due_at``).

    ``services`` keys are a service name, or ``AGENCY/service`` for one agency's service;
    a service's line wins over its agency's default (``agencies``), which wins over
    ``default``. A record's own due date always wins over the table.
    """

    default: DeadlineSpec | None = None
    agencies: dict[str, DeadlineSpec] = Field(default_factory=dict)
    services: dict[str, DeadlineSpec] = Field(default_factory=dict)


class QueueFileInput(Frozen):
    """Replay a case table or an event log (CSV or JSON lines) in event-time order."""

    kind: Literal["replay"] = "replay"
    name: str | None = InputName
    paths: tuple[str, ...] = Field(min_length=1)
    format: Literal["csv", "jsonl"] = "csv"
    mapping: FieldMapping
    speed: float | None = Field(default=None, gt=0, description="null = as fast as possible")
    #: A case table is a snapshot: after its last arrival only completions remain, and the
    #: queue would look like it emptied. ``last_arrival`` stops the replay there.
    until: Literal["last_arrival", "end"] = "last_arrival"


class QueueStreamInput(BusSettings):
    """Read queue records from the bus (Redis Streams), one row per entry.

    An entry's text is one row as a JSON object (``vigil ingest --feed service_queues``
    writes them; see :mod:`vigil.flows.queues.mapping`, "Rows on the bus"), read through
    ``mapping`` like a row of a file. Rows must arrive in event-time order.
    """

    kind: Literal["redis_stream"] = "redis_stream"
    name: str | None = InputName
    stream: str = "vigil:queues"
    mapping: FieldMapping


QueueInputConfig = Annotated[
    Annotated[QueueFileInput, Tag("replay")] | Annotated[QueueStreamInput, Tag("redis_stream")],
    Discriminator(kind_or("replay")),  # no kind: a replay input (before the bus)
]


class CalendarConfig(Frozen):
    """Working days and public holidays, for the seasonal arrival baseline."""

    timezone: str = "UTC"
    #: Public holidays of this country (ISO 3166, from the ``holidays`` package, any
    #: year), and of a subdivision (a state, a province) when given; null: none.
    country: str | None = "VN"
    subdivision: str | None = None
    #: More holidays: files of ``YYYY-MM-DD name`` lines (``us``/``vn``, the bundled
    #: tables of older configurations, now name a country's holidays).
    holidays: tuple[str, ...] = ()
    extra_holidays: tuple[str, ...] = Field(
        default=(), description="YYYY-MM-DD dates: the district's own days off"
    )
    compensatory_working_days: tuple[str, ...] = Field(
        default=(), description="YYYY-MM-DD dates worked although weekend or holiday"
    )
    weekend: tuple[int, ...] = Field(default=(5, 6), description="0 = Monday")
    office_hours: tuple[int, int] = (8, 17)

    @model_validator(mode="after")
    def _known_country(self) -> CalendarConfig:
        if self.country:
            from vigil.flows.queues.calendar import country_holidays

            country_holidays(self.country, self.subdivision)  # ValueError names the problem
        for d in (*self.extra_holidays, *self.compensatory_working_days):
            date.fromisoformat(d)  # ValueError: "Invalid isoformat string"
        return self

    @model_validator(mode="after")
    def _hours(self) -> CalendarConfig:
        a, b = self.office_hours
        if not 0 <= a < b <= 24:
            msg = f"office_hours must be (start, end) with 0 <= start < end <= 24, got {a, b}"
            raise ValueError(msg)
        return self


class _QueueRule(Frozen):
    enabled: bool = True
    severity: Severity = "warning"


class ArrivalRule(_QueueRule):
    """Arrivals so far today against a normal day of the same type by the same hour."""

    z: float = Field(default=4.0, gt=0, description="standard deviations from the baseline")
    ratio: float = Field(default=1.4, gt=1, description="and at least this x expected (or 1/x)")
    min_count: int = Field(default=30, ge=0, description="expected or observed at least this")
    alpha: float = Field(default=0.2, gt=0, le=1)
    grace_days: int = Field(default=2, ge=1, description="days of this type learned first")
    drop: bool = True


class BacklogRule(_QueueRule):
    """Backlog growth: CUSUM over the hourly net inflow's deviation from its usual level."""

    k: float = Field(default=0.5, gt=0)
    h: float = Field(default=6.0, gt=0)
    grace_period: int = Field(default=24, ge=2)
    min_growth: int = Field(default=20, ge=0, description="24 h backlog growth at least this")
    warmup_s: float = Field(
        default=3 * 86400.0, ge=0, description="a replay's backlog starts empty: wait this long"
    )


class OverdueRule(_QueueRule):
    """Share of deadlines missed among deadlines decided in the trailing window."""

    threshold: float = Field(default=0.35, gt=0, le=1)
    min_decided: int = Field(default=20, ge=1)
    hysteresis: float = Field(default=0.05, ge=0, lt=1, description="clears below thr - this")
    per_agency: dict[str, float] = Field(default_factory=dict)


class ThroughputRule(_QueueRule):
    """Completions stop while arrivals continue (office hours of working days only)."""

    severity: Severity = "high"
    hours: int = Field(default=4, ge=1, description="office hours looked back")
    min_arrivals: int = Field(default=20, ge=1)
    max_ratio: float = Field(default=0.05, ge=0, lt=1, description="completions / arrivals")
    min_usual_completions: float = Field(
        default=2.0, ge=0, description="only agencies that usually complete this many per hour"
    )


class QueueRules(Frozen):
    arrivals: ArrivalRule = ArrivalRule()
    backlog: BacklogRule = BacklogRule()
    overdue: OverdueRule = OverdueRule()
    throughput: ThroughputRule = ThroughputRule()


class ServiceQueuesConfig(Frozen):
    """Settings of the public-service queue flow."""

    inputs: tuple[QueueInputConfig, ...] = ()
    calendar: CalendarConfig = CalendarConfig()
    window_s: float = Field(default=3600.0, ge=300, description="aggregation window, seconds")
    trail_s: float = Field(default=86400.0, gt=0, description="window of rates and quantiles")
    allowed_lateness_s: float = Field(default=0.0, ge=0)
    warmup_s: float = Field(default=86400.0, ge=0, description="no detections before this")
    top_agencies: int = Field(default=20, ge=1, le=1000)
    top_services: int = Field(default=30, ge=1, le=1000)
    top_channels: int = Field(default=10, ge=1, le=100)
    #: Agencies / services always given their own label (the rest fill up to top-N).
    agencies: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    shards: int = Field(default=8, ge=1, le=4096)
    idle_ttl_s: float = Field(default=180 * 86400.0, gt=0, description="open request expiry")
    id_salt_env: str | None = Field(
        default=None, description="environment variable with the salt of request-id hashes"
    )
    rules: QueueRules = QueueRules()
    service_levels: ServiceLevels = ServiceLevels()

    @model_validator(mode="after")
    def _one_time_zone(self) -> ServiceQueuesConfig:
        """An input's mapping without a time zone takes the calendar's."""
        tz = self.calendar.timezone
        if any(i.mapping.timezone is None for i in self.inputs):
            fixed = tuple(
                i
                if i.mapping.timezone is not None
                else i.model_copy(update={"mapping": i.mapping.model_copy(update={"timezone": tz})})
                for i in self.inputs
            )
            object.__setattr__(self, "inputs", fixed)
        return self

    @field_validator("window_s")
    @classmethod
    def _divides_day(cls, v: float) -> float:
        if 86400 % v:
            msg = f"window_s must divide a day (86400 s), got {v:g}"
            raise ValueError(msg)
        return v


def explain(section: ServiceQueuesConfig) -> list[str]:
    """What ``vigil check-config`` says about the queue section (``error:`` lines fail it)."""
    from vigil.flows.config.columns import missing_columns

    out = [f"service_queues inputs: {len(section.inputs)}"]
    for i, inp in enumerate(section.inputs):
        m = inp.mapping
        cols = {
            k: getattr(m, k)
            for k in (
                *("id", "agency", "service", "channel", "received_at", "due_at"),
                *("closed_at", "on_time", "status", "event"),
            )
        }
        if m.event:
            cols["event_at"] = m.event_at
        if isinstance(inp, QueueStreamInput):
            out.append(f"  input {i}: the bus, streams {inp.stream}:0..{inp.shards - 1}")
        else:
            where = f"service_queues.inputs.{i}.mapping"
            out += missing_columns(cols, inp.paths, inp.format, where)
        zone = "the calendar's" if m.timezone == section.calendar.timezone else "its own"
        out.append(f"  input {i}: times without an offset are {m.timezone} ({zone})")
        levels = section.service_levels
        has_table = bool(levels.default or levels.agencies or levels.services)
        if has_table:
            out.append(
                f"  input {i}: deadlines: "
                + ("mapping.due_at, else " if m.due_at else "")
                + f"the service-level table ({len(levels.services)} services, "
                f"{len(levels.agencies)} agencies, default "
                f"{levels.default if levels.default else 'none'})"
            )
        if not m.due_at and not m.on_time and not has_table:
            out.append(
                f"warning: service_queues.inputs.{i}: no deadline source (mapping.due_at, "
                "mapping.on_time or service_levels): the scorecard shows no on-time figure "
                "and overdue rules never fire"
            )
    return out
