"""Vigil's Grafana dashboards, as code.

Each dashboard is a function returning a Grafana Foundation SDK ``Dashboard`` builder;
:data:`DASHBOARDS` maps the JSON file name to that function. ``python -m vigil.dashboards
[--out DIR]`` (or ``vigil dashboards build``) writes one JSON file per dashboard, which
Grafana provisions from disk (``deploy/grafana/provisioning/dashboards/vigil.yml``) or
``vigil dashboards push`` uploads through Grafana's HTTP API.

Every metric a panel queries is a constant imported from :mod:`vigil.sinks.prometheus`;
``tests/test_dashboards.py`` fails when a query names a metric no sink defines.

Examples
--------
>>> boards = build_all()
>>> sorted(b["uid"] for b in boards.values())[:2]
['vigil-engine', 'vigil-feed-indicators']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from vigil.dashboards.core import to_dict
from vigil.dashboards.engine import engine
from vigil.dashboards.feeds import indicators, media, security, service_queues
from vigil.dashboards.overview import overview

#: File name (without ``.json``) -> the function that builds that dashboard.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "overview": overview,
    "security": security,
    "service_queues": service_queues,
    "media": media,
    "indicators": indicators,
    "engine": engine,
}

#: Where ``python -m vigil.dashboards`` (from a source tree) writes by default: the folder
#: the compose stack mounts. The ``vigil dashboards`` command writes where it is told.
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana's JSON model, keyed by file name."""
    return {name: to_dict(fn()) for name, fn in DASHBOARDS.items()}


def dumps(board: dict[str, Any]) -> str:
    """Stable JSON text of a dashboard (sorted keys, so regenerating changes nothing)."""
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def write_all(out: Path | str = DEFAULT_OUT) -> list[Path]:
    """Write ``<name>.json`` for every dashboard into ``out``; return the paths written."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, board in build_all().items():
        p = d / f"{name}.json"
        p.write_text(dumps(board), encoding="utf-8")
        paths.append(p)
    return paths
