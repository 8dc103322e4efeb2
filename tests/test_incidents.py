"""Incidents across feeds: real alerts of the demo's feeds joined into one incident.

The alerts come from a real ``vigil demo`` run (bundled samples: Boston 311 service
queues, airline tweets, SSH auth.log), read from the alerts file it writes. The feeds are
of different eras (queues January 2015, media February 2015, security March 2017), so two
of them are **shifted in time** to overlap the media alert: the queue alert starts 10
minutes after it, the security alert 30 minutes after it. A configured link ties the
three entities together (as ``alerting.incidents.links`` would for "the portal host, the
media entity and the queue agency of one department"). The pipeline is the real one
(:func:`vigil.flows.alerting_wiring.make_service`), with its state and outbox in a real
Redis and a real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry
from vigil.flows.alerting_wiring import make_service
from vigil.flows.config import parse_config
from vigil.sinks.alerting.engine import Observation
from vigil.sinks.alerting.incidents import Correlator, Link
from vigil.sinks.alerting.model import Alert
from vigil.sinks.prometheus import ALERTING_INCIDENT_MEMBERS, ALERTING_INCIDENTS

from tests.conftest import HttpReceiver, RedisServer

MAIN = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_alerts(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Alerts of a real ``vigil demo`` run (every feed of the bundled samples)."""
    out = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", "demo", "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=MAIN,
        timeout=300,
    )
    return [orjson.loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def first(alerts: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    return next(a for a in alerts if all(a["labels"].get(k) == v for k, v in labels.items()))


def observation(alert: dict[str, Any], shift_s: float = 0.0) -> Observation:
    """The detection behind an alert line, ``shift_s`` later in event time."""
    ann = dict(alert["annotations"])
    ts = _ts(alert["startsAt"]) + shift_s
    hold = float(ann.get("window_s", 600))
    return Observation(dict(alert["labels"]), ann, ts, None, hold, alert["labels"]["feed"])


def config(redis_url: str | None, receiver_url: str, ip: str, tmp: Path) -> dict[str, Any]:
    """Redis at ``redis_url``, else the state folder ``tmp/state``."""
    state = {"redis_url": redis_url, "prefix": "inc"} if redis_url else {"dir": str(tmp / "state")}
    return {
        "alerting": {
            "clock": "event",
            "timing": {"lateness": 0},  # no watermarks here: each domain runs on its data
            "state": state,
            "receivers": [{"name": "ops", "webhook": {"url": receiver_url}}],
            "route": {"receiver": "ops", "group_by": ["feed", "entity"], "group_wait": "10s"},
            "incidents": {
                "enabled": True,
                "window_s": "1h",
                "links": [
                    {
                        "name": "Southwest operations",
                        "match": [
                            {"feed": "security", "entity": ip},
                            {"feed": "media", "entity": "southwest"},
                            {"feed": "service_queues", "agency": "PWDx"},
                        ],
                    }
                ],
            },
        },
        "alerts": {"file": str(tmp / "alerts.jsonl")},
    }


def incident_bodies(rx: HttpReceiver) -> list[dict[str, Any]]:
    return [b for b in map(orjson.loads, rx.accepted) if "incident" in b]


def test_an_incident_forms_from_two_feeds_grows_with_a_third_and_resolves_once_delivered(
    demo_alerts: list[dict[str, Any]],
    redis_server: RedisServer,
    http_receiver: HttpReceiver,
    tmp_path: Path,
) -> None:
    redis_server.flushall()
    media = first(demo_alerts, feed="media", alertname="media_negative_surge", entity="southwest")
    queue = first(demo_alerts, feed="service_queues", alertname="overdue_share", agency="PWDx")
    ssh = first(demo_alerts, feed="security", alertname="ssh_brute_force")
    other = first(demo_alerts, feed="media", alertname="media_negative_surge", entity="jetblue")
    t_media = _ts(media["startsAt"])
    queue_shift = t_media + 600 - _ts(queue["startsAt"])  # 10 minutes after the media alert
    ssh_shift = t_media + 1800 - _ts(ssh["startsAt"])  # 30 minutes after it
    raw = config(redis_server.url, http_receiver.url, ssh["labels"]["entity"], tmp_path)
    cfg = parse_config(raw)
    env = {"VIGIL_WEBHOOK_SECRET": "incident-test-secret"}

    registry = CollectorRegistry()
    svc = make_service(cfg, environ=env, registry=registry)
    svc.start()
    # Two feeds within the window: the incident opens.
    svc.run_step([observation(media), observation(queue, queue_shift), observation(other)])
    # A third feed joins.
    svc.run_step([observation(ssh, ssh_shift)])
    svc.close()  # a live-like stop: members still firing, the incident stays open in Redis
    bodies = incident_bodies(http_receiver)
    assert [b["reason"] for b in bodies] == ["incident_opened", "incident_updated"]
    opened, updated = (b["incident"] for b in bodies)
    assert opened["id"] == updated["id"]
    assert opened["feeds"] == ["media", "service_queues"]
    assert updated["feeds"] == ["media", "security", "service_queues"]
    # warning + warning from two agreeing feeds -> high; a high ssh alert joins -> critical.
    assert (opened["severity"], updated["severity"]) == ("high", "critical")
    assert [m["feed"] for m in updated["timeline"]] == ["media", "service_queues", "security"]
    assert [a["fingerprint"] for a in bodies[1]["alerts"]] == [
        m["fingerprint"] for m in updated["timeline"]
    ]
    # The unlinked JetBlue alert is notified alone; the members are not sent twice.
    plain = [b for b in map(orjson.loads, http_receiver.accepted) if "incident" not in b]
    assert {a["labels"]["entity"] for b in plain for a in b["alerts"]} == {"jetblue"}
    assert registry.get_sample_value(ALERTING_INCIDENTS, {"state": "updated"}) == 1
    assert registry.get_sample_value(ALERTING_INCIDENT_MEMBERS, {"feed": "security"}) == 1

    # Listed by the CLI from the store (a real subprocess, as a user runs it).
    cfg_file = tmp_path / "vigil.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    ls = subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", "incidents", "list", "-c", str(cfg_file)],
        capture_output=True,
        text=True,
        cwd=MAIN,
        timeout=60,
    )
    assert ls.returncode == 0, ls.stderr
    assert opened["id"] in ls.stdout and "updated" in ls.stdout
    show = subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", "incidents", "show", "nope", "-c", str(cfg_file)],
        capture_output=True,
        text=True,
        cwd=MAIN,
        timeout=60,
    )
    assert show.returncode == 1
    assert show.stderr.strip().splitlines()[-1].startswith("vigil incidents: no incident")

    # After a restart, the inputs end: every member resolves, and so does the incident.
    svc2 = make_service(cfg, environ=env, registry=CollectorRegistry(), finite=True)
    svc2.start()
    svc2.close()
    bodies = incident_bodies(http_receiver)
    assert [b["reason"] for b in bodies][-1] == "incident_resolved"
    resolved = bodies[-1]["incident"]
    assert resolved["id"] == opened["id"] and resolved["state"] == "resolved"
    assert all(m["status"] == "resolved" for m in resolved["timeline"])
    assert bodies[-1]["status"] == "resolved"
    # Delivered once: every incident change reached the receiver exactly one time.
    seqs = [b["incident"]["sequence"] for b in bodies]
    assert seqs == sorted(set(seqs))
    assert http_receiver.duplicates == 0
    assert len(http_receiver.requests) == len(http_receiver.accepted)


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", *args],
        capture_output=True,
        text=True,
        cwd=MAIN,
        timeout=60,
    )


