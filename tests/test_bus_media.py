"""The media feed on the bus (Redis Streams), on real tweets.

``vigil ingest --feed media`` writes recorded posts into a real ``redis-server``; the
media flow reading them must give what reading the file gives: the same detections, dead
letters and mention counts. Then ``vigil run media`` is killed with SIGKILL mid-stream and
restarted from its recovery directory: every alert of an uninterrupted run is delivered,
once, and every bad post is dead-lettered. (The shared helpers and the kill loop are
those of the other feeds, tests/test_bus_feeds.py; this file keeps that one short.)

Data: airline tweets of February 2015 (``shared/datasets/media``; the demo's sample of
20-22 February for the quick tests).
"""

from __future__ import annotations

import collections
import csv
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, run_main
from conftest import AofRedisServer, RedisServer
from test_bus import _UntilEmpty
from test_bus_feeds import DATA, ROOT, FeedRun, Producer, _vigil, all_read, feed_config, kill_loop
from test_bus_feeds import write as write_bus
from test_faults import _jsonl, wait_until
from vigil.flows.config import parse_config
from vigil.flows.media.flow import build_flow, item_time
from vigil.flows.media.inputs import make_media_sources, post_lines
from vigil.flows.media.records import MediaTally

from vigil.records import DeadLetter, Detection

SAMPLE = ROOT / "flows" / "demo_data" / "media" / "airline_tweets_sample.csv"
FULL = (
    DATA
    / "media"
    / "airline_twitter_mentions_2015-02"
    / "airline_mentions_2015-02-17_2015-02-24.csv"
)
FIELDS = {"published_at": "created_at_utc", "id": "tweet_id"}
AIRLINES = {
    "united": "@united",
    "usairways": "@USAirways",
    "american": "@AmericanAir",
    "southwest": "@SouthwestAir",
    "jetblue": "@JetBlue",
    "virgin": "@VirginAmerica",
}

pytestmark = pytest.mark.skipif(not FULL.exists(), reason="../shared/datasets not present")


def media_section(**inp: Any) -> dict[str, Any]:
    """The airline configuration (every airline watched) with one input, ``inp``."""
    return {
        "inputs": [{"name": "twitter", "language": "en", "fields": FIELDS, **inp}],
        "watch": [{"id": k, "aliases": [a]} for k, a in AIRLINES.items()],
        "stories_file": None,
    }


def with_bad_rows(src: Path, dst: Path, fmt: str, seed: int) -> set[str]:
    """``src``'s tweets (as CSV or JSON lines) with rows the flow must dead-letter spread
    over them; returns the ids of the bad rows that carry one."""
    with src.open(encoding="utf-8", newline="") as f:
        rows: list[Any] = list(csv.DictReader(f))
    rng = random.Random(seed)
    ids = set()
    for k in range(30):
        tid = f"bad-{k}"
        ids.add(tid)
        ts = ["", "not a time", "2015-02-21T10:00:00"][k % 3]  # missing, bad, no zone
        rows.insert(rng.randrange(len(rows)), {**rows[0], "created_at_utc": ts, "tweet_id": tid})
    if fmt == "csv":
        with dst.open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        for k in range(6):  # lines that are no post at all
            rows.insert(rng.randrange(len(rows)), "{not json" if k % 2 else "[1, 2]")
        with dst.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return ids


def run_media(section: dict[str, Any], until_empty: bool) -> tuple[list[Any], list[Any], list[Any]]:
    cfg = parse_config({"media": section}).media
    srcs = make_media_sources(cfg, item_time, environ={})
    if until_empty:
        srcs = [_UntilEmpty(s) for s in srcs]  # type: ignore[arg-type, misc]
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    tele: list[Any] = []
    flow = build_flow(
        cfg, srcs, TestingSink(dets), TestingSink(dead), TestingSink(tele), environ={}
    )
    run_main(flow)
    return dets, dead, tele


def det_key(d: Detection) -> tuple[Any, ...]:
    return (d.kind, d.entity, d.ts, d.start, d.observed, d.threshold, d.extra)


def counts(tele: list[Any]) -> tuple[collections.Counter[Any], collections.Counter[Any]]:
    """Mentions by (entity, source, sentiment) and items by (source, story|copy)."""
    mentions: collections.Counter[Any] = collections.Counter()
    items: collections.Counter[Any] = collections.Counter()
    for t in tele:
        if isinstance(t, MediaTally):
            mentions.update(t.mentions)
            items.update(t.items)
    return mentions, items


def dead_key(d: DeadLetter) -> tuple[str, str, str, str]:
    return (d.step, d.reason, d.fmt, d.origin)


