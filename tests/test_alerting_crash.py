"""Vigil killed with SIGKILL in the middle of delivery, then restarted: nothing is lost and
the receiver accepts no notification twice. Real processes (the ``vigil`` CLI), a real
redis-server for state and outbox, a real HTTP receiver that de-duplicates by
``Idempotency-Key``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from vigil.sinks.alerting.outbox import RedisOutbox
from vigil.sinks.webhook import verify_signature

from tests.conftest import HttpReceiver, RedisServer

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "security"
AUTH_LOG = DATA / "ssh_auth_elastic" / "auth.log"
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]
SECRET = "crash-test-secret"


def config(tmp: Path, redis_url: str, prefix: str, hook: str) -> Path:
    cfg = tmp / "vigil.yaml"
    cfg.write_text(
        f"""
metrics: {{enabled: false}}
alerts: {{file: {tmp / "alerts.jsonl"}}}
dead_letters: {{file: {tmp / "dead.jsonl"}}}
alerting:
  clock: event
  state: {{redis_url: "{redis_url}", prefix: "{prefix}"}}
  timing: {{group_wait: 0s, group_interval: 1m, keep_firing_for: 5m}}
  receivers:
    - name: hook
      webhook: {{url: "{hook}", secret_env: HOOK_SECRET}}
  route: {{receiver: hook, group_by: [alertname, entity]}}
  outbox: {{lease: 2s, drain_timeout: 90s, backoff_base: 0.2s, backoff_max: 1s,
            concurrency: 1}}
"""
    )
    return cfg


@pytest.mark.skipif(not AUTH_LOG.exists(), reason="needs ../shared/datasets")
def test_sigkill_mid_delivery_then_restart_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, redis_server: RedisServer, http_receiver: HttpReceiver
) -> None:
    reply = sys.modules.get("conftest", sys.modules["tests.conftest"]).Reply  # type: ignore[attr-defined]
    prefix = f"crash:{uuid.uuid4().hex[:8]}"
    cfg = config(tmp_path, redis_server.url, prefix, http_receiver.url)
    args = [
        *VIGIL,
        "replay",
        str(AUTH_LOG),
        "--format",
        "ssh",
        "--year",
        "2017",
        "--config",
        str(cfg),
        "--state",  # a replay keeps the configured Redis state only when told to
        redis_server.url,
    ]
    env = {**os.environ, "HOOK_SECRET": SECRET}
    # Slow answers at first, so the kill lands while deliveries are in flight.
    http_receiver.script([reply(200, delay_s=0.3) for _ in range(12)])
    first = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        http_receiver.wait_for(5, timeout=60)
        time.sleep(0.1)  # the sixth request is being answered (0.3 s) right now
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert first.stderr is not None
        first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    r = redis.Redis.from_url(redis_server.url)
    outbox = RedisOutbox(r, prefix=prefix)
    pending_at_kill, _ = outbox.depth()
    assert pending_at_kill > 0, "the kill should leave deliveries pending"
    requested_before = len(http_receiver.requests)

    second = subprocess.run(
        args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert outbox.depth() == (0, 0)  # everything delivered, nothing dead
    assert len(http_receiver.requests) > requested_before

    accepted: dict[str, Any] = {}
    for q in http_receiver.requests:
        assert verify_signature(SECRET.encode(), q.headers, q.body)
        if q.status == 200:
            accepted.setdefault(q.headers["idempotency-key"], orjson.loads(q.body))
    requested = {q.headers["idempotency-key"] for q in http_receiver.requests}
    # Nothing lost: every notification ever attempted was accepted in the end.
    assert requested == set(accepted)
    assert len(http_receiver.accepted) == len(accepted)  # accepted once per key
    # No notification was re-decided under a new key, and none is missing: per group, in
    # arrival order (the outbox keeps a group's order), sequence numbers run 1, 2, 3 ...
    # and start again at 1 only after an "all resolved" notification ended the episode.
    by_group: dict[str, list[Any]] = defaultdict(list)
    for body in accepted.values():  # dicts keep first-acceptance order
        by_group[body["groupKey"]].append(body)
    for key, bodies in by_group.items():
        expected = 1
        for b in bodies:
            assert b["sequence"] == expected, (
                key,
                [(x["sequence"], x["status"], x.get("reason")) for x in bodies],
            )
            expected = 1 if b["status"] == "resolved" else expected + 1
    assert any(b["groupLabels"]["entity"] == "24.151.103.17" for b in accepted.values())
    r.close()
