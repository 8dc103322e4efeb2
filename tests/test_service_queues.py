"""The public-service queue flow: mapping, request state, windows, detections, metrics.

Flow tests run the real dataflow with ``bytewax.testing``; the real-data acceptance checks
(Boston 311, LA MyLA311, the report and the CLI) are in test_service_queues_e2e.py.
"""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from vigil.flows.config import parse_config
from vigil.flows.errors import ConfigError
from vigil.flows.queues.calendar import HOLIDAY, WORKDAY, WorkCalendar
from vigil.flows.queues.config import FieldMapping, ServiceQueuesConfig
from vigil.flows.queues.flow import build_flow, make_calendar
from vigil.flows.queues.mapping import CaseMapper, LabelFolder
from vigil.flows.queues.records import QueueEvent
from vigil.flows.queues.state import QueueMonitor
from vigil.sinks.prometheus import METRIC_NAMES
from vigil.sinks.queues import QueueMetrics

from vigil.records import DeadLetter, Detection, QueueStats

ROOT = Path(__file__).resolve().parents[1]
H = 3600.0
DAY = 86400.0
# Monday 2024-01-08 00:00 UTC: a plain working week.
MONDAY = datetime(2024, 1, 8, tzinfo=UTC).timestamp()


def boston_mapping() -> FieldMapping:
    raw = yaml.safe_load((ROOT / "examples" / "boston311.yaml").read_text())
    # The mapping takes its time zone from the calendar (one setting per input).
    section = ServiceQueuesConfig.model_validate(raw["service_queues"])
    assert section.inputs[0].mapping.timezone == "America/New_York"
    return section.inputs[0].mapping


def mapper(m: FieldMapping, limit: int = 10) -> CaseMapper:
    return CaseMapper(m, LabelFolder(limit), LabelFolder(limit), LabelFolder(limit))


# ---------------------------------------------------------------- mapping and privacy
BOSTON_ROW = {
    "case_enquiry_id": "101001240735",
    "open_dt": "2015-01-27 09:00:00",
    "target_dt": "2015-01-28 09:00:00",
    "closed_dt": "2015-01-27 16:00:00",
    "ontime_status": "ONTIME",
    "department": "PWDx",
    "type": "Misc. Snow Complaint",
    "source": "Constituent Call",
    "case_title": "Snow at 12 Main St, call Jane Doe 617-555-0100",
    "latitude": "42.3574",
}


def test_boston_row_becomes_arrival_and_completion_in_local_time() -> None:
    evs = mapper(boston_mapping()).convert(BOSTON_ROW)
    rec, done = evs
    assert isinstance(rec, QueueEvent) and isinstance(done, QueueEvent)
    assert (rec.kind, done.kind) == ("received", "closed")
    # 09:00 in Boston in January is 14:00 UTC.
    assert rec.ts == datetime(2015, 1, 27, 14, tzinfo=UTC).timestamp()
    assert rec.due == rec.ts + DAY
    assert done.ts - rec.ts == 7 * H and done.received == rec.ts and done.on_time is True
    assert (rec.agency, rec.service, rec.channel) == (
        "PWDx",
        "Misc. Snow Complaint",
        "Constituent Call",
    )


def test_request_ids_and_personal_fields_never_leave_the_mapper() -> None:
    evs = mapper(boston_mapping()).convert(BOSTON_ROW)
    text = repr(evs)
    for secret in ("101001240735", "Jane", "555", "Main St", "42.3574"):
        assert secret not in text
    assert evs[0].rid == evs[1].rid  # the hash still joins the lifecycle
    bad = mapper(boston_mapping()).convert({**BOSTON_ROW, "open_dt": "27 Jan"})
    assert isinstance(bad[0], DeadLetter)
    assert bad[0].reason == "bad timestamp: received_at"
    assert "101001240735" not in bad[0].payload and "Jane" not in bad[0].payload


