"""The compose stack's files: each checked by its own tool where one runs here.

Docker cannot run on the test machine, so the compose file is checked for shape and for
the files it mounts; Prometheus's and Alertmanager's configs by ``promtool`` and
``amtool``; the alert rules by ``promtool test rules``; Grafana's provisioning files
against Grafana's provisioning format (``apiVersion: 1`` with ``datasources`` or
``providers``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_binary
from vigil.dashboards import DEFAULT_OUT
from vigil.dashboards.core import DATASOURCE_UID, FOLDER_UID, VIGIL_JOB
from vigil.dashboards.promql import metric_names
from vigil.flows.config import load_config

from tests.test_dashboards import KNOWN

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _run(argv: list[str]) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, f"{argv} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


COMPOSE = _yaml(ROOT / "docker-compose.yml")


def test_compose_has_the_stack_services() -> None:
    services = COMPOSE["services"]
    assert {"redis", "prometheus", "alertmanager", "grafana", "vigil-security"} <= set(services)
    assert any(n.startswith("replay-") for n in services), "a replay producer"
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name


def test_compose_mounts_files_that_exist() -> None:
    for name, svc in COMPOSE["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"


def test_grafana_password_from_environment_and_anonymous_off_by_default() -> None:
    env = COMPOSE["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_vigil_service_config_is_valid_and_serves_metrics_to_prometheus() -> None:
    cfg = load_config(DEPLOY / "vigil" / "vigil.yaml")
    assert cfg.metrics.host == "0.0.0.0"
    prom = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == VIGIL_JOB]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert f"vigil-security:{cfg.metrics.port}" in targets
    vigil_services = [n for n, s in COMPOSE["services"].items() if "run" in s.get("command", [])]
    assert {t.split(":")[0] for t in targets} == set(vigil_services), "scrape every Vigil process"


def test_promtool_check_config() -> None:
    promtool = require_binary("promtool", "prometheus")
    out = _run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")])
    assert "SUCCESS" in out


def test_promtool_check_and_test_rules() -> None:
    promtool = require_binary("promtool", "prometheus")
    assert "5 rules found" in _run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus/rules.yml")]
    )
    out = _run([promtool, "test", "rules", str(DEPLOY / "prometheus" / "rules_test.yml")])
    assert "SUCCESS" in out


def test_rules_query_only_defined_metrics() -> None:
    rules = _yaml(DEPLOY / "prometheus" / "rules.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= KNOWN, rule["alert"]


def test_amtool_check_config() -> None:
    amtool = require_binary("amtool", "prometheus-alertmanager")
    out = _run([amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")])
    assert "SUCCESS" in out


def test_grafana_datasource_provisioning_format() -> None:
    doc = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert {"name", "type", "uid", "access", "url"} <= set(ds)
    assert ds["type"] == "prometheus" and ds["uid"] == DATASOURCE_UID
    assert ds["access"] in ("proxy", "direct")
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in COMPOSE["services"]


def test_grafana_dashboard_provisioning_format_and_mounts() -> None:
    doc = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "vigil.yml")
    assert doc["apiVersion"] == 1
    (p,) = doc["providers"]
    assert p["type"] == "file" and p["folderUid"] == FOLDER_UID and p["orgId"] == 1
    assert isinstance(p["disableDeletion"], bool) and isinstance(p["allowUiUpdates"], bool)
    assert isinstance(p["updateIntervalSeconds"], int)
    path = p["options"]["path"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in COMPOSE["services"]["grafana"]["volumes"]}
    assert (ROOT / mounts[path]).resolve() == DEFAULT_OUT.resolve()
    assert (
        mounts["/etc/grafana/provisioning/dashboards"] == "./deploy/grafana/provisioning/dashboards"
    )
    assert sorted(DEFAULT_OUT.glob("*.json")), "run python -m vigil.dashboards"


@pytest.mark.parametrize("svc", ["replay-ssh", "replay-zeek"])
def test_replay_producers_feed_the_bus_the_flow_reads(svc: str) -> None:
    cmd = COMPOSE["services"][svc]["command"]
    assert cmd[0] == "replay" and "--to" in cmd
    cfg = load_config(DEPLOY / "vigil" / "vigil.yaml")
    (inp,) = cfg.security.inputs
    assert cmd[cmd.index("--to") + 1] == inp.url  # type: ignore[union-attr]
