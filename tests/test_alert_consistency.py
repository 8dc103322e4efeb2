"""Alerts do not depend on how fast time passes, and come one per episode.

Each shared security dataset goes through the real CLI three ways (``vigil replay
--speed max``, a paced replay lasting at least 10 s, and ``vigil run`` over a file input),
each with fresh alert state and a real webhook receiver: the alerts (alertname, entity,
``startsAt``, ``endsAt``, the text at the start) and the notifications must be the same.
The machinery is ``bench/alert_consistency.py``, which prints the same comparison.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from vigil.sinks.alerting.engine import AlertEngine, Observation
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerts import alert_from_detection

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "security"

_spec = importlib.util.spec_from_file_location(
    "alert_consistency", ROOT / "bench" / "alert_consistency.py"
)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["alert_consistency"] = bench
_spec.loader.exec_module(bench)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/datasets"),
]


@functools.cache
def compared(name: str, tmp: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    rel, fmt, year = bench.CASES[name]
    row, diffs = bench.compare_case(name, DATA / rel, fmt, year, Path(tmp) / name, 10.0)
    return row, tuple(diffs)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("consistency"))


@pytest.mark.parametrize("name", list(bench.CASES))
def test_replay_at_any_speed_and_a_file_run_give_the_same_alerts(name: str, work: str) -> None:
    row, diffs = compared(name, work)
    assert row["paced_seconds"] >= 10.0  # the paced replay really took its time
    assert row["alerts"] > 0
    assert not diffs, "\n".join(diffs[:20])


def test_two_runs_of_the_demo_deliver_the_same_notifications(tmp_path: Path) -> None:
    row, diffs = bench.compare_demo(tmp_path)
    assert row["notifications"] > 0
    assert not diffs, "\n".join(diffs[:20])


def _alerts(work: str, name: str) -> list[dict[str, Any]]:
    f = Path(work) / name / "max" / "alerts.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()]


def test_one_nmap_scanner_pages_a_responder_at_most_five_times(work: str) -> None:
    row, _ = compared("nmap", work)
    assert 1 <= row["notifications"] <= 5
    scans = [a for a in _alerts(work, "nmap") if a["labels"]["alertname"] == "port_scan"]
    assert [a["labels"]["entity"] for a in scans] == ["172.16.1.11"]  # one alert, all scans
    ann = scans[0]["annotations"]
    # What was involved at the start: a ping sweep of 20 hosts, each named with its count.
    assert ann["evidence_scans"] == "ping_sweep (20)"
    assert len(ann["evidence_hosts"].split(", ")) == 10  # the top 10 of the 20


@pytest.mark.parametrize("day", ["ctu_day1", "ctu_day2"])
def test_each_wide_scanner_raises_one_alert_per_day(day: str, work: str) -> None:
    compared(day, work)
    folder = (DATA / bench.CASES[day][0]).parent
    with (folder / "malicious_sources_summary.csv").open() as fh:
        wide = {r["src"] for r in csv.DictReader(fh) if int(r["n_distinct_dst_ports"]) >= 20}
    per_source: dict[str, int] = {}
    for a in _alerts(work, day):
        if a["labels"]["alertname"] == "port_scan":
            e = a["labels"]["entity"]
            per_source[e] = per_source.get(e, 0) + 1
    assert wide and {ip: per_source.get(ip, 0) for ip in wide} == dict.fromkeys(wide, 1)


def test_every_hot_issue_episode_of_the_airline_tweets_is_its_own_alert() -> None:
    from tests.test_media import airline_replay, episodes

    dets = airline_replay("sample", "match_all")
    eng = AlertEngine(Route(receiver="ops", group_by=("feed", "entity")))
    for d in dets:
        a = alert_from_detection(d)
        eng.add(Observation(a["labels"], a["annotations"], d.ts, d.start, d.hold_s, d.domain))
    eng.finish()
    fired = [t for t in eng.drain_transitions() if t.new == "firing"]
    hot = [t for t in fired if t.labels["alertname"] == "media_hot_issue"]
    want = [k for k in episodes(dets) if k[0] == "media_hot_issue"]
    assert len(want) > 1
    assert sorted(t.alert["startsAt"] for t in hot) == sorted(
        alert_from_detection(next(d for d in dets if (d.kind, d.entity, d.start) == k))["startsAt"]
        for k in want
    )