def test_la_schema_maps_by_configuration_alone() -> None:
    raw = yaml.safe_load((ROOT / "examples" / "la311.yaml").read_text())
    m = ServiceQueuesConfig.model_validate(raw["service_queues"]).inputs[0].mapping
    row = {
        "SRNumber": "1-866512011",
        "CreatedDate": "12/27/2017 01:36:26 PM",
        "ServiceDate": "12/29/2017 12:00:00 AM",
        "ClosedDate": "12/29/2017 11:29:10 AM",
        "Owner": "BOS",
        "RequestType": "Bulky Items",
        "RequestSource": "Call",
    }
    rec, done = mapper(m).convert(row)
    assert rec.ts == datetime(2017, 12, 27, 21, 36, 26, tzinfo=UTC).timestamp()
    # A due *date* is the end of that local day, not its first second.
    assert rec.due == datetime(2017, 12, 30, 7, 59, 59, tzinfo=UTC).timestamp()
    assert isinstance(done, QueueEvent) and done.kind == "closed" and done.ts < rec.due


def test_labels_beyond_top_n_fold_into_other() -> None:
    m = mapper(boston_mapping(), limit=2)
    m.prime([{"department": d} for d in ["A"] * 5 + ["B"] * 3 + ["C"]])
    agencies = [m.agencies.fold(x) for x in ("A", "B", "C", "D")]
    assert agencies == ["A", "B", "other", "other"]


def test_lifecycle_event_rows_and_hold_statuses() -> None:
    m = FieldMapping(
        id="id",
        agency="agency",
        received_at="ts",
        due_at="due",
        event="event",
        status="status",
        timezone="Asia/Ho_Chi_Minh",
    )
    cm = mapper(m)
    (r,) = cm.convert(
        {
            "event": "received",
            "id": "A1",
            "agency": "Tu phap",
            "ts": "2024-03-01T08:00:00",
            "due": "2024-03-05T17:00:00",
        }
    )
    (s,) = cm.convert(
        {
            "event": "status",
            "id": "A1",
            "agency": "Tu phap",
            "ts": "2024-03-02T08:00:00",
            "status": "on_hold",
        }
    )
    assert r.kind == "received" and r.ts == datetime(2024, 3, 1, 1, tzinfo=UTC).timestamp()
    assert s.kind == "status" and s.status == "hold" and s.rid == r.rid


def test_config_rejects_unknown_keys_and_windows_that_do_not_divide_a_day() -> None:
    with pytest.raises(Exception, match=r"unknown key|extra"):
        parse_config({"service_queues": {"top_agencies": 5, "top_agencys": 5}})
    with pytest.raises(Exception, match="divide a day"):
        ServiceQueuesConfig(window_s=7000)
    from vigil.flows.config import load_config

    for name in ("boston311.yaml", "la311.yaml"):
        cfg = load_config(ROOT / "examples" / name)
        assert cfg.service_queues.inputs
    with pytest.raises(ConfigError):
        load_config(ROOT / "examples" / "nope.yaml")


def test_public_holidays_of_any_year_and_a_districts_own_days() -> None:
    from datetime import date

    cal = make_calendar(ServiceQueuesConfig())  # Vietnam by default
    # Lunar New Year 2026 and National Day 2031: years no hand-written table covered.
    assert cal.day_type_of(date(2026, 2, 17)) == HOLIDAY
    assert cal.day_type_of(date(2031, 9, 2)) == HOLIDAY
    assert cal.day_type_of(date(2026, 2, 24)) == WORKDAY  # an ordinary Tuesday
    own = ServiceQueuesConfig.model_validate(
        {
            "calendar": {
                "country": "US",
                "subdivision": "MA",
                "extra_holidays": ["2015-03-17"],  # Evacuation Day, Suffolk County only
                "compensatory_working_days": ["2015-01-24"],  # a Saturday worked
            }
        }
    )
    cal = make_calendar(own)
    assert cal.day_type_of(date(2015, 4, 20)) == HOLIDAY  # Patriots' Day (Massachusetts)
    assert cal.day_type_of(date(2015, 3, 17)) == HOLIDAY
    assert cal.day_type_of(date(2015, 1, 24)) == WORKDAY
    assert cal.day_type_of(date(2015, 9, 2)) == WORKDAY  # Vietnam's National Day: not here
    # An older configuration's bundled names still work, and mean that country alone.
    legacy = make_calendar(ServiceQueuesConfig.model_validate({"calendar": {"holidays": ["us"]}}))
    assert legacy.day_type_of(date(2018, 1, 1)) == HOLIDAY
    assert legacy.day_type_of(date(2015, 9, 2)) == WORKDAY
    with pytest.raises(ValidationError, match="no public holidays for country 'XX'"):
        ServiceQueuesConfig.model_validate({"calendar": {"country": "XX"}})


