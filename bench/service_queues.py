"""Public-service queue flow on real data: what it finds, and how fast.

Replays Boston 311 Q1 2015 and LA MyLA311 (27 Dec 2017 - 4 Jan 2018) from
``../shared/datasets/service_queues`` through the whole bytewax flow with the shipped
example configurations, prints each detection episode (kind, agency, service, start, end,
how many re-emissions, first explanation), checks the known events, and measures events/s
of the flow beside a plain Python loop that does the minimum for the same figures (hash
the id, dict of open requests, per-agency hourly counts, no deadlines timers, no
detectors, no bytewax), and the ratio of the two, both timed in the same run. Both are
timed in CPU seconds of this process (``time.process_time``), so the figures are events
per CPU-second and do not depend on what else the machine runs. Ends with one JSON line;
``queue_events_per_s`` and ``queue_ratio_to_loop`` are the Boston figures.

    python bench/service_queues.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from bytewax.testing import TestingSink, TestingSource, run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vigil.flows.config import parse_config  # noqa: E402
from vigil.flows.queues.config import ServiceQueuesConfig  # noqa: E402
from vigil.flows.queues.flow import build_flow, make_sources  # noqa: E402
from vigil.flows.queues.records import QueueEvent  # noqa: E402

from vigil.records import Detection  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "service_queues"
SETS = {
    "boston311": (
        "boston311.yaml",
        DATA / "boston_311_2015q1" / "boston_311_2015Q1.csv",
        "America/New_York",
    ),
    "la311": (
        "la311.yaml",
        DATA / "la_myla311_2017-12-27_2018-01-04" / "la_myla311_2017-12-27_2018-01-04.csv",
        "America/Los_Angeles",
    ),
}


def config(name: str) -> ServiceQueuesConfig:
    file, path, _tz = SETS[name]
    raw = yaml.safe_load((ROOT / "examples" / file).read_text())
    raw["service_queues"]["inputs"][0]["paths"] = [str(path)]
    return parse_config(raw).service_queues


def run_flow(cfg: ServiceQueuesConfig, items: list[Any]) -> tuple[list[Detection], float]:
    dets: list[Detection] = []
    sink: list[Any] = []
    flow = build_flow(
        cfg,
        [TestingSource(items, batch_size=2000)],
        TestingSink(dets),
        TestingSink(sink),
        TestingSink(sink),
    )
    t = time.process_time()
    run_main(flow)
    return dets, time.process_time() - t


def plain_loop(items: list[Any], window_s: float) -> float:
    """The least work that gives arrivals, completions and backlog per agency and hour."""
    t = time.process_time()
    open_: dict[str, tuple[str, float]] = {}
    counts: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0, 0, 0])
    backlog: dict[str, int] = defaultdict(int)
    for ev in items:
        if type(ev) is not QueueEvent:
            continue
        b = ev.ts - ev.ts % window_s
        if ev.kind == "received":
            open_[ev.rid] = (ev.agency, ev.ts)
            backlog[ev.agency] += 1
            counts[(ev.agency, b)][0] += 1
        elif ev.kind == "closed":
            if open_.pop(ev.rid, None) is not None:
                backlog[ev.agency] -= 1
            c = counts[(ev.agency, b)]
            c[1] += 1
            c[2] = backlog[ev.agency]
    return time.process_time() - t


def episodes(dets: list[Detection], tz: ZoneInfo) -> list[dict[str, Any]]:
    """One line per episode: same kind, agency, service and start (``since``)."""
    eps: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for d in dets:
        ex = dict(d.extra)
        key = (d.kind, d.entity, ex.get("service", ""), ex["since"])
        e = eps.get(key)
        if e is None:
            e = eps[key] = {
                "kind": d.kind,
                "agency": d.entity,
                "service": ex.get("service", ""),
                "start": datetime.fromtimestamp(d.ts, tz=tz).strftime("%Y-%m-%d %H:%M"),
                "end": "",
                "windows": 0,
                "why": d.description,
            }
        e["windows"] += 1
        e["end"] = datetime.fromtimestamp(d.ts, tz=tz).strftime("%Y-%m-%d %H:%M")
    return sorted(eps.values(), key=lambda e: e["start"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timing runs (best is kept)")
    ap.add_argument("--all", action="store_true", help="print every episode (default: agency)")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"missing {DATA}", file=sys.stderr)
        return 2
    figures: dict[str, Any] = {}
    for name, (_file, _path, tzname) in SETS.items():
        cfg = config(name)
        tz = ZoneInfo(tzname)
        t = time.perf_counter()
        items = make_sources(cfg)[0].load()  # type: ignore[attr-defined]
        load_s = time.perf_counter() - t
        n = sum(1 for x in items if type(x) is QueueEvent)
        best_flow = best_plain = float("inf")
        dets: list[Detection] = []
        for _ in range(args.repeat):
            dets, secs = run_flow(cfg, items)
            best_flow = min(best_flow, secs)
            best_plain = min(best_plain, plain_loop(items, cfg.window_s))
        eps = episodes(dets, tz)
        print(
            f"\n== {name}: {n:,} events (read + map {load_s:.2f} s), {len(dets)} detections "
            f"in {len(eps)} episodes"
        )
        for e in eps:
            if e["service"] and not args.all:
                continue
            print(
                f"  {e['start']} .. {e['end'][11:]:5}  {e['kind']:20} {e['agency']:6} "
                f"x{e['windows']:<3} {e['why'][:120]}"
            )
        svc = [e for e in eps if e["service"]]
        if svc and not args.all:
            print(f"  (+ {len(svc)} service-level episodes; --all prints them)")
            for e in svc:
                if "Snow" in e["service"] or name == "la311":
                    print(
                        f"  {e['start']} .. {e['end'][11:]:5}  {e['kind']:20} {e['agency']:6} "
                        f"{e['service'][:40]:40} x{e['windows']}"
                    )
        figures[name] = {
            "events": n,
            "detections": len(dets),
            "episodes": len(eps),
            "flow_events_per_s": round(n / best_flow),
            "plain_loop_events_per_s": round(n / best_plain),
            "flow_s": round(best_flow, 3),
            "plain_loop_s": round(best_plain, 4),
        }
        ratio = best_plain / best_flow  # flow speed over the plain loop's, same run
        figures[name]["ratio_to_loop"] = round(ratio, 4)
        print(
            f"  throughput per CPU-second: flow {n / best_flow:,.0f} events/s, plain loop "
            f"{n / best_plain:,.0f} events/s (best of {args.repeat}); the flow runs at "
            f"{ratio:.1%} of the plain loop's speed"
        )
        if name == "boston311":
            days = {(e["kind"], e["agency"], e["service"], e["start"][5:10]) for e in eps}
            figures[name]["snow_surge_27_28_jan"] = any(
                k == "service_arrival_surge"
                and a == "PWDx"
                and "Snow" in s
                and d in ("01-27", "01-28")
                for k, a, s, d in days
            )
            figures[name]["overdue_rise_2_8_feb"] = sorted(
                {
                    a
                    for e in eps
                    for a in [e["agency"]]
                    if e["kind"] == "overdue_share"
                    and e["start"][5:10] <= "02-08"
                    and e["end"][5:10] >= "02-02"
                }
            )
        else:
            figures[name]["surge_after_new_year"] = any(
                e["kind"] == "arrival_surge" and e["start"][5:10] == "01-02" for e in eps
            )
            figures[name]["backlog_growth_new_year"] = sorted(
                {
                    e["agency"]
                    for e in eps
                    if e["kind"] == "backlog_growth" and e["start"][5:10] in ("01-01", "01-02")
                }
            )
    boston = figures["boston311"]
    print(
        json.dumps(
            {
                "bench": "service_queues",
                "queue_events_per_s": boston["flow_events_per_s"],
                "queue_ratio_to_loop": boston["ratio_to_loop"],
                **figures,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
