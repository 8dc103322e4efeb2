"""Webhook deliveries of a media run killed with SIGKILL, with its alert state in Redis.

``vigil run media`` reads the airline tweets from the bus (a real ``redis-server``), keeps
its alert state and outbox in the same Redis, and delivers to a real HTTP receiver on
127.0.0.1. It is killed three times mid-stream and restarted from its recovery directory.
Each restart resumes the flow from its last bytewax snapshot, so it sends again the
detections made since; the alert state in Redis has already seen them. What the receiver
must get, compared with the alerts of an uninterrupted run:

- every alert (``dedup_key``: one per episode) at least once;
- no alert announced as new (``status`` firing, not an update) under more than one
  ``Idempotency-Key``. The same key arriving twice is the at-least-once window of
  delivery (the receiver drops it); a new key for the same announcement is a second
  page to a human.

``kills=0`` is the control: the same run uninterrupted (before the fix it too announced
alerts several times and missed some: a live engine over last month's posts ended every
episode at once on the wall clock, and applied an entity's next episode before the
previous one's group was flushed). tests/test_bus_media.py checks the alerts file of the
same kind of run.
"""

from __future__ import annotations

import collections
import contextlib
import json
from pathlib import Path

import pytest
import redis
from conftest import AofRedisServer, HttpReceiver, RedisServer
from test_bus_feeds import FeedRun, Producer, all_read, kill_loop
from test_bus_feeds import write as write_bus
from test_bus_media import FIELDS, FULL, media_section, run_media
from test_faults import _jsonl, wait_until
from vigil.flows.media.flow import item_time
from vigil.flows.media.inputs import post_lines
from vigil.sinks.alerting.engine import AlertEngine
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.store import MemoryStore, RedisStore

needs_data = pytest.mark.skipif(not FULL.exists(), reason="../shared/datasets not present")


@pytest.mark.parametrize("kind", ["redis", "folder"])
def test_a_group_emptied_and_opened_again_in_one_step_survives_a_restart(
    redis_server: RedisServer, tmp_path: Path, kind: str
) -> None:
    """One step resolves an entity's last alert (its group is deleted) and fires a new
    alert of the same entity (the same group key, created again): the store must keep
    the new group, or after a restart the new alert is never notified."""
    redis_server.flushall()
    client = redis.Redis.from_url(redis_server.url)

    def store() -> RedisStore | MemoryStore:
        return RedisStore(client) if kind == "redis" else MemoryStore(tmp_path / "st")

    def engine() -> AlertEngine:
        return AlertEngine(Route(receiver="ops", group_by=("entity",), group_wait=30))

    eng, st = engine(), store()
    eng.observe({"alertname": "x", "entity": "e", "feed": "f"}, {}, 1000.0, hold_s=300, domain="f")
    eng.progress("f", "rules", 1030.0)
    assert [n.reason for n in eng.tick()] == ["first_notification"]
    st.commit(eng.drain_changes())
    # x ends at 1300, its resolve empties the group at 1330; y fires at 1400.
    eng.observe({"alertname": "y", "entity": "e", "feed": "f"}, {}, 1400.0, hold_s=300, domain="f")
    eng.progress("f", "rules", 1400.0)
    assert [n.reason for n in eng.tick()] == ["all_resolved"]
    st.commit(eng.drain_changes())
    st.close()

    restarted = engine()
    restarted.load(store().load(), resume=True)
    restarted.progress("f", "rules", 1430.0)
    notes = restarted.tick()
    assert [(n.reason, [a["labels"]["alertname"] for a in n.alerts]) for n in notes] == [
        ("first_notification", ["y"])
    ]


def announced(rx: HttpReceiver) -> dict[str, set[str]]:
    """``dedup_key`` -> the Idempotency-Keys of accepted requests announcing it as new."""
    out: dict[str, set[str]] = collections.defaultdict(set)
    for r in rx.requests:
        if r.status is None or not 200 <= r.status < 300:
            continue
        for a in r.json()["alerts"]:
            if a["status"] == "firing" and not a["update"]:
                out[a["dedup_key"]].add(r.headers["idempotency-key"])
    return out


def delivered(rx: HttpReceiver) -> set[str]:
    """Every ``dedup_key`` the receiver accepted, in any status."""
    return {
        a["dedup_key"]
        for r in rx.requests
        if r.status is not None and 200 <= r.status < 300
        for a in r.json()["alerts"]
    }


