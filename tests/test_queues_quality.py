"""Honest counting: rows whose lifecycle makes no sense are set aside, counted by reason.

Small constructed rows for each case, run as a user runs them (``vigil run`` and ``vigil
report service-queues`` in a subprocess); the real LA export's 25 cases closed before they
were opened are counted the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from vigil.flows.queues.config import FieldMapping
from vigil.flows.queues.flow import make_route
from vigil.flows.queues.mapping import CaseMapper, LabelFolder, hash_id
from vigil.sinks.prometheus import FlowMetrics

from vigil.records import DeadLetter

ROOT = Path(__file__).resolve().parents[1]
LA = (
    ROOT.parent
    / "shared/datasets/service_queues/la_myla311_2017-12-27_2018-01-04"
    / "la_myla311_2017-12-27_2018-01-04.csv"
)
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]

ROWS = [
    "id,dept,opened,closed,status,name",
    "1,PWD,2026-03-02 09:00:00,2026-03-02 11:00:00,Closed,Jane Citizen",  # fine
    "2,PWD,2026-03-02 09:10:00,,Open,Jane Citizen",  # fine, open
    "3,PWD,2026-03-02 10:00:00,2026-03-01 10:00:00,Closed,Jane Citizen",  # close < open
    "4,PWD,2026-03-02 10:30:00,yesterday,Closed,Jane Citizen",  # close unparsable
    "5,ISD,2026-03-02 11:00:00,,Closed,Jane Citizen",  # closed, no close time
    "6,ISD,2026-03-02 11:30:00,2026-03-02 12:00:00,Open,Jane Citizen",  # close, open status
    ",ISD,2026-03-02 12:00:00,,Open,Jane Citizen",  # empty id
    "   ,ISD,2026-03-02 12:10:00,,Open,Jane Citizen",  # blank id
]
REASONS = {
    "close_before_open": 1,
    "unparsable_close_time": 1,
    "closed_without_close_time": 1,
    "close_time_with_open_status": 1,
}


def _config(tmp_path: Path) -> Path:
    data = tmp_path / "cases.csv"
    data.write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    raw: dict[str, Any] = {
        "service_queues": {
            "inputs": [
                {
                    "kind": "replay",
                    "paths": [str(data)],
                    "until": "end",
                    "mapping": {
                        "id": "id",
                        "agency": "dept",
                        "received_at": "opened",
                        "closed_at": "closed",
                        "status": "status",
                    },
                }
            ],
            "calendar": {"timezone": "America/New_York", "country": "US"},
        },
        "alerts": {"file": str(tmp_path / "alerts.jsonl")},
        "dead_letters": {"file": str(tmp_path / "dead.jsonl")},
        "metrics": {"enabled": False},
    }
    cfg = tmp_path / "q.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def vigil(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def test_run_summary_adds_up_and_dead_letters_say_why(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    r = vigil("run", "service_queues", "--config", str(cfg))  # not a tty: JSON summary
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stderr.splitlines() if x.startswith('{"summary"'))
    s = json.loads(line)["summary"]
    # 8 rows read: 2 used (3 events: two arrivals, one close), 4 set aside, 2 dead-lettered.
    assert (s["lines"], s["events"], s["data_quality"], s["dead_lettered"]) == (8, 3, 4, 2)
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    quality = {}
    for d in dead:
        if d["step"] == "data_quality":
            quality[d["reason"]] = quality.get(d["reason"], 0) + 1
    assert quality == REASONS
    missing = [d for d in dead if d["reason"] == "missing field: id"]
    assert len(missing) == 2
    for d in missing:  # an empty id shows as empty, never as a hash of nothing
        assert json.loads(d["payload"])["id"] == ""
        assert hash_id("") not in d["payload"]
    blob = (tmp_path / "dead.jsonl").read_text() + r.stderr + r.stdout
    assert "Jane Citizen" not in blob


def test_report_shows_rows_set_aside_and_keeps_them_out_of_the_figures(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "score.json"
    r = vigil(
        "report", "service-queues", "--config", str(cfg), "--from", "2026-03-01",
        "--to", "2026-03-03", "--json", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Rows read: 8; set aside (in no figure above): 6" in r.stdout
    for reason, n in REASONS.items():
        assert f"data quality: {reason}: {n}" in r.stdout
    assert "dead-lettered: missing field: id: 2" in r.stdout
    doc = json.loads(out.read_text())
    rows = {x["agency"]: x for x in doc["rows"] if x["service"] == "(all)"}
    # PWD: rows 1 and 2 only; ISD: nothing usable (rows 5-6 set aside, ids missing).
    assert (rows["PWD"]["received"], rows["PWD"]["completed"], rows["PWD"]["backlog"]) == (2, 1, 1)
    assert "ISD" not in rows
    # No deadline source: no on-time claim, and the text table says so.
    assert rows["PWD"]["on_time_pct"] is None and rows["PWD"]["deadline_source"] == "none"
    pwd = next(x for x in r.stdout.splitlines() if x.startswith("PWD ") and "(all)" in x)
    assert "no deadline" in pwd and "100.0%" not in pwd
    assert {x["reason"]: x["rows"] for x in doc["set_aside"]}["close_before_open"] == 1


def test_set_aside_rows_are_a_metric_by_reason() -> None:
    m = FieldMapping(
        id="id", agency="dept", received_at="opened", closed_at="closed", timezone="UTC"
    )
    mapper = CaseMapper(m, LabelFolder(5), LabelFolder(5), LabelFolder(5))
    items: list[Any] = []
    for row in (
        {"id": "1", "dept": "PWD", "opened": "2026-03-02 10:00", "closed": "2026-03-01 10:00"},
        {"id": "2", "dept": "PWD", "opened": "2026-03-02 10:00", "closed": "2026-03-02 11:00"},
    ):
        items.extend(mapper.convert(row))
    reg = CollectorRegistry()
    metrics = FlowMetrics("service_queues", registry=reg)
    routed = make_route(2)(items)
    metrics.record([x for x in routed if type(x) is not tuple])
    labels = {"flow": "service_queues", "step": "data_quality", "reason": "close_before_open"}
    assert reg.get_sample_value("vigil_dead_letters_total", labels) == 1.0
    rows = {"flow": "service_queues", "format": "queue_row"}
    assert reg.get_sample_value("vigil_lines_total", {**rows, "outcome": "parsed"}) == 1.0
    assert reg.get_sample_value("vigil_lines_total", {**rows, "outcome": "data_quality"}) == 1.0
    assert metrics.total_lines == 2 and metrics.total_quality == 1 and metrics.total_events == 2
    assert all(type(x) is not DeadLetter or x.step == "data_quality" for x in routed)


@pytest.mark.skipif(not LA.exists(), reason="../shared/datasets not present")
def test_la_cases_closed_before_they_opened_are_counted(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "examples" / "la311.yaml").read_text())
    raw["service_queues"]["inputs"][0]["paths"] = [str(LA)]
    cfg = tmp_path / "la.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = vigil(
        "report", "service-queues", "--config", str(cfg), "--from", "2017-12-27",
        "--to", "2018-01-05", "--agencies-only",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Rows read: 19999; set aside (in no figure above): 25" in r.stdout
    assert "data quality: close_before_open: 25" in r.stdout
    # ITA and LADWP carry no ServiceDate: no on-time claim for them.
    for agency in ("ITA", "LADWP"):
        line = next(x for x in r.stdout.splitlines() if x.startswith(agency + " "))
        assert "no deadline" in line and line.split()[-1] == "none"


@pytest.mark.skipif(not LA.exists(), reason="../shared/datasets not present")
def test_la_run_summary_counts_every_row_once(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "examples" / "la311.yaml").read_text())
    raw["service_queues"]["inputs"][0]["paths"] = [str(LA)]
    raw["alerts"] = {"file": str(tmp_path / "alerts.jsonl")}
    raw["dead_letters"] = {"file": str(tmp_path / "dead.jsonl")}
    raw["metrics"] = {"enabled": False}
    cfg = tmp_path / "la.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = vigil("run", "service_queues", "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(next(x for x in r.stderr.splitlines() if x.startswith('{"summary"')))
    s = s["summary"]
    # Every row of the export once, even the set-aside rows after the last arrival (the
    # replay of a case table stops there); the events are the arrivals and the closes
    # up to it.
    assert (s["lines"], s["data_quality"], s["dead_lettered"]) == (19999, 25, 0)
    assert s["events"] == 31748
    dead = (tmp_path / "dead.jsonl").read_text().splitlines()
    assert len(dead) == 25 and all('"close_before_open"' in x for x in dead)
