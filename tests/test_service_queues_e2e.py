"""Acceptance of the queue flow on real data: Boston 311 Q1 2015 and LA MyLA311 2017-18.

The flow runs as bytewax dataflows over the shared datasets with the shipped example
configurations (paths pointed at ``../shared/datasets``); the report and ``vigil run`` run
as a user runs them, in a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from vigil.flows.config import parse_config
from vigil.flows.queues.flow import replay

from vigil.records import Detection, QueueStats

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "service_queues"
BOSTON = DATA / "boston_311_2015q1" / "boston_311_2015Q1.csv"
LA = DATA / "la_myla311_2017-12-27_2018-01-04" / "la_myla311_2017-12-27_2018-01-04.csv"
NY = ZoneInfo("America/New_York")
LAX = ZoneInfo("America/Los_Angeles")
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]

pytestmark = pytest.mark.skipif(not BOSTON.exists(), reason="../shared/datasets not present")


def example(name: str, path: Path, **updates: Any) -> dict[str, Any]:
    """An example configuration with its input pointed at the real dataset."""
    raw = yaml.safe_load((ROOT / "examples" / name).read_text())
    raw["service_queues"]["inputs"][0]["paths"] = [str(path)]
    for k, v in updates.items():
        raw["service_queues"].setdefault("calendar", {})[k] = v
    return raw


@cache
def run(name: str, no_holidays: bool = False) -> tuple[list[Detection], list[QueueStats]]:
    path = BOSTON if name == "boston311.yaml" else LA
    raw = example(name, path, **({"country": None, "holidays": []} if no_holidays else {}))
    dets, stats, dead = replay(parse_config(raw).service_queues)
    # Nothing unreadable; LA has 25 cases closed before they were opened, set aside.
    assert {(d.step, d.reason) for d in dead} <= {("data_quality", "close_before_open")}
    return dets, stats


def local_day(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts - 1, tz=tz).strftime("%m-%d")  # ts is a window's end


def found(dets: list[Detection], kind: str, tz: ZoneInfo) -> dict[str, set[str]]:
    """Agency -> local days on which ``kind`` was detected."""
    out: dict[str, set[str]] = defaultdict(set)
    for d in dets:
        if d.kind == kind:
            out[d.entity].add(local_day(d.ts, tz))
    return out


# ---------------------------------------------------------------- Boston 311, Q1 2015
def test_boston_snow_storm_surge_of_27_28_january() -> None:
    dets, _ = run("boston311.yaml")
    snow = [
        d for d in dets if d.kind == "service_arrival_surge" and "Snow" in dict(d.extra)["service"]
    ]
    days = {(d.entity, local_day(d.ts, NY)) for d in snow}
    assert ("PWDx", "01-27") in days and ("PWDx", "01-28") in days, sorted(days)
    services = {dict(d.extra)["service"] for d in snow if local_day(d.ts, NY) in ("01-27", "01-28")}
    assert {"Misc. Snow Complaint", "Request for Snow Plowing (Emergency Responder)"} <= services
    first = min(snow, key=lambda d: d.ts)
    assert first.observed >= 1.4 * first.expected and "expected" in first.description


def test_boston_overdue_rise_in_the_week_of_2_to_8_february() -> None:
    dets, _ = run("boston311.yaml")
    od = found(dets, "overdue_share", NY)
    week = {f"02-0{d}" for d in range(2, 9)}
    assert od["BTDT"] & week and od["PWDx"] & week, {k: sorted(v) for k, v in od.items()}
    # Transportation had no such episode in the three weeks before the storm.
    assert not {d for d in od["BTDT"] if "01-05" <= d <= "01-25"}
    d = next(x for x in dets if x.kind == "overdue_share" and x.entity == "BTDT")
    assert d.observed >= d.threshold and "deadlines" in d.description


def test_every_detection_routes_to_its_agency() -> None:
    for name in ("boston311.yaml", "la311.yaml"):
        dets, _ = run(name)
        assert dets
        for d in dets:
            assert d.feed == "service_queues" and dict(d.extra)["agency"] == d.entity
            assert d.description and d.summary


def test_boston_stats_match_the_file() -> None:
    _, stats = run("boston311.yaml")
    arrivals: dict[str, int] = defaultdict(int)
    for s in stats:
        if not s.service:
            arrivals[s.agency] += s.arrivals
    with BOSTON.open(newline="") as f:
        direct: dict[str, int] = defaultdict(int)
        for r in csv.DictReader(f):
            direct[r["department"]] += 1
    for dept in ("PWDx", "ISD", "INFO", "BTDT", "PARK"):
        assert arrivals[dept] == direct[dept]


# ---------------------------------------------------------------- LA MyLA311, New Year
def daily_arrivals(stats: list[QueueStats], agency: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for s in stats:
        if s.agency == agency and not s.service:
            out[local_day(s.ts, LAX)] += s.arrivals
    return out


def test_la_new_year_dip_and_the_surge_after_it() -> None:
    dets, stats = run("la311.yaml")
    bos = daily_arrivals(stats, "BOS")
    assert bos["01-01"] < 0.5 * bos["12-28"]  # the dip
    assert bos["01-02"] > 1.15 * bos["12-28"]  # and the surge after it
    assert "01-02" in found(dets, "arrival_surge", LAX)["BOS"]
    assert found(dets, "backlog_growth", LAX)["BOS"] & {"01-01", "01-02"}
    # New Year's Day is a holiday in the calendar: a quiet holiday is no alarm...
    assert "01-01" not in found(dets, "arrival_drop", LAX)["BOS"]
    # ...but without the calendar the same day is a drop against a normal workday.
    plain, _ = run("la311.yaml", no_holidays=True)
    assert "01-01" in found(plain, "arrival_drop", LAX)["BOS"]


# ---------------------------------------------------------------- the CLI
def vigil(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ},
    )


def direct_boston(start: str, end: str) -> dict[str, dict[str, Any]]:
    """Per department, straight from the CSV: received, completed, on-time % and times."""
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"received": 0, "completed": 0, "on_time": 0, "hours": []}
    )
    with BOSTON.open(newline="") as f:
        for r in csv.DictReader(f):
            d = out[r["department"]]
            if start <= r["open_dt"] < end:
                d["received"] += 1
            if r["closed_dt"] and start <= r["closed_dt"] < end:
                d["completed"] += 1
                d["on_time"] += r["ontime_status"] == "ONTIME"
                h = datetime.fromisoformat(r["closed_dt"]) - datetime.fromisoformat(r["open_dt"])
                d["hours"].append(max(h.total_seconds(), 0) / 3600)
    return out


def test_report_on_time_percentage_matches_a_direct_computation(tmp_path: Path) -> None:
    cfg = tmp_path / "boston.yaml"
    cfg.write_text(yaml.safe_dump(example("boston311.yaml", BOSTON)))
    out_json, out_csv = tmp_path / "score.json", tmp_path / "score.csv"
    r = vigil(
        "report",
        "service-queues",
        "--config",
        str(cfg),
        "--from",
        "2015-02-01",
        "--to",
        "2015-03-01",
        "--json",
        str(out_json),
        "--csv",
        str(out_csv),
    )
    assert r.returncode == 0, r.stderr
    assert "PWDx" in r.stdout and "on time" in r.stdout
    rows = json.loads(out_json.read_text())["rows"]
    with out_csv.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    got = {x["agency"]: x for x in rows if x["service"] == "(all)"}
    direct = direct_boston("2015-02-01", "2015-03-01")
    checked = 0
    for dept, d in direct.items():
        if not d["completed"]:
            continue
        row = got[dept]
        assert row["received"] == d["received"] and row["completed"] == d["completed"]
        assert row["on_time_pct"] == round(100 * d["on_time"] / d["completed"], 2), dept
        # The median from the KLL sketch: exact for small counts, within ~1% rank beyond.
        # (Reported in hours to 2 decimals, hence the +-0.005 h.)
        hours, med, n = d["hours"], row["median_hours"], len(d["hours"])
        below = sum(h < med - 0.005 for h in hours) / n
        upto = sum(h <= med + 0.005 for h in hours) / n
        assert below <= 0.52 and upto >= 0.48, (dept, below, upto)
        checked += 1
    assert checked >= 8


def test_run_service_queues_from_the_cli_writes_alerts(tmp_path: Path) -> None:
    raw = example("la311.yaml", LA)
    raw["alerts"] = {"file": str(tmp_path / "alerts.jsonl")}
    raw["dead_letters"] = {"file": str(tmp_path / "dead.jsonl")}
    raw["metrics"] = {"enabled": False}
    cfg = tmp_path / "la.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = vigil("run", "service_queues", "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    kinds = {a["labels"]["alertname"] for a in alerts}
    assert {"arrival_surge", "backlog_growth"} <= kinds
    assert all(a["labels"]["feed"] == "service_queues" for a in alerts)
    # No request id (LA's SRNumber looks like 1-866512011) in alerts or logs.
    blob = (tmp_path / "alerts.jsonl").read_text() + r.stderr + r.stdout
    assert "1-8665" not in blob


def test_demo_includes_the_queue_feed(tmp_path: Path) -> None:
    r = vigil("demo", "--metrics-port", "0", "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    feeds = {
        json.loads(x)["labels"]["feed"]
        for x in (tmp_path / "alerts.jsonl").read_text().splitlines()
    }
    assert "service_queues" in feeds
