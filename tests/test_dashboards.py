"""Dashboards as code: metric names come from the sinks, the JSON is what Grafana expects.

The queries are run against a real Prometheus in ``tests/test_dashboards_live.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import vigil.sinks.prometheus
from conftest import HttpReceiver, Reply
from prometheus_client import CollectorRegistry, ProcessCollector
from vigil.dashboards import DASHBOARDS, DEFAULT_OUT, build_all, dumps
from vigil.dashboards.core import (
    CLIENT_METRICS,
    DATASOURCE_UID,
    PROMETHEUS_METRICS,
    feed_uid,
)
from vigil.dashboards.feeds import FEEDS, SERIES_FEEDS
from vigil.dashboards.feeds import WAITING as FEED_WAITING
from vigil.dashboards.promql import metric_names, queries
from vigil.flows.cli import main as vigil_main
from vigil.flows.cli.dashboards import push

BOARDS = build_all()

#: Every metric a dashboard may query: the sinks' names, the client's default collectors,
#: and Prometheus's own ``up``.
KNOWN = set(vigil.sinks.prometheus.METRIC_NAMES) | set(CLIENT_METRICS) | set(PROMETHEUS_METRICS)


def defined(name: str) -> bool:
    """A metric some sink defines, or a histogram's ``_bucket``/``_sum``/``_count`` series."""
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in KNOWN or base in KNOWN


def unknown_metrics(board: dict[str, Any]) -> dict[str, set[str]]:
    """Queries naming a metric nobody defines, by panel/annotation/variable title."""
    out: dict[str, set[str]] = {}
    for q in queries(board):
        bad = {m for m in metric_names(q.expr) if not defined(m)}
        if bad:
            out[f"{q.where} {q.title!r}"] = bad
    return out


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_queried_metric_is_defined_by_a_sink(name: str) -> None:
    board = BOARDS[name]
    assert queries(board), "a dashboard without queries"
    assert unknown_metrics(board) == {}


def test_a_renamed_metric_is_caught() -> None:
    board = json.loads(json.dumps(BOARDS["engine"]))
    board["panels"][1]["targets"][0]["expr"] = "sum(rate(vigil_lines_renamed_total[5m]))"
    assert unknown_metrics(board) == {
        f"panel {board['panels'][1]['title']!r}": {"vigil_lines_renamed_total"}
    }


def test_client_metrics_are_what_prometheus_client_exports() -> None:
    r = CollectorRegistry()
    ProcessCollector(registry=r)
    exported = {s.name for m in r.collect() for s in m.samples}
    assert set(CLIENT_METRICS) <= exported


def test_uids_are_stable_and_unique() -> None:
    uids = {name: b["uid"] for name, b in BOARDS.items()}
    assert uids == {
        "overview": "vigil-overview",
        "security": "vigil-feed-security",
        "service_queues": "vigil-feed-service_queues",
        "media": "vigil-feed-media",
        "indicators": "vigil-feed-indicators",
        "engine": "vigil-engine",
    }
    assert all(b["id"] is None for b in BOARDS.values())  # Grafana assigns ids


