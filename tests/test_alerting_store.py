"""State stores and outboxes against a real redis-server (and a real folder)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from vigil.sinks.alerting.engine import AlertEngine, ManualClock
from vigil.sinks.alerting.model import Matcher, Silence
from vigil.sinks.alerting.outbox import FileOutbox, OutboxItem, RedisOutbox
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.store import MemoryStore, RedisStore

from tests.conftest import RedisServer

T0 = 1_700_000_000.0


@pytest.fixture
def r(redis_server: RedisServer) -> Any:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


def engine(clock: ManualClock) -> AlertEngine:
    return AlertEngine(
        Route(receiver="ops", group_by=("entity",), group_wait=10), clock=clock, wall=clock.now
    )


def lab(entity: str) -> dict[str, str]:
    return {"alertname": "x", "entity": entity, "feed": "security", "severity": "high"}


@pytest.mark.parametrize("kind", ["redis", "folder"])
def test_state_survives_a_restart(kind: str, r: Any, tmp_path: Path) -> None:
    p = prefix()

    def store() -> Any:
        return RedisStore(r, prefix=p) if kind == "redis" else MemoryStore(tmp_path / "st")

    clock = ManualClock(T0)
    eng, st = engine(clock), store()
    eng.observe(lab("a"), {"summary": "s"}, T0)
    clock.advance(10)
    assert len(eng.tick()) == 1
    st.commit(eng.drain_changes())
    st.close()
    # A new process: same alerts, groups and notification log, so nothing is re-sent.
    eng2, st2 = engine(clock), store()
    eng2.load(st2.load())
    assert eng2.alerts.keys() == eng.alerts.keys() and eng2.nflog == eng.nflog
    clock.advance(300)
    eng2.observe(lab("a"), {"summary": "s"}, clock.now())
    assert eng2.tick() == []  # already notified; no repeat before repeat_interval


def test_operator_data_in_redis_bumps_meta_version(r: Any) -> None:
    st = RedisStore(r, prefix=prefix())
    v0 = st.meta_version()
    s = Silence("id1", (Matcher.parse("entity=a"),), T0, T0 + 60, "me", "why")
    st.add_silence(s)
    st.ack("fp", {"active_at": 1.0})
    st.add_feedback({"fingerprint": "fp", "verdict": "expected"})
    assert st.meta_version() == v0 + 3
    assert st.silences() == [s] and st.acks()["fp"]["active_at"] == 1.0
    assert st.feedback()["fp"]["verdict"] == "expected"
    assert st.expire_silence("id1", T0 + 10) and st.silences()[0].ends_at == T0 + 10


def test_redis_lock_serialises_processes(r: Any) -> None:
    # Two stores = two processes: their critical sections never overlap.
    p = prefix()
    a, b = RedisStore(r, prefix=p), RedisStore(r, prefix=p)
    inside, overlaps = [0], [0]

    def work(st: RedisStore) -> None:
        for _ in range(50):
            with st.lock():
                inside[0] += 1
                if inside[0] > 1:
                    overlaps[0] += 1
                time.sleep(0.0005)
                inside[0] -= 1

    ts = [threading.Thread(target=work, args=(s,)) for s in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert overlaps[0] == 0


def item(i: int, okey: str = "g", created: float = 0.0) -> OutboxItem:
    return OutboxItem(f"id{i}", "ops/0", "webhook", {"n": i}, okey, created or T0 + i)


@pytest.mark.parametrize("kind", ["redis", "file"])
def test_outbox_contract(kind: str, r: Any, tmp_path: Path) -> None:
    ob = RedisOutbox(r, prefix=prefix()) if kind == "redis" else FileOutbox(tmp_path / "ob")
    now = T0 + 100
    # put is idempotent by id
    assert ob.put([item(1), item(2), item(3, "h")], now) == 3
    assert ob.put([item(1)], now) == 0
    # Only the oldest item of an order key can be claimed: id2 waits behind id1.
    got = {i.id for i in ob.claim(now, 10, lease_s=30)}
    assert got == {"id1", "id3"}
    # Claimed items are leased: nobody else gets them until the lease ends...
    assert ob.claim(now + 1, 10, lease_s=30) == []
    # ...then they are due again (a crashed claimer's items are not lost).
    assert {i.id for i in ob.claim(now + 31, 10, lease_s=30)} == {"id1", "id3"}
    # Delivering the head makes its successor due at once.
    ob.delivered(item(1), now + 32)
    assert [i.id for i in ob.claim(now + 32, 10, lease_s=30)] == ["id2"]
    ob.dead(item(2), now + 33)
    assert ob.depth() == (1, 1) and [i.id for i in ob.dead_items()] == ["id2"]
    assert ob.requeue_dead(now + 34) == 1 and ob.depth() == (2, 0)
    ob.close()


def test_file_outbox_keeps_items_across_restarts(tmp_path: Path) -> None:
    ob = FileOutbox(tmp_path / "ob")
    ob.put([item(1), item(2)], T0)
    with pytest.raises(RuntimeError, match="in use"):
        FileOutbox(tmp_path / "ob")  # one process per folder
    ob.close()
    again = FileOutbox(tmp_path / "ob")
    assert [i.id for i in again.claim(T0, 10, 30)] == ["id1"]
    again.close()


def test_audit_reads_step_batches_and_older_single_records(r: Any) -> None:
    """A step's audit records land in one stream entry; ``audit(count)`` still returns the
    newest ``count`` records oldest first, including entries written one record each."""
    import orjson
    from vigil.sinks.alerting.state import Changes

    prefix = f"test:{uuid.uuid4().hex[:8]}"
    store = RedisStore(r, prefix=prefix)
    r.xadd(f"{prefix}:audit", {"json": orjson.dumps({"n": 0})})  # the format before batches
    store.commit(Changes(), [{"n": 1}, {"n": 2}])
    store.commit(Changes(), [{"n": 3}, {"n": 4}, {"n": 5}])
    assert r.xlen(f"{prefix}:audit") == 3  # one entry per step
    assert [a["n"] for a in store.audit()] == [0, 1, 2, 3, 4, 5]
    assert [a["n"] for a in store.audit(count=4)] == [2, 3, 4, 5]