# ---------------------------------------------------------------- request state
def ev(t: float, kind: str, rid: str, agency: str = "PWD", **kw: object) -> QueueEvent:
    return QueueEvent(t, kind, rid, agency, **kw)  # type: ignore[arg-type]


def monitor(**kw: object) -> QueueMonitor:
    return QueueMonitor(ServiceQueuesConfig(**kw), WorkCalendar("UTC"))  # type: ignore[arg-type]


def agency_stats(out: list, agency: str = "PWD") -> list[QueueStats]:
    return [s for s in out if isinstance(s, QueueStats) and s.agency == agency and not s.service]


def test_a_request_is_overdue_when_its_deadline_passes_not_when_it_closes() -> None:
    mon = monitor()
    t0 = MONDAY + 9 * H
    out = mon.process([ev(t0, "received", "r1", due=t0 + 2 * H)])
    out += mon.process([ev(t0 + 2.5 * H, "received", "r2")])  # watermark passes the due
    assert mon.overdue_now("PWD") == 1
    out += mon.process([ev(t0 + 30 * H, "closed", "r1")])
    assert mon.overdue_now("PWD") == 0 and mon.backlog_now("PWD") == 1
    out += mon.flush()
    st = agency_stats(out)
    breach = [s for s in st if s.breaches]
    assert len(breach) == 1 and breach[0].ts == t0 + 3 * H  # the window holding the due
    closed = [s for s in st if s.completions]
    assert closed[0].on_time_rate == 0.0 and closed[0].p50_s == 30 * H


def test_on_hold_stops_the_clock_and_resume_extends_the_deadline() -> None:
    mon = monitor()
    t0 = MONDAY + 9 * H
    mon.process(
        [ev(t0, "received", "r1", due=t0 + 2 * H), ev(t0 + H, "status", "r1", status="hold")]
    )
    mon.process([], hint=t0 + 5 * H)
    assert mon.overdue_now("PWD") == 0  # on hold: the citizen owes documents
    mon.process([ev(t0 + 5 * H, "status", "r1", status="resume")])  # held 4 h: due t0+6h
    mon.process([], hint=t0 + 5.9 * H)
    assert mon.overdue_now("PWD") == 0
    mon.process([], hint=t0 + 6.1 * H)
    assert mon.overdue_now("PWD") == 1


def test_closed_and_long_idle_requests_expire() -> None:
    mon = monitor(idle_ttl_s=2 * DAY)
    t0 = MONDAY
    mon.process(
        [
            ev(t0, "received", "old"),
            ev(t0 + H, "received", "done"),
            ev(t0 + 2 * H, "closed", "done"),
        ]
    )
    assert mon.open_requests() == 1
    mon.process([ev(t0 + 4 * DAY, "received", "new")])
    assert mon.open_requests() == 1 and mon.counters["expired"] == 1
    assert mon.backlog_now("PWD") == 1


