"""Delivery through the outbox to real receivers: an HTTP receiver on loopback, a real
redis-server for state and outbox, and a real prometheus-alertmanager."""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry
from vigil.sinks.alerting.delivery import WebhookIntegration
from vigil.sinks.alerting.dispatcher import Dispatcher
from vigil.sinks.alerting.engine import AlertEngine, ManualClock
from vigil.sinks.alerting.model import Notification
from vigil.sinks.alerting.outbox import OutboxItem, RedisOutbox, RetryPolicy
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.service import AlertingService
from vigil.sinks.alerting.store import RedisStore
from vigil.sinks.alertmanager_push import AlertmanagerPush
from vigil.sinks.grafana_annotations import GrafanaAnnotations
from vigil.sinks.pagerduty import PagerDutyIntegration
from vigil.sinks.slack import SlackIntegration
from vigil.sinks.webhook import verify_signature

from tests.conftest import HttpReceiver, RedisServer
from vigil.records import Detection

# The fixtures come from the ``conftest`` module pytest loaded, which is not the same
# module object as ``tests.conftest``: script replies with that module's Reply class.
Reply = sys.modules.get("conftest", sys.modules["tests.conftest"]).Reply  # type: ignore[attr-defined]

SECRET = b"delivery-test-secret"
T0 = 1_700_000_000.0


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def det(entity: str, ts: float, kind: str = "ssh_brute_force", severity: str = "high") -> Detection:
    return Detection(
        kind=kind,
        entity=entity,
        severity=severity,
        ts=ts,
        observed=10.0,
        threshold=5.0,
        summary=f"{kind} from {entity}",
        description=f"10 failures from {entity} (threshold 5)",
        window_s=600.0,
    )


def note(i: int = 0, status: str = "firing") -> Notification:
    alert = {
        "status": status,
        "labels": {"alertname": "x", "entity": f"e{i}", "severity": "high", "feed": "security"},
        "annotations": {"summary": "S", "description": "D"},
        "startsAt": "2023-11-14T22:13:20Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": f"fp{i}",
    }
    return Notification(
        f"n{i}", "ops", "{}:{}", 1, "first_notification", status, {"alertname": "x"}, (alert,), T0
    )


# ---------------------------------------------------------------------------- retry policy
RETRY_CASES = [
    # (replies, delivered?, attempts) -- Alertmanager's Retrier: 2xx ends, 429/5xx and
    # network errors retry, any other 4xx is final.
    ([200], True, 1),
    ([503, 502, 200], True, 3),  # 5xx: retried
    ([429, 200], True, 2),  # 429: retried
    ([Reply(drop=True), 200], True, 2),  # connection closed: retried
    ([400], False, 1),  # 4xx: never retried, dead at once
    ([404], False, 1),
    ([500, 500, 500], False, 3),  # retry budget (3) spent: dead
]


@pytest.mark.parametrize(("replies", "delivered", "attempts"), RETRY_CASES)
def test_retry_policy(
    replies: list, delivered: bool, attempts: int, r: Any, http_receiver: HttpReceiver
) -> None:
    http_receiver.script(replies)
    ob = RedisOutbox(r, prefix=f"t:{uuid.uuid4().hex[:8]}")
    wh = WebhookIntegration(http_receiver.url, secret=SECRET, timeout_s=2)
    disp = Dispatcher(
        ob, {"ops/0": wh}, policy=RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.02), lease_s=5
    )
    ob.put(wh.render(note(), "ops/0"), time.time())
    deadline = time.monotonic() + 10
    while ob.depth()[0] and time.monotonic() < deadline:
        disp.run_once()
        time.sleep(0.02)
    assert len(http_receiver.requests) == attempts
    assert ob.depth() == ((0, 0) if delivered else (0, 1))
    if not delivered:
        (dead,) = ob.dead_items()
        assert dead.attempts == attempts and dead.last_status == replies[-1]
    keys = {q.headers["idempotency-key"] for q in http_receiver.requests}
    assert len(keys) == 1  # every retry carries the same key
    wh.close()


def test_a_claimed_batch_is_sent_together_and_each_outcome_is_its_own(
    r: Any, http_receiver: HttpReceiver
) -> None:
    # One claim of several items for one webhook: sent at once (one connection each);
    # each answer decides its own item as if it had been sent alone.
    http_receiver.script([200, 503, 400, Reply(drop=True), 200, 200])
    ob = RedisOutbox(r, prefix=f"t:{uuid.uuid4().hex[:8]}")
    wh = WebhookIntegration(http_receiver.url, secret=SECRET, timeout_s=2)
    disp = Dispatcher(
        ob, {"ops/0": wh}, policy=RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.02), lease_s=5
    )
    notes = [dataclasses.replace(note(i), group_key=f"g{i}") for i in range(6)]  # 6 groups
    ob.put([it for n in notes for it in wh.render(n, "ops/0")], time.time())
    assert disp.run_once(limit=16) == 6
    assert len(http_receiver.requests) == 6
    assert ob.depth() == (2, 1)  # 503 and a dropped connection wait for a retry; 400 is dead
    (dead,) = ob.dead_items()
    assert (dead.attempts, dead.last_status, dead.last_reason) == (1, 400, "http_4xx")
    deadline = time.monotonic() + 10
    while ob.depth()[0] and time.monotonic() < deadline:
        disp.run_once()
        time.sleep(0.02)
    assert ob.depth() == (0, 1)
    assert len(http_receiver.accepted) == 5
    for q in http_receiver.requests:
        assert verify_signature(SECRET, q.headers, q.body)
    wh.close()