def test_a_folder_store_keeps_incidents_across_a_restart_and_an_ack_covers_the_members(
    demo_alerts: list[dict[str, Any]], http_receiver: HttpReceiver, tmp_path: Path
) -> None:
    """Same real alerts and time shifts as above, with no Redis (the state folder)."""
    media = first(demo_alerts, feed="media", alertname="media_negative_surge", entity="southwest")
    queue = first(demo_alerts, feed="service_queues", alertname="overdue_share", agency="PWDx")
    ssh = first(demo_alerts, feed="security", alertname="ssh_brute_force")
    t_media = _ts(media["startsAt"])
    cfg = parse_config(config(None, http_receiver.url, ssh["labels"]["entity"], tmp_path))
    env = {"VIGIL_WEBHOOK_SECRET": "incident-test-secret"}
    svc = make_service(cfg, environ=env, registry=CollectorRegistry())
    svc.start()
    svc.run_step([observation(media), observation(queue, t_media + 600 - _ts(queue["startsAt"]))])
    svc.close()
    (opened,) = incident_bodies(http_receiver)
    iid = opened["incident"]["id"]
    state = str(tmp_path / "state")

    show = vigil("incidents", "show", iid[:8], "--state-dir", state)
    assert show.returncode == 0, show.stderr
    assert media["fingerprint"] in show.stdout and queue["fingerprint"] in show.stdout
    ack = vigil("incidents", "ack", iid, "--by", "duty", "--state-dir", state)
    assert ack.returncode == 0, ack.stderr
    assert "2 member alert(s)" in ack.stdout
    acked = vigil("alerts", "list", "--json", "--state-dir", state)
    rows = [orjson.loads(line) for line in acked.stdout.splitlines()]
    assert {r["fingerprint"] for r in rows if r["acked"]} == {
        media["fingerprint"],
        queue["fingerprint"],
    }

    fb = vigil("incidents", "feedback", iid, "confirmed", "--by", "duty", "--state-dir", state)
    assert fb.returncode == 0, fb.stderr
    lines = (tmp_path / "state" / "feedback.jsonl").read_bytes().splitlines()
    verdicts = {r["fingerprint"]: r["verdict"] for r in map(orjson.loads, lines)}
    assert verdicts == {media["fingerprint"]: "confirmed", queue["fingerprint"]: "confirmed"}

    # Restarted: the third feed joins the same incident, not a new one.
    svc2 = make_service(cfg, environ=env, registry=CollectorRegistry())
    svc2.start()
    svc2.run_step([observation(ssh, t_media + 1800 - _ts(ssh["startsAt"]))])
    svc2.close()
    bodies = incident_bodies(http_receiver)
    assert [b["reason"] for b in bodies] == ["incident_opened", "incident_updated"]
    assert bodies[1]["incident"]["id"] == iid
    assert len(bodies[1]["incident"]["timeline"]) == 3
    assert http_receiver.duplicates == 0