def test_late_events_are_counted_and_still_applied() -> None:
    mon = monitor()
    t0 = MONDAY
    mon.process([ev(t0 + 5 * H, "received", "a")])
    mon.process([ev(t0 + H, "received", "b")])
    assert mon.counters["late"] == 1 and mon.backlog_now("PWD") == 2


def test_snapshot_pickle_restore_gives_identical_output() -> None:
    events = synthetic_week(surge_day=None)
    half = len(events) // 2
    whole = monitor()
    expected = whole.process(events) + whole.flush()
    first = monitor()
    got = first.process(events[:half])
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    second = monitor()
    second.restore(snap)
    got += second.process(events[half:]) + second.flush()
    assert got == expected


# ---------------------------------------------------------------- the dataflow
def synthetic_week(
    surge_day: int | None = 9, days: int = 12, agency: str = "PWD", extra: int = 60
) -> list[QueueEvent]:
    """Working days with 10 requests an office hour, each closed 3 h later (due in 8 h)."""
    out: list[QueueEvent] = []
    n = 0
    for d in range(days):
        day = MONDAY + d * DAY
        if datetime.fromtimestamp(day, tz=UTC).weekday() >= 5:
            continue
        for h in range(8, 17):
            k = 10 + (extra if d == surge_day and h in (9, 10) else 0) + (d + h) % 3
            for i in range(k):
                t = day + h * H + i * (H / k)
                rid = f"{agency}{n}"
                n += 1
                out.append(
                    ev(t, "received", rid, agency, service="permits", channel="web", due=t + 8 * H)
                )
                out.append(ev(t + 3 * H, "closed", rid, agency, service="permits"))
    out.sort(key=lambda e: e.ts)
    return out


def run_flow(events: list, cfg: ServiceQueuesConfig) -> tuple[list, list, list]:
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    stats: list[QueueStats] = []
    flow = build_flow(
        cfg,
        [TestingSource(events, batch_size=500)],
        TestingSink(dets),
        TestingSink(dead),
        TestingSink(stats),
    )
    run_main(flow)
    return dets, stats, dead


def test_flow_flags_an_arrival_surge_for_the_agency_and_explains_it() -> None:
    cfg = ServiceQueuesConfig(shards=4)
    dets, stats, _ = run_flow(synthetic_week(), cfg)
    surges = [d for d in dets if d.kind == "arrival_surge"]
    assert surges, [d.kind for d in dets]
    first = surges[0]
    assert first.feed == "service_queues" and first.entity == "PWD"
    assert ("agency", "PWD") in first.extra
    assert (
        datetime.fromtimestamp(first.ts, tz=UTC).date() == datetime(2024, 1, 17, tzinfo=UTC).date()
    )
    assert first.observed > first.expected * 1.4
    assert "expected" in first.description and "on a workday" in first.description
    # Deadlines are met and work goes on: no overdue or throughput alarm.
    assert not {d.kind for d in dets} & {"overdue_share", "throughput_collapse", "arrival_drop"}
    assert stats and all(s.backlog >= 0 and s.overdue >= 0 for s in stats)


def test_a_held_condition_is_reemitted_once_per_window_then_stops() -> None:
    dets, _, _ = run_flow(synthetic_week(), ServiceQueuesConfig())
    surges = [d for d in dets if d.kind == "arrival_surge"]
    times = [d.ts for d in surges]
    assert len(times) == len(set(times)) > 1  # at most once per window
    assert all(b - a == H for a, b in itertools.pairwise(times))
    assert len({dict(d.extra)["since"] for d in surges}) == 1
    # It stops the next day, when arrivals are normal again.
    assert max(times) <= MONDAY + 10 * DAY