# ---------------------------------------------------------------- same as the file
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_media_posts_from_the_bus_give_the_results_of_the_file(
    redis_server: RedisServer, tmp_path: Path, fmt: str
) -> None:
    posts = tmp_path / f"posts.{fmt}"
    with_bad_rows(SAMPLE, posts, fmt, seed=11)
    direct = run_media(
        media_section(kind="replay", paths=[str(posts)], format=fmt), until_empty=False
    )
    bus = media_section(kind="redis_stream", url=redis_server.url, stream=f"m{fmt}")
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(json.dumps({"media": bus}))
    opt = "--csv" if fmt == "csv" else "--json"
    r = _vigil(
        "ingest", "--to", redis_server.url, "--feed", "media", "-c", str(cfg), "--stream",
        f"m{fmt}", opt, str(posts),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stderr.strip().splitlines()[-1])["summary"]
    got = run_media(bus, until_empty=True)
    dets, dead, tele = direct
    assert summary["written"] == sum(counts(tele)[1].values()) + len(dead)
    assert len(dets) >= 10 and {d.kind for d in dets} >= {"media_story", "media_negative_surge"}
    assert sorted(map(det_key, got[0])) == sorted(map(det_key, dets))
    reasons = collections.Counter(map(dead_key, dead))
    assert collections.Counter(map(dead_key, got[1])) == reasons
    assert {r for _, r, _, _ in reasons} >= {"missing field: published_at", "bad timestamp"}
    assert counts(got[2]) == counts(tele)


def test_ingest_sends_a_files_posts_in_event_time_order(tmp_path: Path) -> None:
    """Posts out of order in the file go out in the order a replay reads them."""
    rows = [
        {"created_at_utc": "2015-02-20T10:00:00Z", "tweet_id": "b", "text": "later"},
        {"created_at_utc": "2015-02-20T09:00:00Z", "tweet_id": "a", "text": "earlier"},
        {"created_at_utc": "", "tweet_id": "c", "text": "no time: stays after a"},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "[1]\n")
    lines = post_lines([(str(path), "jsonl")], lambda r: item_time(r, FIELDS))
    texts = [x.text for x in lines]
    assert [json.loads(t) for t in texts] == [rows[1], rows[2], [1], rows[0]]
    assert [x.fmt for x in lines] == ["json"] * 4  # "[1]" as it was: the flow dead-letters it


# ---------------------------------------------------------------- SIGKILL and restart
def test_media_feed_killed_mid_stream_loses_nothing(
    aof_redis: AofRedisServer, tmp_path: Path
) -> None:
    from vigil.sinks.alerts import alert_from_detection

    posts = tmp_path / "posts.csv"
    bad = with_bad_rows(FULL, posts, "csv", seed=5)
    # A last post two days on closes every open bucket by event time, as live time would;
    # an uninterrupted run (to the end of its input) then alerts what a live run does.
    with posts.open("a", encoding="utf-8", newline="") as f:
        f.write("2015-02-27T00:00:00.000Z,1,neutral,,Delta,a quiet day at last,\n")
    lines = post_lines([(str(posts), "csv")], lambda r: item_time(r, FIELDS))
    write_bus(aof_redis.url, "expected", lines)
    dets, dead, _ = run_media(
        media_section(kind="redis_stream", url=aof_redis.url, stream="expected"),
        until_empty=True,
    )
    # One alert per episode of a kind and entity, with the value its episode started at
    # (a count: a post counted twice, or lost, would change it).
    expected = {alert_key(alert_from_detection(d)) for d in dets}
    assert len(expected) >= 40 and len(dead) == len(bad)

    body = media_section(kind="redis_stream", url=aof_redis.url, stream="m", batch_size=200)
    run = FeedRun("media", feed_config(tmp_path, "media", body), tmp_path)

    def fired() -> list[tuple[str, ...]]:
        return [alert_key(a) for a in _jsonl(tmp_path / "alerts.jsonl") if not a["update"]]

    def dead_ids() -> set[str]:
        return {
            d["payload"].split("'tweet_id': '")[1].split("'")[0]
            for d in _jsonl(tmp_path / "dead.jsonl")
        }

    try:
        at_kill = kill_loop(run, Producer(aof_redis.url, "m", lines, duration_s=8), kills=3, seed=6)
        assert at_kill[0] > 0 and at_kill[-1] < len(lines), at_kill  # killed mid-stream
        wait_until(lambda: all_read(aof_redis.url, "m:0", len(lines)), 120, "every entry read")
        wait_until(
            lambda: dead_ids() == bad and set(fired()) >= expected, 60, "every post accounted"
        )
        time.sleep(1.0)  # anything extra would show up now
        # The alerts file is at-least-once: a resumed epoch may write an alert again, with
        # the same dedup_key and values; no alert differs from the uninterrupted run's.
        assert set(fired()) == expected
        assert dead_ids() == bad
    finally:
        run.stop()


def alert_key(a: dict[str, Any]) -> tuple[str, ...]:
    labels, ann = a["labels"], a["annotations"]
    return (a["dedup_key"], labels["alertname"], labels["entity"], ann["value_at_start"])