def test_missing_store_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    res = vigil("incidents", "list", "--state-dir", str(tmp_path / "nowhere"))
    assert res.returncode == 1
    assert res.stderr.strip().startswith("vigil incidents: no alert state in")
    assert "Traceback" not in res.stderr


def _alert(fp: str, feed: str, start: float, **labels: str) -> Alert:
    lab = {"alertname": "x", "feed": feed, "entity": fp, "severity": "warning", **labels}
    return Alert(fp, lab, {}, "firing", start, start, start, start)


def test_alerts_of_one_feed_or_outside_the_window_are_not_an_incident() -> None:
    link = Link.parse(
        "Health",
        [{"feed": "media", "entity": "so_y_te"}, {"feed": "service_queues", "agency": "SYT"}],
    )
    c = Correlator(window_s=3600, links=[link])
    # Two alerts of one feed sharing an agency: a cluster, never announced.
    assert c.apply([_alert("a", "service_queues", 0, agency="SYT")]) == []
    assert c.apply([_alert("b", "service_queues", 60, agency="SYT")]) == []
    # Another feed, same agency, but two hours later: not within the window.
    assert c.apply([_alert("c", "media", 7200 + 61, agency="SYT")]) == []
    # Another feed tied by the link, in time: an incident.
    changes = c.apply([_alert("so_y_te", "media", 1800)])
    assert [ch.reason for ch in changes] == ["incident_opened"]
    assert len(changes[0].incident.members) == 3
    assert [i.id for i in c.listed()] == [changes[0].incident.id]


def test_config_defaults_off_and_rejects_an_unknown_receiver_and_an_empty_link() -> None:
    from pydantic import ValidationError

    cfg = parse_config({})
    assert cfg.alerting.incidents.enabled is False
    assert cfg.alerting.incidents.window_s == 3600.0
    ok = parse_config({"alerting": {"incidents": {"enabled": True, "window_s": "30m"}}})
    assert ok.alerting.incidents.window_s == 1800.0
    with pytest.raises(ValidationError, match=r"incidents\.receiver 'pager' is not in"):
        parse_config({"alerting": {"incidents": {"receiver": "pager"}}})
    with pytest.raises(ValidationError, match="at least one label"):
        parse_config({"alerting": {"incidents": {"links": [{"name": "x", "match": [{}]}]}}})