def test_throughput_collapse_when_completions_stop_and_arrivals_continue() -> None:
    events = [
        e
        for e in synthetic_week(surge_day=None)
        if not (e.kind == "closed" and e.ts >= MONDAY + 9 * DAY)
    ]
    dets, _, _ = run_flow(events, ServiceQueuesConfig())
    tc = [d for d in dets if d.kind == "throughput_collapse"]
    assert tc and datetime.fromtimestamp(tc[0].ts, tz=UTC).date().day == 17
    assert tc[0].observed == 0 and tc[0].entity == "PWD" and tc[0].severity == "high"
    # The backlog then grows, the deadlines pass: both are found as well.
    kinds = {d.kind for d in dets}
    assert {"backlog_growth", "overdue_share"} <= kinds


def test_agencies_in_different_shards_are_kept_apart() -> None:
    events = sorted(
        synthetic_week(surge_day=9, agency="A") + synthetic_week(surge_day=None, agency="B"),
        key=lambda e: e.ts,
    )
    dets, stats, _ = run_flow(events, ServiceQueuesConfig(shards=2))
    assert {d.entity for d in dets if d.kind == "arrival_surge"} == {"A"}
    assert {s.agency for s in stats} == {"A", "B"}


def test_dead_letters_pass_through_and_the_holiday_is_not_a_drop() -> None:
    # Wed 2024-01-17 is declared a holiday: its empty office hours are expected.
    events = [
        e for e in synthetic_week(surge_day=None) if datetime.fromtimestamp(e.ts, tz=UTC).day != 17
    ]
    bad = DeadLetter("map", "missing field: agency", "{}", "service_queues", "x")
    with_holiday = ServiceQueuesConfig(calendar={"extra_holidays": ("2024-01-17",)})
    dets, _, dead = run_flow([bad, *events], with_holiday)
    assert dead == [bad]
    assert not [d for d in dets if d.kind == "arrival_drop"]
    dets, _, _ = run_flow(events, ServiceQueuesConfig())
    assert [d for d in dets if d.kind == "arrival_drop"]


def test_calendar_from_config() -> None:
    cal = make_calendar(
        ServiceQueuesConfig(calendar={"timezone": "Asia/Ho_Chi_Minh", "holidays": ("vn",)})
    )
    tet = datetime(2025, 1, 29, 3, tzinfo=UTC).timestamp()  # 10:00 in Hanoi, Tet
    assert cal.day_type(tet) == 2 and not cal.in_office_hours(tet)
    assert cal.in_office_hours(tet + 14 * DAY)


# ---------------------------------------------------------------- metrics
def test_metrics_per_agency_with_bounded_labels() -> None:
    reg = CollectorRegistry()
    m = QueueMetrics(registry=reg)
    _, stats, _ = run_flow(synthetic_week(), ServiceQueuesConfig())
    m.record(stats)
    arr = reg.get_sample_value("vigil_queue_arrivals_total", {"agency": "PWD", "service": "_all"})
    assert arr == sum(s.arrivals for s in stats if not s.service)
    assert reg.get_sample_value(
        "vigil_queue_processing_seconds", {"agency": "PWD", "service": "_all", "quantile": "0.5"}
    ) == pytest.approx(3 * H)
    assert (
        reg.get_sample_value(
            "vigil_queue_channel_arrivals_total", {"agency": "PWD", "channel": "web"}
        )
        == arr
    )
    names = {mf.name for mf in reg.collect()}
    for n in names:
        assert n in METRIC_NAMES or n + "_total" in METRIC_NAMES
    labels = {tuple(sorted(s.labels)) for mf in reg.collect() for s in mf.samples}
    assert all(set(lab) <= {"agency", "service", "channel", "quantile"} for lab in labels)


def test_metric_names_are_registered_constants() -> None:
    from vigil.sinks import prometheus as p

    for name in (
        "QUEUE_ARRIVALS",
        "QUEUE_COMPLETIONS",
        "QUEUE_BACKLOG",
        "QUEUE_OVERDUE",
        "QUEUE_ON_TIME",
        "QUEUE_PROCESSING",
        "QUEUE_CHANNEL_ARRIVALS",
        "QUEUE_BREACHES",
    ):
        assert getattr(p, name) in METRIC_NAMES
