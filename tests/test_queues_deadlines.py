"""Deadlines in working days / hours on a Vietnamese calendar, and the service-level table.

Dates are checked against the official calendar: Tết 2026 is 16-20 February, 30/4-1/5
2025 was bridged to Friday 2 May in exchange for Saturday 26 April (a compensatory working
day), National Day 2025 was 1-2 September.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from vigil.flows.config import parse_config
from vigil.flows.queues.cli import load_events, print_table, scorecard
from vigil.flows.queues.config import ServiceQueuesConfig
from vigil.flows.queues.deadlines import DeadlineTable, add_deadline
from vigil.flows.queues.flow import make_calendar, replay

HCM = "Asia/Ho_Chi_Minh"


def vn_calendar(**calendar: Any) -> Any:
    return make_calendar(ServiceQueuesConfig(calendar={"timezone": HCM, **calendar}))


def local(cal: Any, y: int, mo: int, d: int, h: int = 9, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=cal.zone).timestamp()


def shown(cal: Any, ts: float) -> str:
    return datetime.fromtimestamp(ts, cal.zone).strftime("%Y-%m-%d %H:%M")


def test_working_days_skip_tet_and_the_weekend() -> None:
    cal = vn_calendar()
    # Received Friday 13 Feb 2026; 16-20 Feb is Tết: 5 working days end Friday 27 Feb.
    start = local(cal, 2026, 2, 13, 10)
    assert shown(cal, add_deadline(cal, start, 5, "working_days")) == "2026-02-27 17:00"
    # In calendar time the same 5 days end in the middle of Tết.
    assert shown(cal, add_deadline(cal, start, 5, "days")) == "2026-02-18 10:00"
    assert shown(cal, add_deadline(cal, start, 120, "hours")) == "2026-02-18 10:00"
    # 8 working hours: 7 h left on Friday (10:00-17:00), the 8th on Monday 23 Feb after Tết.
    assert shown(cal, add_deadline(cal, start, 8, "working_hours")) == "2026-02-23 09:00"


def test_a_compensatory_working_day_brings_a_deadline_forward() -> None:
    start_args = (2025, 4, 25, 10)  # Friday; 30/4, 1/5 holidays, 2/5 the bridge day off
    plain = vn_calendar()
    assert shown(plain, add_deadline(plain, local(plain, *start_args), 3, "working_days")) == (
        "2025-05-05 17:00"  # Mon 28, Tue 29 Apr, then nothing until Monday 5 May
    )
    worked = vn_calendar(compensatory_working_days=["2025-04-26"])
    assert shown(worked, add_deadline(worked, local(worked, *start_args), 3, "working_days")) == (
        "2025-04-29 17:00"  # Saturday 26 April is worked: Sat 26, Mon 28, Tue 29
    )


def test_national_day_and_a_districts_own_day_off_push_a_deadline_back() -> None:
    cal = vn_calendar()
    start = local(cal, 2025, 8, 29, 15)  # Friday; 1-2 September are National Day
    assert shown(cal, add_deadline(cal, start, 2, "working_days")) == "2025-09-04 17:00"
    own = vn_calendar(extra_holidays=["2025-09-03"])
    assert shown(own, add_deadline(own, start, 2, "working_days")) == "2025-09-05 17:00"


def test_working_hours_received_after_closing_start_at_the_next_opening() -> None:
    cal = vn_calendar(office_hours=[8, 17])
    start = local(cal, 2026, 4, 29, 18)  # Wednesday evening; 30/4 and 1/5 are holidays
    # Next opening: Monday 4 May 08:00 (Sat 2, Sun 3 weekend) + 2 h.
    assert shown(cal, add_deadline(cal, start, 2, "working_hours")) == "2026-05-04 10:00"


def test_a_bad_deadline_in_the_table_is_one_clear_config_error() -> None:
    with pytest.raises(ValueError, match="AMOUNT UNIT"):
        ServiceQueuesConfig(service_levels={"default": "five working_days"})
    with pytest.raises(ValueError, match="working_days"):
        ServiceQueuesConfig(service_levels={"default": "5 weeks"})


def test_table_order_service_then_agency_then_default() -> None:
    cfg = ServiceQueuesConfig(
        calendar={"timezone": HCM},
        service_levels={
            "default": "15 working_days",
            "agencies": {"TNMT": "10 working_days"},
            "services": {"TNMT/Cấp sổ đỏ": "30 working_days", "Hộ tịch": "24 working_hours"},
        },
    )
    t = DeadlineTable(cfg.service_levels, make_calendar(cfg))
    assert str(t.rule("TNMT", "Cấp sổ đỏ")) == "30 working_days"
    assert str(t.rule("TNMT", "Đất đai")) == "10 working_days"
    assert str(t.rule("TP", "Hộ tịch")) == "24 working_hours"
    assert str(t.rule("TP", "Chứng thực")) == "15 working_days"


# ------------------------------------------------------------ the table in the flow and report

HEADER = "id,agency,service,opened,due,closed\n"


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "cases.csv"
    p.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return p


def _cfg(path: Path, **section: Any) -> ServiceQueuesConfig:
    raw = {
        "service_queues": {
            "inputs": [
                {
                    "kind": "replay",
                    "paths": [str(path)],
                    "mapping": {
                        "id": "id",
                        "agency": "agency",
                        "service": "service",
                        "received_at": "opened",
                        "due_at": "due",
                        "closed_at": "closed",
                    },
                    "until": "end",
                }
            ],
            "calendar": {"timezone": HCM},
            **section,
        }
    }
    return parse_config(raw).service_queues


def test_the_table_gives_deadlines_and_the_scorecard_says_so(tmp_path: Path) -> None:
    # Two requests of the land office, received Friday 13 Feb 2026 before Tết, without a
    # due date: 5 working days end Friday 27 Feb. One closes on the 26th, one on 2 March.
    # A third carries its own due date (the data's), met.
    rows = [
        "a,TNMT,Đất đai,2026-02-13 09:00:00,,2026-02-26 10:00:00",
        "b,TNMT,Đất đai,2026-02-13 09:30:00,,2026-03-02 10:00:00",
        "c,TNMT,Đất đai,2026-02-13 10:00:00,2026-02-14 10:00:00,2026-02-13 11:00:00",
        "d,TP,Hộ tịch,2026-02-12 10:00:00,,",
    ]
    path = _csv(tmp_path, rows)
    tz = make_calendar(_cfg(path)).zone
    start = datetime(2026, 2, 1, tzinfo=tz).timestamp()
    end = datetime(2026, 4, 1, tzinfo=tz).timestamp()

    without = {(r.agency, r.service): r for r in scorecard(load_events(_cfg(path)), start, end)}
    # No table: b and a have no deadline, only c is judged; TP has none at all.
    assert without[("TNMT", "(all)")].on_time_pct == 100.0
    assert without[("TNMT", "(all)")].with_deadline == 1
    assert without[("TP", "(all)")].on_time_pct is None
    assert without[("TP", "(all)")].deadline_source == "none"
    out = io.StringIO()
    print_table(list(without.values()), out)
    tp_line = next(x for x in out.getvalue().splitlines() if x.startswith("TP ") and "(all)" in x)
    assert "100.0%" not in tp_line and tp_line.split()[-1] == "none"

    cfg = _cfg(path, service_levels={"agencies": {"TNMT": "5 working_days", "TP": "3 days"}})
    got = {(r.agency, r.service): r for r in scorecard(load_events(cfg), start, end)}
    tnmt = got[("TNMT", "(all)")]
    assert (tnmt.completed, tnmt.with_deadline, tnmt.table_deadlines) == (3, 3, 2)
    assert tnmt.on_time_pct == round(100 * 2 / 3, 2)  # b closed after 27 Feb 17:00
    assert tnmt.deadline_source == "data+table"
    # TP's request is still open at the period's end, past its table deadline.
    tp = got[("TP", "(all)")]
    assert (tp.backlog, tp.overdue_now, tp.deadline_source) == (1, 1, "table")
    # Backlog and overdue at a moment inside the period: 16 Feb, all four open, none late.
    mid = datetime(2026, 2, 16, 12, tzinfo=tz).timestamp()
    at_mid = {(r.agency, r.service): r for r in scorecard(load_events(cfg), start, end, at=mid)}
    assert at_mid[("TNMT", "(all)")].backlog == 2  # c closed on the 13th
    assert at_mid[("TP", "(all)")].overdue_now == 1  # received 12 Feb + 3 days


def test_overdue_rule_fires_on_table_deadlines(tmp_path: Path) -> None:
    # 48 requests an hour apart that nobody closes; no due dates in the data.
    t0 = datetime(2026, 3, 2, 0, 0, tzinfo=ZoneInfo(HCM))
    rows = [
        f"r{i},UBND,Chứng thực,{t0 + timedelta(hours=i):%Y-%m-%d %H:%M:%S},," for i in range(48)
    ]
    path = _csv(tmp_path, rows)
    rules = {"overdue": {"min_decided": 10, "threshold": 0.5}}
    plain = _cfg(path, warmup_s=0, rules=rules)
    dets, _stats, _dead = replay(plain)
    assert not [d for d in dets if d.kind == "overdue_share"]
    tabled = _cfg(path, warmup_s=0, rules=rules, service_levels={"default": "2 hours"})
    dets, stats, _dead = replay(tabled)
    over = [d for d in dets if d.kind == "overdue_share"]
    assert over and over[0].entity == "UBND" and over[0].observed == 1.0
    assert max(s.overdue for s in stats if s.service == "") >= 40


def test_the_on_time_gauge_makes_no_claim_without_a_deadline() -> None:
    import math

    from vigil.flows.queues.records import QueueEvent
    from vigil.flows.queues.state import QueueMonitor

    def rate(**due: float) -> float:
        cfg = ServiceQueuesConfig()
        mon = QueueMonitor(cfg, make_calendar(cfg))
        t0 = 1_772_409_600.0  # 2026-03-02 00:00 UTC
        mon.process([QueueEvent(t0, "received", "r", "PWD", **due)])
        mon.process([QueueEvent(t0 + 600, "closed", "r", "PWD")])
        return next(s.on_time_rate for s in mon.flush() if s.service == "" and s.completions)

    assert math.isnan(rate())  # was 1.0: "100% on time" with no deadline at all
    assert rate(due=1_772_409_600.0 + 3600) == 1.0


def test_check_config_states_where_deadlines_come_from(tmp_path: Path) -> None:
    from vigil.flows.queues.config import explain

    path = _csv(tmp_path, ["a,TNMT,Đất đai,2026-02-13 09:00:00,,"])
    plain = explain(_cfg(path))
    assert not any("service-level table" in x for x in plain)
    tabled = explain(_cfg(path, service_levels={"default": "15 working_days"}))
    assert any(
        "deadlines: mapping.due_at, else the service-level table" in x
        and "default 15 working_days" in x
        for x in tabled
    )
    cfg = _cfg(path)
    inp = cfg.inputs[0]
    no_due = inp.model_copy(update={"mapping": inp.mapping.model_copy(update={"due_at": None})})
    bare = cfg.model_copy(update={"inputs": (no_due,)})
    assert any(x.startswith("warning:") and "no deadline source" in x for x in explain(bare))
