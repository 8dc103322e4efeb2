"""The operator commands (``vigil alerts``, ``vigil silence``, ``vigil feedback``) run as a
user runs them, against a state folder and against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from vigil.sinks.alerting.engine import AlertEngine, ManualClock
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.store import MemoryStore, RedisStore

from tests.conftest import RedisServer

T0 = 1_700_000_000.0
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]


def vigil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def seed(store: object) -> dict[str, str]:
    """Two firing alerts and one resolved; returns fingerprints by entity."""
    clock = ManualClock(T0)
    eng = AlertEngine(Route(receiver="ops"), clock=clock, wall=clock.now, keep_firing_for_s=300)
    for ent, sev in (("203.0.113.7", "high"), ("198.51.100.1", "warning"), ("old", "high")):
        eng.observe(
            {"alertname": "ssh_brute_force", "entity": ent, "feed": "security", "severity": sev},
            {"summary": ent},
            T0,
        )
    eng.tick()
    clock.advance(200)
    for ent in ("203.0.113.7", "198.51.100.1"):
        eng.observe(
            {
                "alertname": "ssh_brute_force",
                "entity": ent,
                "feed": "security",
                "severity": "high" if ent != "198.51.100.1" else "warning",
            },
            {},
            T0 + 200,
        )
    clock.advance(150)
    eng.tick()
    store.commit(eng.drain_changes())  # type: ignore[attr-defined]
    store.close()  # type: ignore[attr-defined]
    return {a.labels["entity"]: fp for fp, a in eng.alerts.items()}


def test_alerts_list_filters_by_state_and_label(tmp_path: Path) -> None:
    fps = seed(MemoryStore(tmp_path / "st"))
    r = vigil(
        "alerts",
        "list",
        "--state-dir",
        "st",
        "--state",
        "firing",
        "-l",
        "severity=high",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert fps["203.0.113.7"] in r.stdout and "198.51.100.1" not in r.stdout
    assert "old" not in r.stdout  # resolved
    r = vigil("alerts", "list", "--state-dir", "st", "--json", "-l", 'entity=~"19.*"', cwd=tmp_path)
    (row,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert row["state"] == "firing" and row["labels"]["entity"] == "198.51.100.1"


def test_silence_add_list_expire(tmp_path: Path) -> None:
    seed(MemoryStore(tmp_path / "st"))
    r = vigil(
        "silence",
        "add",
        "entity=203.0.113.7",
        'alertname=~"ssh_.*"',
        "--for",
        "2h",
        "--author",
        "ana",
        "--comment",
        "pen test",
        "--state-dir",
        "st",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    listed = vigil("silence", "list", "--state-dir", "st", cwd=tmp_path).stdout
    assert sid in listed and "active" in listed and "pen test" in listed
    flagged = vigil(
        "alerts", "list", "--state-dir", "st", "-l", "entity=203.0.113.7", cwd=tmp_path
    ).stdout
    assert " -S " in flagged  # shown as silenced
    assert vigil("silence", "expire", sid, "--state-dir", "st", cwd=tmp_path).returncode == 0
    assert sid not in vigil("silence", "list", "--state-dir", "st", cwd=tmp_path).stdout
    assert "expired" in vigil("silence", "list", "--all", "--state-dir", "st", cwd=tmp_path).stdout
    bad = vigil(
        "silence",
        "add",
        "not a matcher",
        "--author",
        "a",
        "--comment",
        "c",
        "--state-dir",
        "st",
        cwd=tmp_path,
    )
    assert bad.returncode != 0


def test_feedback_false_positive_silences_the_entity_and_is_stored(tmp_path: Path) -> None:
    fps = seed(MemoryStore(tmp_path / "st"))
    fp = fps["198.51.100.1"]
    r = vigil(
        "feedback",
        fp[:8],
        "false-positive",
        "--for",
        "24h",
        "--by",
        "bao",
        "--state-dir",
        "st",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (rec,) = [json.loads(x) for x in (tmp_path / "st" / "feedback.jsonl").read_text().splitlines()]
    assert (
        rec["verdict"] == "false_positive" and rec["key"] == "security:ssh_brute_force:198.51.100.1"
    )
    assert rec["labels"]["entity"] == "198.51.100.1" and rec["until"] - rec["at"] == 86400
    (sil,) = MemoryStore(tmp_path / "st").silences()
    assert {str(m) for m in sil.matchers} == {
        'alertname="ssh_brute_force"',
        'feed="security"',
        'entity="198.51.100.1"',
    }


def test_ack_and_feedback_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = f"cli:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_server.url)
    fps = seed(RedisStore(client, prefix=prefix))
    cfg = tmp_path / "v.yaml"
    cfg.write_text(f'alerting:\n  state: {{redis_url: "{redis_server.url}", prefix: "{prefix}"}}\n')
    fp = fps["203.0.113.7"]
    assert (
        vigil("alerts", "ack", fp, "--by", "ana", "--config", str(cfg), cwd=tmp_path).returncode
        == 0
    )
    assert vigil("feedback", fp, "confirmed", "--config", str(cfg), cwd=tmp_path).returncode == 0
    st = RedisStore(redis.Redis.from_url(redis_server.url), prefix=prefix)
    assert st.acks()[fp]["by"] == "ana"
    assert st.feedback()[fp]["verdict"] == "confirmed" and st.silences() == []
    listed = vigil("alerts", "list", "--config", str(cfg), cwd=tmp_path).stdout
    assert " A- " in listed
    assert vigil("alerts", "ack", "ffff", "--config", str(cfg), cwd=tmp_path).returncode == 1
    st.close()
    client.close()


@pytest.mark.parametrize(
    "args", [["alerts", "--help"], ["silence", "add", "--help"], ["feedback", "--help"]]
)
def test_help(args: list[str], tmp_path: Path) -> None:
    r = vigil(*args, cwd=tmp_path)
    assert r.returncode == 0 and "usage: vigil" in r.stdout