# ---------------------------------------------------------------------------- the service
def service(r: Any, url: str, clock: ManualClock, **kw: Any) -> AlertingService:
    p = f"t:{uuid.uuid4().hex[:8]}"
    eng = AlertEngine(
        Route(receiver="ops", group_by=("entity",), group_wait=0, group_interval=10),
        clock=clock,
        wall=time.time,
        keep_firing_for_s=10_000,
    )
    return AlertingService(
        eng,
        RedisStore(r, prefix=p),
        RedisOutbox(r, prefix=p),
        integrations={"ops": [WebhookIntegration(url, secret=SECRET, timeout_s=2)]},
        registry=CollectorRegistry(),
        policy=RetryPolicy(max_attempts=100, base_s=0.5, max_s=4.0),
        lease_s=5,
        poll_s=0.1,
        tick_s=0.2,
        **kw,
    )


def test_receiver_down_for_30s_then_back_gets_everything_exactly_once(
    r: Any, http_receiver: HttpReceiver
) -> None:
    clock = ManualClock(T0, follow_events=True)
    svc = service(r, http_receiver.url, clock)
    svc.start()
    try:
        svc.observe([det(f"198.51.100.{i}", T0 + i) for i in range(5)])
        http_receiver.wait_for(5, timeout=10)
        http_receiver.down()  # a real outage: connections refused for 30 s
        svc.observe([det(f"198.51.100.{i}", T0 + i) for i in range(5, 10)])
        time.sleep(15)
        svc.observe([det(f"198.51.100.{i}", T0 + i) for i in range(10, 15)])
        time.sleep(15)
        assert svc.outbox.depth() == (10, 0)  # persisted, retried, none given up
        http_receiver.up()
        deadline = time.monotonic() + 30
        while len(http_receiver.accepted) < 15 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        svc.close()
    bodies = [orjson.loads(b) for b in http_receiver.accepted]
    assert len(bodies) == 15
    assert len({b["notificationId"] for b in bodies}) == 15
    assert {b["groupLabels"]["entity"] for b in bodies} == {f"198.51.100.{i}" for i in range(15)}
    for q in http_receiver.requests:
        if q.status == 200:
            assert verify_signature(SECRET, q.headers, q.body)
    assert svc.outbox.depth() == (0, 0)
    retried = svc.metrics.deliveries.labels("ops", "webhook", "retried", "transport_error")
    assert retried._value.get() > 0


def test_service_writes_firing_alerts_and_audit(
    r: Any, http_receiver: HttpReceiver, tmp_path: Any
) -> None:
    clock = ManualClock(T0, follow_events=True)
    seen: list[dict[str, Any]] = []
    svc = service(
        r, http_receiver.url, clock, alerts_file=str(tmp_path / "a.jsonl"), on_alert=seen.append
    )
    svc.start(threads=False)
    svc.observe([det("a", T0), det("a", T0 + 60)])  # one alert, observed twice
    svc.close()
    lines = [orjson.loads(x) for x in (tmp_path / "a.jsonl").read_bytes().splitlines()]
    assert [a["labels"]["entity"] for a in lines] == ["a"] and seen == lines
    audit = svc.store.audit()  # type: ignore[attr-defined]
    assert [x["transition"] for x in audit] == ["inactive->pending", "pending->firing"]


# ---------------------------------------------------------------------------- PagerDuty, Slack
def test_pagerduty_trigger_and_resolve_share_the_dedup_key(http_receiver: HttpReceiver) -> None:
    pd = PagerDutyIntegration("routing-key-123", url=http_receiver.url)
    for n in (note(1), note(1, "resolved")):
        (it,) = pd.render(n, "pd/0")
        assert "routing-key-123" not in orjson.dumps(it.payload).decode()  # no secret stored
        assert pd.send(it).ok
    trig, res = (q.json() for q in http_receiver.requests)
    assert trig["event_action"] == "trigger" and res["event_action"] == "resolve"
    assert trig["dedup_key"] == res["dedup_key"] == "fp1"
    assert trig["routing_key"] == "routing-key-123"
    assert trig["payload"]["severity"] == "error" and trig["payload"]["source"] == "e1"
    pd.close()


