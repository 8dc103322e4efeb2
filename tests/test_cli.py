"""The ``vigil`` command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from vigil.sinks.webhook import verify_signature

from tests.conftest import free_port

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "security"
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]


def vigil(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def summary(stderr: str) -> dict:
    for line in reversed(stderr.splitlines()):
        if line.startswith('{"summary"'):
            return json.loads(line)["summary"]
    msg = f"no summary in:\n{stderr[-2000:]}"
    raise AssertionError(msg)


def test_help_everywhere() -> None:
    for args in ([], ["run"], ["demo"], ["replay"], ["check-config"], ["version"]):
        r = vigil(*args, "--help")
        assert r.returncode == 0, r.stderr
        assert "usage: vigil" in r.stdout


def test_version() -> None:
    r = vigil("version")
    assert r.returncode == 0
    assert r.stdout.startswith("vigil ") and "bytewax 0.21.1" in r.stdout


def test_check_config_rejects_a_misspelt_key_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "v.yaml"
    cfg.write_text("security:\n  rules:\n    brute_force:\n      failurs: 3\n")
    r = vigil("check-config", str(cfg))
    assert r.returncode == 1
    assert "security.rules.brute_force.failurs: unknown key" in r.stderr


def test_check_config_explains_a_valid_file(tmp_path: Path) -> None:
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        "security:\n  inputs:\n    - kind: file\n      paths: [/var/log/auth.log]\n"
        "      format: ssh\n      follow: true\n  rules:\n    brute_force:\n      failures: 8\n"
        "alerts:\n  webhook:\n    url: https://hooks.example/vigil\n    secret_env: MY_SECRET\n"
    )
    r = vigil("check-config", str(cfg), env={"MY_SECRET": "s3cret-value"})
    assert r.returncode == 0, r.stderr
    assert "format=ssh" in r.stdout and "failures=8" in r.stdout
    assert "$MY_SECRET (set)" in r.stdout
    assert "s3cret-value" not in r.stdout + r.stderr  # secrets never printed


def test_a_secret_inline_in_yaml_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "v.yaml"
    cfg.write_text("alerts:\n  webhook:\n    url: http://x\n    secret: hunter2\n")
    r = vigil("check-config", str(cfg))
    assert r.returncode == 1
    assert "alerts.webhook.secret: unknown key" in r.stderr


def test_demo_runs_on_embedded_defaults_and_delivers_signed_alerts(tmp_path: Path) -> None:
    r = vigil("demo", "--metrics-port", "0", "--out", "out", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary(r.stderr)
    alerts = [
        orjson.loads(x) for x in (tmp_path / "out" / "alerts.jsonl").read_bytes().splitlines()
    ]
    names = {(a["labels"]["alertname"], a["labels"]["entity"]) for a in alerts}
    assert ("ssh_brute_force", "24.151.103.17") in names
    assert ("ssh_success_after_failures", "24.151.103.17") in names
    assert ("port_scan", "172.16.1.11") in names  # the Nmap scanner: one alert for all
    # Printed on the terminal as they happen, one line each.
    assert r.stdout.count("ssh_brute_force") == sum(
        a["labels"]["alertname"] == "ssh_brute_force" for a in alerts
    )
    # Every bundled line is read (other feeds' samples add to the two security logs).
    assert s["dead_lettered"] == 0 and s["lines"] >= 7121 + 4504
    assert s["webhook_deliveries_verified"] >= 1 and s["webhook_deliveries_rejected"] == 0


def test_replay_posts_signed_alertmanager_payloads(tmp_path: Path, http_receiver) -> None:
    secret = "replay-test-secret"
    r = vigil(
        "replay",
        str(DATA / "ssh_auth_elastic" / "auth.log"),
        "--format",
        "ssh",
        "--year",
        "2017",
        "--alerts",
        str(tmp_path / "a.jsonl"),
        "--webhook",
        http_receiver.url,
        env={"VIGIL_WEBHOOK_SECRET": secret},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert http_receiver.requests, "no webhook received"
    entities = set()
    for req in http_receiver.requests:
        assert verify_signature(secret.encode(), req.headers, req.body)
        payload = orjson.loads(req.body)
        assert payload["version"] == "4"
        entities |= {a["labels"]["entity"] for a in payload["alerts"]}
    assert "24.151.103.17" in entities
    assert secret not in r.stderr + r.stdout


def _udp(port: int, lines: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for ln in lines:
            s.sendto(ln.encode(), ("127.0.0.1", port))


def _tcp(port: int, lines: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall("".join(f"{len(ln.encode())} {ln}" for ln in lines).encode())  # octet-counted


def scrape(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_run_listens_for_syslog_and_serves_metrics(tmp_path: Path) -> None:
    sport, mport = free_port(), free_port()
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        f"security:\n  inputs:\n    - kind: syslog\n      port: {sport}\n      format: ssh\n"
        f"metrics:\n  port: {mport}\nalerts:\n  file: {tmp_path / 'alerts.jsonl'}\n"
        f"dead_letters:\n  file: {tmp_path / 'dead.jsonl'}\n"
    )
    proc = subprocess.Popen(
        [*VIGIL, "run", "security", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{mport}/metrics"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                scrape(url)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        while time.monotonic() < deadline:  # metrics can answer before syslog is bound
            try:
                socket.create_connection(("127.0.0.1", sport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        now = time.gmtime()
        stamp = time.strftime("%b %d %H:%M:%S", now).replace(" 0", "  ", 1)
        fails = [
            f"<38>{stamp} bastion sshd[{900 + i}]: Failed password for root from "
            f"198.51.100.23 port {40000 + i} ssh2"
            for i in range(3)
        ]
        _udp(sport, fails)
        more = [
            f"<38>1 {time.strftime('%Y-%m-%dT%H:%M:%SZ', now)} bastion sshd {910 + i} - - "
            f"Failed password for root from 198.51.100.23 port {41000 + i} ssh2"
            for i in range(3)
        ]
        _tcp(sport, [*more, "<38>garbage that is not syslog"])
        key = 'vigil_lines_total{flow="security",format="ssh",outcome="parsed"}'
        dead = 'vigil_lines_total{flow="security",format="ssh",outcome="dead_lettered"}'
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            m = scrape(url)
            if m.get(key, 0) >= 6 and m.get(dead, 0) >= 1:
                break
            time.sleep(0.2)
        assert m.get(key) == 6 and m.get(dead) == 1, m
        det = 'vigil_detections_total{feed="security",kind="ssh_brute_force",severity="high"}'
        assert m.get(det) == 1
        alerts = (tmp_path / "alerts.jsonl").read_text()
        assert "198.51.100.23" in alerts
        dl = [orjson.loads(x) for x in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
        assert [d["reason"] for d in dl] == ["bad syslog header"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("vigil run did not stop on SIGINT")
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_run_resumes_files_and_counts_after_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    tmpl = (
        "Mar 30 15:54:{:02d} h sshd[{}]: Failed password for root from 203.0.113.66 port 1 ssh2\n"
    )
    log.write_text("".join(tmpl.format(i, 100 + i) for i in range(3)))
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        f"security:\n  year: 2017\n  inputs:\n    - kind: file\n      paths: [{log}]\n"
        f"      format: ssh\nmetrics:\n  enabled: false\n"
        f"alerts:\n  file: {tmp_path / 'alerts.jsonl'}\n"
        f"dead_letters:\n  file: {tmp_path / 'dead.jsonl'}\n"
    )
    args = (
        "run",
        "security",
        "--config",
        str(cfg),
        "--recovery-dir",
        str(tmp_path / "rec"),
        "--snapshot-interval",
        "0",
    )
    r1 = vigil(*args)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert summary(r1.stderr)["lines"] == 3
    assert not (tmp_path / "alerts.jsonl").exists() or not (tmp_path / "alerts.jsonl").read_text()
    with log.open("a") as fh:
        fh.write("".join(tmpl.format(i, 100 + i) for i in range(3, 5)))
    r2 = vigil(*args)
    assert r2.returncode == 0, r2.stderr[-2000:]
    # Only the two new lines are read, and the three earlier failures still count.
    assert summary(r2.stderr)["lines"] == 2
    alerts = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    assert [a["labels"]["alertname"] for a in alerts] == ["ssh_brute_force"]
    assert alerts[0]["annotations"]["observed"] == "5"