def _datasources(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            found.append(node["datasource"])
        for v in node.values():
            found += _datasources(v)
    elif isinstance(node, list):
        for v in node:
            found += _datasources(v)
    return found


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_prometheus_is_referenced_by_uid(name: str) -> None:
    refs = _datasources(BOARDS[name])
    assert refs
    for ref in refs:
        if ref.get("type") == "grafana":  # the built-in annotation query
            continue
        assert ref == {"type": "prometheus", "uid": DATASOURCE_UID}
    for p in BOARDS[name]["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == DATASOURCE_UID
            assert t["refId"]


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    cells: set[tuple[int, int]] = set()
    for p in BOARDS[name]["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps at {(x, y)}"
                cells.add((x, y))


@pytest.mark.parametrize("feed", list(FEEDS))
def test_feed_dashboards_have_variables_bands_and_alert_annotations(feed: str) -> None:
    b = BOARDS[feed]
    names = [v["name"] for v in b["templating"]["list"]]
    assert names[-2:] == ["kind", "entity"]
    assert ("agency" in names) == (feed == "service_queues")
    assert ("series" in names) == (feed in SERIES_FEEDS)
    if feed in SERIES_FEEDS:  # one band panel per series, the band filled between edges
        band = next(p for p in b["panels"] if p.get("repeat") == "series")
        assert [t["legendFormat"] for t in band["targets"]] == [
            "value",
            "expected",
            "lower",
            "upper",
        ]
        upper = next(
            o for o in band["fieldConfig"]["overrides"] if o["matcher"]["options"] == "upper"
        )
        assert {"id": "custom.fillBelowTo", "value": "lower"} in upper["properties"]
    anns = [a for a in b["annotations"]["list"] if "expr" in a]
    assert len(anns) == 1
    assert f'feed="{feed}"' in anns[0]["expr"]
    titles = [p["title"] for p in b["panels"]]
    for w in FEED_WAITING[feed]:
        assert w.title in titles  # a placeholder holds its place until the metric lands


def test_overview_links_into_every_feed_dashboard() -> None:
    ov = BOARDS["overview"]
    links = [
        link["url"]
        for p in ov["panels"]
        for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]
    assert links and all(u.startswith("/d/vigil-feed-${__field.labels.flow}") for u in links)
    # The link's target uid is the flow label: every feed's uid must follow that rule.
    assert {BOARDS[f]["uid"] for f in FEEDS} == {feed_uid(f) for f in FEEDS}
    assert ov["links"][0]["type"] == "dashboards" and ov["links"][0]["tags"] == ["vigil"]


def test_provisioned_json_is_up_to_date() -> None:
    """deploy/grafana/dashboards/ is what the stack mounts (python -m vigil.dashboards)."""
    for name, board in BOARDS.items():
        path = DEFAULT_OUT / f"{name}.json"
        assert path.read_text(encoding="utf-8") == dumps(board), (
            f"{path} is stale: run `python -m vigil.dashboards`"
        )


def test_vigil_dashboards_build_writes_one_file_per_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vigil_main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.json" for n in DASHBOARDS)
    assert json.loads((tmp_path / "overview.json").read_text())["uid"] == "vigil-overview"
    assert capsys.readouterr().out.count(".json") == len(DASHBOARDS)


def _json(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, {"Content-Type": "application/json"}, json.dumps(body).encode())


def test_push_creates_the_folder_and_posts_each_dashboard(http_receiver: HttpReceiver) -> None:
    http_receiver.script(
        [
            _json(404, {"message": "folder not found"}),
            _json(200, {"uid": "vigil", "title": "Vigil"}),
            *[_json(200, {"status": "success", "uid": b["uid"]}) for b in BOARDS.values()],
        ]
    )
    answers = push(http_receiver.url.rstrip("/"), "sa-token", folder_uid="vigil")
    assert [a["status"] for a in answers] == ["success"] * len(BOARDS)
    reqs = http_receiver.requests
    assert [(r.method, r.path) for r in reqs] == [
        ("GET", "/api/folders/vigil"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(BOARDS),
    ]
    assert all(r.headers["authorization"] == "Bearer sa-token" for r in reqs)
    assert reqs[1].json() == {"title": "Vigil", "uid": "vigil"}
    for r, board in zip(reqs[2:], BOARDS.values(), strict=True):
        body = r.json()
        assert set(body) == {"dashboard", "overwrite", "folderUid"}
        assert body["overwrite"] is True and body["folderUid"] == "vigil"
        assert body["dashboard"] == board
        assert r.headers["content-type"].startswith("application/json")


def test_push_cli_with_basic_auth_and_an_existing_folder(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    monkeypatch.setenv("GRAFANA_PASSWORD", "s3cret")
    http_receiver.script(
        [_json(200, {"uid": "vigil"})]
        + [_json(200, {"status": "success", "url": f"/d/{b['uid']}"}) for b in BOARDS.values()]
    )
    url = http_receiver.url.rstrip("/")
    assert vigil_main(["dashboards", "push", "--grafana-url", url]) == 0
    reqs = http_receiver.requests
    assert [r.method for r in reqs] == ["GET"] + ["POST"] * len(BOARDS)
    assert reqs[0].headers["authorization"].startswith("Basic ")  # admin:s3cret
    assert "/d/vigil-overview" in capsys.readouterr().out


def test_push_cli_without_credentials_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for v in ("GRAFANA_TOKEN", "GRAFANA_PASSWORD"):
        monkeypatch.delenv(v, raising=False)
    assert vigil_main(["dashboards", "push", "--grafana-url", "http://127.0.0.1:9"]) == 2
    assert "GRAFANA_TOKEN" in capsys.readouterr().err


def test_push_cli_reports_a_refusal(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", "bad")
    http_receiver.script([_json(401, {"message": "invalid API key"})])
    url = http_receiver.url.rstrip("/")
    assert vigil_main(["dashboards", "push", "--grafana-url", url]) == 1
    assert "refused" in capsys.readouterr().err