def test_slack_message(http_receiver: HttpReceiver) -> None:
    sl = SlackIntegration(http_receiver.url, language="vi", channel="#soc")
    (it,) = sl.render(note(2), "chat/0")
    assert sl.send(it).ok
    body = http_receiver.requests[0].json()
    assert body["channel"] == "#soc" and body["text"].startswith("*[ĐANG CẢNH BÁO:1] x*")
    sl.close()


def test_grafana_annotations_start_then_end(http_receiver: HttpReceiver) -> None:
    # grafana-client against a real HTTP server that answers like Grafana's API.
    http_receiver.script(
        [
            Reply(
                200,
                {"Content-Type": "application/json"},
                b'{"id": 42, "message": "Annotation added"}',
            ),
            Reply(200, {"Content-Type": "application/json"}, b'{"message": "ok"}'),
        ]
    )
    ids: dict[str, int | None] = {}
    g = GrafanaAnnotations(
        http_receiver.url.rstrip("/"),
        token="tok",
        get_id=ids.get,
        set_id=ids.__setitem__,
        dashboard_uid="vigil",
    )
    from vigil.sinks.alerting.model import Transition

    a = note(3).alerts[0]
    start = g.on_transitions([Transition("fp3", "pending", "firing", T0, a["labels"], {}, a)])
    end_alert = {**a, "status": "resolved", "endsAt": "2023-11-14T22:23:20Z"}
    end = g.on_transitions(
        [Transition("fp3", "firing", "resolved", T0, a["labels"], {}, end_alert)]
    )
    assert g.send(start[0]).ok and ids["fp3"] == 42
    assert g.send(end[0]).ok and ids["fp3"] is None
    post, patch = http_receiver.requests
    assert (post.method, post.path) == ("POST", "/api/annotations")
    assert post.json()["time"] == 1700000000000 and post.json()["dashboardUID"] == "vigil"
    assert (patch.method, patch.path) == ("PATCH", "/api/annotations/42")
    assert patch.json()["timeEnd"] == 1700000600000
    assert post.headers["authorization"] == "Bearer tok"
    g.close()


# ---------------------------------------------------------------------------- Alertmanager
def test_push_to_a_real_alertmanager(alertmanager_server: Any, http_receiver: HttpReceiver) -> None:
    am = alertmanager_server(
        {
            "route": {
                "receiver": "hook",
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
                "group_by": ["alertname"],
            },
            "receivers": [
                {
                    "name": "hook",
                    "webhook_configs": [{"url": http_receiver.url, "send_resolved": True}],
                }
            ],
        }
    )
    push = AlertmanagerPush(am.url, resend_s=30)
    from vigil.sinks.alerting.model import Transition

    a = {**note(4).alerts[0], "startsAt": "2023-11-14T22:13:20Z"}
    (fire,) = push.on_transitions([Transition("fp4", "pending", "firing", T0, a["labels"], {}, a)])
    assert push.send(fire).ok
    got = http_receiver.wait_for(1, timeout=20)[0].json()
    assert got["status"] == "firing" and got["alerts"][0]["labels"]["entity"] == "e4"
    assert push.resend([a]).ok  # re-sent before endsAt: still one firing alert, no new message
    (res,) = push.on_transitions([Transition("fp4", "firing", "resolved", T0, a["labels"], {}, a)])
    assert push.send(res).ok
    reqs = http_receiver.wait_for(2, timeout=20)
    assert reqs[-1].json()["status"] == "resolved"
    assert reqs[-1].json()["alerts"][0]["startsAt"].startswith("2023-11-14T22:13:20")
    push.close()


def test_outbox_items_never_hold_secrets() -> None:
    it = OutboxItem("i", "t", "webhook", {"a": 1}, "k", T0)
    assert OutboxItem.loads(it.dumps()) == it


def test_redis_down_delays_alerts_and_loses_none(
    redis_server: RedisServer, http_receiver: HttpReceiver
) -> None:
    # Alert state in a Redis that goes away: observations wait in memory, then go through.
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=1)
    clock = ManualClock(T0, follow_events=True)
    svc = service(client, http_receiver.url, clock)
    svc.start()
    try:
        svc.observe([det("203.0.113.1", T0)])
        http_receiver.wait_for(1, timeout=10)
        redis_server.stop()
        svc.observe([det("203.0.113.2", T0 + 1), det("203.0.113.3", T0 + 2)])  # kept
        time.sleep(1.0)
        redis_server.start()  # comes back empty (no persistence in the test server)
        deadline = time.monotonic() + 20
        want = {"203.0.113.1", "203.0.113.2", "203.0.113.3"}
        while time.monotonic() < deadline:
            got = {
                a["labels"]["entity"]
                for b in http_receiver.accepted
                for a in orjson.loads(b)["alerts"]
            }
            if want <= got:
                break
            time.sleep(0.1)
        assert want <= got
    finally:
        svc.close()
        client.close()
