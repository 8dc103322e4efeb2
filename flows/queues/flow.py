"""The public-service queue dataflow: request lifecycles in, queue metrics and alerts out.

::

    rows (CSV / JSON lines, or the bus) --field mapping--> QueueEvent (id hashed, labels folded)
        |
        +--route: one item per shard of agency and batch, plus the batch's newest time
        |          (so quiet shards still close windows and fire deadline timers)
        v
    queues (one QueueMonitor per shard) --> QueueStats (per agency / service and window)
        |                                   Detection  (entity = agency)
        +--> dead letters, tallies

Per-request state, windows and detectors live in :class:`vigil.flows.queues.state.QueueMonitor`
(plain Python). Events are keyed by a *shard* of the agency, not by the request: bytewax
keeps one logic object and snapshot per key, and a million open requests must not become a
million of them. All events of a request carry its agency, so they meet in one shard.

Detections (all with ``feed="service_queues"``, ``entity`` = the agency and
``("agency", name)`` in ``extra`` so alerts route to the agency):

- ``arrival_surge`` / ``arrival_drop``: arrivals so far today against a normal day of the
  same type (workday, Saturday, Sunday or public holiday) by the same time of day;
  ``service_arrival_surge`` / ``service_arrival_drop`` for one service of the agency.
- ``backlog_growth``: CUSUM over the hourly net inflow's deviation from its usual level,
  while the backlog grew by more than expected over the last day.
- ``overdue_share``: share of deadlines missed among those decided in the trailing window.
- ``throughput_collapse``: completions stop while arrivals continue, in office hours.

While a condition holds, its detection is re-emitted once per window (so alerting keeps it
firing), with ``("since", start)`` in ``extra``; it stops when the condition clears.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from vigil.flows.bus_inputs import redis_stream_source
from vigil.flows.config.base import input_step_ids, shard_of
from vigil.flows.config.shards import shard_names
from vigil.flows.feed import FeedIO, standalone_flow
from vigil.flows.guard import guard_batch, guard_logic
from vigil.flows.queues.calendar import (
    LEGACY_CALENDARS,
    WorkCalendar,
    country_holidays,
    read_holidays,
)
from vigil.flows.queues.config import QueueStreamInput, ServiceQueuesConfig
from vigil.flows.queues.deadlines import DeadlineTable
from vigil.flows.queues.mapping import BusRowMapper, CaseMapper, LabelFolder
from vigil.flows.queues.records import CLOSED, DATA_QUALITY, RECEIVED, QueueEvent
from vigil.flows.queues.state import FEED, QueueMonitor, QueueSnapshot
from vigil.sources.case_replay import CaseReplaySource

from vigil.records import DeadLetter, Detection, QueueStats, Tally

__all__ = [
    "FEED",
    "QueueStreams",
    "attach",
    "build_flow",
    "make_calendar",
    "make_sources",
    "queue_pipeline",
    "replay",
]


class _DaysOff:
    """A country's public holidays (every year) and a district's own days off."""

    def __init__(self, countries: list[Container[date]], own: set[date]) -> None:
        self.countries = countries
        self.own = frozenset(own)

    def __contains__(self, d: object) -> bool:
        return d in self.own or any(d in c for c in self.countries)


def make_calendar(cfg: ServiceQueuesConfig) -> WorkCalendar:
    """The offices' calendar: the country's public holidays (the ``holidays`` package),
    holiday files, ``extra_holidays``, and ``compensatory_working_days``."""
    c = cfg.calendar
    legacy = [LEGACY_CALENDARS[h.lower()] for h in c.holidays if h.lower() in LEGACY_CALENDARS]
    # An older configuration's "holidays: [us]" names its country; the VN default is not added.
    default_country = not legacy or "country" in c.model_fields_set
    countries = (
        [country_holidays(c.country, c.subdivision)] if c.country and default_country else []
    )
    own: set[date] = set()
    for spec in c.holidays:
        if spec.lower() in LEGACY_CALENDARS:  # the bundled tables of older configurations
            countries.append(country_holidays(LEGACY_CALENDARS[spec.lower()]))
        else:
            own.update(read_holidays(spec))
    own.update(date.fromisoformat(d) for d in c.extra_holidays)
    working = {date.fromisoformat(d) for d in c.compensatory_working_days}
    return WorkCalendar(c.timezone, _DaysOff(countries, own), c.weekend, c.office_hours, working)


def make_folders(cfg: ServiceQueuesConfig) -> tuple[LabelFolder, LabelFolder, LabelFolder]:
    return (
        LabelFolder(cfg.top_agencies, cfg.agencies),
        LabelFolder(cfg.top_services, cfg.services),
        LabelFolder(cfg.top_channels),
    )


def id_salt(cfg: ServiceQueuesConfig, environ: Mapping[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    return env.get(cfg.id_salt_env, "").encode() if cfg.id_salt_env else b""


def make_sources(
    cfg: ServiceQueuesConfig,
    *,
    speed_override: float | str | None = "config",
    environ: Mapping[str, str] | None = None,
) -> list[Source[Any]]:
    """One source per configured input (a replay, or the bus), sharing the label folders."""
    agencies, services, channels = make_folders(cfg)
    salt = id_salt(cfg, environ)
    table = DeadlineTable(cfg.service_levels, make_calendar(cfg))
    out: list[Source[Any]] = []
    for inp in cfg.inputs:
        if isinstance(inp, QueueStreamInput):
            # Live rows: labels are admitted as they are first seen (nothing to prime).
            bus = BusRowMapper(
                CaseMapper(
                    inp.mapping,
                    agencies,
                    services,
                    channels,
                    salt=salt,
                    origin=f"redis:{inp.stream}",
                    deadlines=table,
                )
            )
            convert = guard_batch("queues_bus_map", FEED, bus.convert)
            out.append(redis_stream_source(inp, environ, fmt="json", convert=convert))
            continue
        mapper = CaseMapper(
            inp.mapping,
            agencies,
            services,
            channels,
            salt=salt,
            origin=",".join(inp.paths),
            deadlines=table,
        )
        speed = inp.speed if speed_override == "config" else speed_override
        out.append(
            CaseReplaySource(
                inp.paths,
                inp.format,
                mapper.convert,
                prime=mapper.prime,
                stop_after_last=_is_arrival if inp.until == "last_arrival" else None,
                speed=speed if isinstance(speed, float | int) else None,
            )
        )
    return out


def _is_arrival(rec: Any) -> bool:
    return type(rec) is QueueEvent and rec.kind == RECEIVED


Routed = tuple[str, tuple[list[QueueEvent], float]] | DeadLetter | Tally


def make_route(shards: int) -> Callable[[list[Any]], list[Routed]]:
    """Group a batch per shard of agency; every shard also gets the batch's newest time.

    Its tally counts *rows*: ``("queue_row", outcome)`` with outcome ``parsed`` (a row that
    gave events), ``data_quality`` (set aside, see :data:`~vigil.flows.queues.records.DATA_QUALITY`)
    or ``dead_lettered``; so the run summary's ``lines`` is the rows read. A case row gives
    one arrival and maybe one close: the close (it carries ``received``) is not a row.
    Events by agency and kind go to ``events``.
    """
    cache: dict[str, str] = {}
    all_shards = shard_names(shards)

    def route(items: list[Any]) -> list[Routed]:
        groups: dict[str, list[QueueEvent]] = {}
        out: list[Routed] = []
        newest = float("-inf")
        kinds: dict[tuple[str, str], int] = {}
        dead = quality = derived = 0
        for it in items:
            if type(it) is QueueEvent:
                if it.kind == CLOSED and it.received is not None:
                    derived += 1  # the close of a case row, whose arrival counted the row
                k = cache.get(it.agency)
                if k is None:
                    k = cache[it.agency] = shard_of(it.agency, shards)
                g = groups.get(k)
                if g is None:
                    groups[k] = [it]
                else:
                    g.append(it)
                if it.ts > newest:
                    newest = it.ts
                ek = (it.agency, it.kind)
                kinds[ek] = kinds.get(ek, 0) + 1
            elif type(it) is DeadLetter:
                if it.step == DATA_QUALITY:
                    quality += 1
                else:
                    dead += 1
                out.append(it)
        if newest > float("-inf"):
            for k in all_shards:
                out.append((k, (groups.get(k, []), newest)))
        lines = {("queue_row", "parsed"): sum(kinds.values()) - derived}
        if dead:
            lines[("queue_row", "dead_lettered")] = dead
        if quality:
            lines[("queue_row", DATA_QUALITY)] = quality
        out.append(
            Tally(
                "route",
                lines=lines,
                events=kinds,
                buckets={FEED: {newest: {}}} if newest > float("-inf") else {},
            )
        )
        return out

    return route


class QueueLogic(
    StatefulBatchLogic[tuple[list[QueueEvent], float], "QueueStats | Detection", QueueSnapshot]
):
    """One shard of agencies."""

    def __init__(self, monitor: QueueMonitor) -> None:
        self.monitor = monitor

    def on_batch(
        self, values: list[tuple[list[QueueEvent], float]]
    ) -> tuple[list[QueueStats | Detection], bool]:
        out: list[QueueStats | Detection] = []
        for events, hint in values:
            out.extend(self.monitor.process(events, hint))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[QueueStats | Detection], bool]:
        return self.monitor.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> QueueSnapshot:
        return self.monitor.snapshot()


@dataclass(frozen=True)
class QueueStreams:
    detections: Stream[Detection]
    dead: Stream[DeadLetter]
    stats: Stream[QueueStats]
    telemetry: Stream[Any]


@operator
def queue_pipeline(step_id: str, events: Stream[Any], cfg: ServiceQueuesConfig) -> QueueStreams:
    """Route, aggregate and detect a stream of ``QueueEvent`` (and dead letters)."""
    routed = op.flat_map_batch("route", events, guard_batch("route", FEED, make_route(cfg.shards)))
    b = op.branch("is_shard", routed, lambda x: type(x) is tuple)
    keyed = cast(Stream[tuple[str, tuple[list[QueueEvent], float]]], b.trues)
    rest = op.branch("is_dead", b.falses, lambda x: type(x) is DeadLetter)
    dead = cast(Stream[DeadLetter], rest.trues)
    tallies = cast(Stream[Tally], rest.falses)
    calendar = make_calendar(cfg)

    def builder(resume: QueueSnapshot | None) -> QueueLogic:
        mon = QueueMonitor(cfg, calendar)
        if resume is not None:
            mon.restore(resume)
        return QueueLogic(mon)

    out_all = op.key_rm(
        "unkey", op.stateful_batch("queues", keyed, guard_logic("queues", FEED, builder))
    )
    od = op.branch("is_queue_dead", out_all, lambda x: type(x) is DeadLetter)
    ob = op.branch("is_detection", od.falses, lambda x: type(x) is Detection)
    dets = cast(Stream[Detection], ob.trues)
    stats = cast(Stream[QueueStats], ob.falses)
    all_dead = op.merge("queue_dead", dead, cast(Stream[DeadLetter], od.trues))
    telemetry = op.merge("telemetry", tallies, dets, all_dead)
    return QueueStreams(dets, all_dead, stats, telemetry)


def attach(flow: Dataflow, io: FeedIO) -> QueueStreams:
    """Add the queue flow to ``flow`` from ``io.section("service_queues")`` (see flows/main.py).

    Tallies, detections and dead letters go to ``io.metrics_sink("service_queues")``; the
    per-agency queue figures to :class:`vigil.sinks.queues.QueueMetricsSink` on ``io.registry``.
    """
    from vigil.sinks.queues import QueueMetricsSink

    cfg: ServiceQueuesConfig = io.section("service_queues")
    sources = make_sources(cfg, speed_override=io.speed_override, environ=io.environ)
    s = attach_sources(flow, cfg, sources)
    op.output("queues_metrics_out", s.telemetry, io.metrics_sink(FEED))
    op.output("queues_stats_out", s.stats, QueueMetricsSink(registry=io.registry))
    return s


def attach_sources(
    flow: Dataflow, cfg: ServiceQueuesConfig, sources: list[Source[Any]]
) -> QueueStreams:
    if not sources:
        msg = "service_queues flow needs at least one input (service_queues.inputs is empty)"
        raise ValueError(msg)
    ids = input_step_ids("queues", cfg.inputs, len(sources))
    ins = [op.input(i, flow, s) for i, s in zip(ids, sources, strict=True)]
    merged = ins[0] if len(ins) == 1 else op.merge("queues_inputs", *ins)
    return queue_pipeline("service_queues", merged, cfg)


def build_flow(
    cfg: ServiceQueuesConfig,
    sources: list[Source[Any]],
    alert_sink: Sink[Detection],
    dead_sink: Sink[DeadLetter],
    stats_sink: Sink[QueueStats],
    *,
    name: str = "vigil_queues",
) -> Dataflow:
    """The queue dataflow on its own; sources and sinks are passed in."""

    def add(flow: Dataflow) -> QueueStreams:
        s = attach_sources(flow, cfg, sources)
        op.output("stats_out", s.stats, stats_sink)
        return s

    return standalone_flow(name, add, alert_sink, dead_sink)


def replay(
    cfg: ServiceQueuesConfig,
) -> tuple[list[Detection], list[QueueStats], list[DeadLetter]]:
    """Run the flow over its (finite) inputs in this thread; collect what it emits."""
    from bytewax.testing import TestingSink, run_main

    dets: list[Detection] = []
    stats: list[QueueStats] = []
    dead: list[DeadLetter] = []
    run_main(
        build_flow(cfg, make_sources(cfg), TestingSink(dets), TestingSink(dead), TestingSink(stats))
    )
    return dets, stats, dead
