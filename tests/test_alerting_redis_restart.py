"""Alert state in a Redis that restarts mid-run (AOF on): an outage delays alerts, never
drops them, and the receiver accepts each alert exactly once.

A real ``redis-server`` (append-only file, fsync always) holds state and outbox; a real
HTTP receiver de-duplicates by ``Idempotency-Key``. A feeder thread plays the bytewax
worker (detections through :class:`AlertingSink`) while the service's own ticker and
delivery threads run, and the server is stopped and started twice underneath them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from vigil.flows.alerting_wiring import _redis_client
from vigil.sinks.alerting.delivery import WebhookIntegration
from vigil.sinks.alerting.engine import AlertEngine, HybridClock
from vigil.sinks.alerting.outbox import RedisOutbox, RetryPolicy
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.service import AlertingService, AlertingSink
from vigil.sinks.alerting.store import RedisStore

from tests.conftest import AofRedisServer, HttpReceiver
from vigil.records import Detection

T0 = 1_704_067_200.0  # event time of the first detection (a replay of old logs)
N = 120  # distinct entities, one alert each
PERIOD_S = 0.04  # one detection every PERIOD_S: the feed lasts ~5 s, across two restarts


def det(i: int) -> Detection:
    entity = f"198.51.{i // 256}.{i % 256}"
    return Detection(
        kind="ssh_brute_force",
        entity=entity,
        severity="high",
        ts=T0 + i,
        observed=5.0,
        threshold=5.0,
        summary=f"brute force from {entity}",
        description="5 failures",
        window_s=600.0,
    )


def make_service(
    url: str, hook: str, fired: list[dict[str, Any]], group_by: tuple[str, ...] = ("entity",)
) -> AlertingService:
    client = _redis_client(url)  # the production client (timeouts, redis-py retries)
    prefix = "restart"
    engine = AlertEngine(
        Route(receiver="ops", group_by=group_by, group_wait=0.2, group_interval=0.5),
        clock=HybridClock(),  # the flows' clock
        keep_firing_for_s=300,
    )
    return AlertingService(
        engine,
        RedisStore(client, prefix=prefix),
        RedisOutbox(client, prefix=prefix),
        integrations={"ops": [WebhookIntegration(hook, timeout_s=2)]},
        on_alert=fired.append,
        registry=CollectorRegistry(),
        policy=RetryPolicy(max_attempts=100, base_s=0.2, max_s=1.0),
        lease_s=3,
        poll_s=0.05,
        tick_s=0.1,
        drain_timeout_s=30,
    )


def delivered(rx: HttpReceiver) -> Counter[str]:
    """Accepted firing alerts by entity (a resolve notice is not an alert)."""
    return Counter(
        a["labels"]["entity"]
        for body in rx.accepted
        for a in orjson.loads(body)["alerts"]
        if a["status"] == "firing"
    )


def test_redis_restarts_delay_alerts_and_lose_none(
    aof_redis: AofRedisServer, http_receiver: HttpReceiver
) -> None:
    fired: list[dict[str, Any]] = []
    sink = AlertingSink(lambda: make_service(aof_redis.url, http_receiver.url, fired))
    part = sink.build("alerts", 0, 1)
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for i in range(N):
                part.write_batch([det(i)])  # never raises: a sink must not stop the flow
                time.sleep(PERIOD_S)
        except BaseException as ex:  # surfaced below
            errors.append(ex)

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    feeder.start()
    try:
        for _ in range(2):
            time.sleep(1.2)
            aof_redis.stop()  # SIGTERM: the AOF keeps every acknowledged write
            time.sleep(1.0)  # the feed, the ticker and the delivery threads all see it down
            aof_redis.start()
        feeder.join(timeout=60)
        assert not feeder.is_alive() and not errors, errors
        want = {det(i).entity for i in range(N)}
        deadline = time.monotonic() + 60
        while set(delivered(http_receiver)) < want and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # anything late (a duplicate) would show up now
    finally:
        part.close()  # the last partition: flush, drain, close
    got = delivered(http_receiver)
    assert sorted(want - set(got)) == [], "alerts lost across the restarts"
    assert {e: n for e, n in got.items() if n > 1} == {}, "alerts accepted twice"
    assert Counter(a["labels"]["entity"] for a in fired) == Counter(want)  # alerts file too


def test_redis_down_between_outbox_and_state_loses_no_alert(
    aof_redis: AofRedisServer, http_receiver: HttpReceiver
) -> None:
    """Redis stops just as a step commits a group's notification (the window between
    storing the outbox item and the state that says it was decided); three more alerts of
    the group arrive while it is down. Each must still reach the receiver.

    Before the fix the item was stored and the state was not: the re-decided notification
    had the same idempotency key and the three new alerts too, the outbox kept the old
    item, and the three were recorded as notified but never sent."""
    fired: list[dict[str, Any]] = []
    svc = make_service(aof_redis.url, http_receiver.url, fired, group_by=("alertname",))
    svc.start()
    armed = threading.Event()
    commit = svc.store.commit

    def commit_then_fault(changes: Any, *args: Any, **kw: Any) -> int:
        if armed.is_set() and changes.nflog:  # a notification is being committed
            armed.clear()
            aof_redis.stop()  # a real outage, at this exact point
        return commit(changes, *args, **kw)

    svc.store.commit = commit_then_fault  # type: ignore[method-assign]

    def entities() -> set[str]:
        return {
            a["labels"]["entity"]
            for body in http_receiver.accepted
            for a in orjson.loads(body)["alerts"]
            if a["status"] == "firing"
        }

    try:
        svc.observe([det(0)])  # the group's first notification goes through
        http_receiver.wait_for(1, timeout=10)
        armed.set()
        svc.observe([det(1)])  # its notification is decided by a timer step: Redis stops
        deadline = time.monotonic() + 10
        while aof_redis.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not aof_redis.running
        svc.observe([det(2), det(3), det(4)])  # raised during the outage
        time.sleep(1.0)
        aof_redis.start()
        want = {det(i).entity for i in range(5)}
        deadline = time.monotonic() + 30
        while not want <= entities() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        svc.close()
    assert sorted(want - entities()) == [], "alerts lost across the outage"
    seqs = [orjson.loads(b)["sequence"] for b in http_receiver.accepted]
    assert len(seqs) == len(set(seqs)), f"a notification accepted twice: {seqs}"
    assert Counter(a["labels"]["entity"] for a in fired) == Counter(want)


def test_redis_down_at_the_commit_of_a_new_alert_writes_its_line_once(
    aof_redis: AofRedisServer, http_receiver: HttpReceiver
) -> None:
    """Redis stops just as the step that fired an alert commits (its alerts-file line is
    already written). The step is retried after the restart and fires the alert again in
    memory; the alerts file must still hold it once, as the receiver does."""
    fired: list[dict[str, Any]] = []
    svc = make_service(aof_redis.url, http_receiver.url, fired)
    svc.start(threads=False)
    commit = svc.store.commit
    faults = {"left": 1}

    def fault_after_the_line(changes: Any, *args: Any, **kw: Any) -> int:
        if faults["left"] and any(a["labels"]["entity"] == det(1).entity for a in fired):
            faults["left"] = 0
            aof_redis.stop()  # a real outage, after the line and before the commit
        return commit(changes, *args, **kw)

    svc.store.commit = fault_after_the_line  # type: ignore[method-assign]
    try:
        assert svc.observe([det(0)]) == 1
        svc.observe([det(1)])  # its step fails at the commit: kept for a retry
        assert not aof_redis.running and faults["left"] == 0
        aof_redis.start()
        deadline = time.monotonic() + 30
        while not svc.run_step() and time.monotonic() < deadline:  # the retry
            time.sleep(0.2)
        svc.observe([det(2)])
    finally:
        svc.close()
    got = Counter(a["labels"]["entity"] for a in fired)
    assert got == Counter(det(i).entity for i in range(3)), got