def test_a_live_engine_reading_a_backlog_keeps_event_time_episodes() -> None:
    """Live inputs holding old events (a bus with last month's posts, a restart catching
    up): each episode is one alert, notified once, however far the wall clock is ahead,
    and an entity's next episode does not replace one that was never notified."""
    wall = [2_000_000_000.0]
    eng = AlertEngine(
        Route(receiver="ops", group_by=("entity",), group_wait=30, group_interval=300),
        live=True,
        wall=lambda: wall[0],
    )
    told: list[tuple[str, str, bool]] = []

    def see(entity: str, ts: float, start: float) -> None:
        labels = {"alertname": "x", "entity": entity, "feed": "f"}
        eng.observe(labels, {}, ts, start=start, hold_s=3900, domain="f")
        for n in eng.tick():
            told.extend((a["dedup_key"], a["status"], a["update"]) for a in n.alerts)

    t0 = 1_424_000_000.0
    see("a", t0, t0)
    see("a", t0 + 3600, t0)  # the same episode, re-reported an hour on
    see("b", t0 + 30_000, t0 + 30_000)  # another entity, hours on: a's episode ends
    see("a", t0 + 30_000, t0 + 30_000)  # a's next episode
    wall[0] += 100_000  # quiet: the wall clock ends the rest
    for n in eng.tick():
        told.extend((a["dedup_key"], a["status"], a["update"]) for a in n.alerts)
    firsts = [k for k, status, update in told if status == "firing" and not update]
    assert sorted(k.split("@")[1] for k in firsts) == sorted(
        str(int(t)) for t in (t0, t0 + 30_000, t0 + 30_000)
    )
    assert len(set(firsts)) == 3  # a's two episodes and b's, each announced once
    assert sum(status == "resolved" for _, status, _ in told) == 3


@needs_data
@pytest.mark.parametrize("kills", [0, 3])
def test_media_run_killed_delivers_every_alert_once_to_the_webhook(
    kills: int,
    aof_redis: AofRedisServer,
    http_receiver: HttpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vigil.sinks.alerts import alert_from_detection

    posts = tmp_path / "posts.csv"
    posts.write_bytes(FULL.read_bytes())
    with posts.open("a", encoding="utf-8", newline="") as f:  # closes every bucket
        f.write("2015-02-27T00:00:00.000Z,1,neutral,,Delta,a quiet day at last,\n")
    lines = post_lines([(str(posts), "csv")], lambda r: item_time(r, FIELDS))
    write_bus(aof_redis.url, "expected", lines)
    dets, _, _ = run_media(
        media_section(kind="redis_stream", url=aof_redis.url, stream="expected"),
        until_empty=True,
    )
    expected = {alert_from_detection(d)["dedup_key"] for d in dets}
    assert len(expected) >= 40

    monkeypatch.setenv("VIGIL_WEBHOOK_SECRET", "test-secret")
    body = media_section(kind="redis_stream", url=aof_redis.url, stream="m", batch_size=200)
    cfg = {
        "media": body,
        "metrics": {"port": 0},
        "alerts": {
            "file": str(tmp_path / "alerts.jsonl"),
            "webhook": {"url": http_receiver.url, "timeout_s": 5},
        },
        "dead_letters": {"file": str(tmp_path / "dead.jsonl")},
        "alerting": {"state": {"redis_url": aof_redis.url}},
    }
    path = tmp_path / "vigil.yaml"
    path.write_text(json.dumps(cfg))
    run = FeedRun("media", path, tmp_path)
    try:
        at_kill = kill_loop(
            run, Producer(aof_redis.url, "m", lines, duration_s=8), kills=kills, seed=6
        )
        if kills:
            # Killed mid-stream (a slow start on a loaded machine may put one kill before
            # the first read).
            assert max(at_kill) > 0 and at_kill[-1] < len(lines), at_kill
        wait_until(lambda: all_read(aof_redis.url, "m:0", len(lines)), 120, "every entry read")
        wait_until(
            lambda: {a["dedup_key"] for a in _jsonl(tmp_path / "alerts.jsonl")} >= expected,
            60,
            "every alert in the file",
        )
        with contextlib.suppress(AssertionError):  # reported below, with what was missed
            wait_until(lambda: delivered(http_receiver) >= expected, 60, "every alert delivered")
        run.stop()
        fired = {a["dedup_key"] for a in _jsonl(tmp_path / "alerts.jsonl")}
        assert fired == expected
        missing = expected - delivered(http_receiver)
        assert not missing, f"{len(missing)} of {len(expected)} alerts never delivered"
        again = {k: len(v) for k, v in announced(http_receiver).items() if len(v) > 1}
        assert not again, f"announced under several Idempotency-Keys: {again}"
        assert set(announced(http_receiver)) <= expected  # nothing the run did not alert
    finally:
        run.stop()
