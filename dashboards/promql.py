"""Read the PromQL back out of dashboard JSON: the queries, the metric names, the variables.

Used by the tests (every metric a dashboard queries must be defined by a sink; every query
must return data from a real Prometheus) and by ``docs/make_overview.py``, which renders the
overview from real query results.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Function and aggregation names (followed by ``(``), label names in ``by (...)`` and
    label matchers, keywords, durations and Grafana variables are not metric names.

    Examples
    --------
    >>> sorted(metric_names(
    ...     'sum by (flow) (rate(vigil_lines_total{outcome="x"}[$__rate_interval])) '
    ...     '/ on (flow) group_left max(up offset 5m) or vector(0) > bool 1e3'))
    ['up', 'vigil_lines_total']
    >>> metric_names('time() - max by (flow) (vigil_event_time_seconds{flow=~"$flow"})')
    {'vigil_event_time_seconds'}
    """
    s = _STRINGS.sub('""', expr)
    s = _VARIABLES.sub("", s)
    prev = None
    while prev != s:  # nested braces or brackets (subqueries) collapse from the inside
        prev = s
        s = _BRACES.sub(" ", s)
        s = _BRACKETS.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    out = set()
    for m in _IDENT.finditer(s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        out.add(name)
    return out


def label_values_query(query: str) -> tuple[str, str] | None:
    """Split ``label_values(selector, label)`` into ``(selector, label)``.

    >>> label_values_query('label_values(vigil_series_value{feed="security"}, series)')
    ('vigil_series_value{feed="security"}', 'series')
    """
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    return (m.group(1).strip(), m.group(2)) if m else None


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL expression found in a dashboard.

    Parameters
    ----------
    dashboard
        uid of the dashboard.
    where
        ``"panel"``, ``"annotation"`` or ``"variable"``.
    title
        Panel title, annotation name or variable name.
    expr
        The expression as stored (with Grafana variables).
    instant
        Grafana evaluates it at one instant (else over the time range).
    grid
        ``(x, y, w, h)`` of the panel on the 24-column grid (panels only).
    legend
        The legend format (panels only).
    panel_type
        Grafana panel type (panels only).
    """

    dashboard: str
    where: str
    title: str
    expr: str
    instant: bool = False
    grid: tuple[int, int, int, int] = (0, 0, 0, 0)
    legend: str = ""
    panel_type: str = ""


def _panels(board: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for p in board.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows hold their panels


def queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    """Every PromQL expression of a dashboard: panel targets, annotations, variables."""
    uid = str(board["uid"])
    out: list[PanelQuery] = []
    for p in _panels(board):
        g = p.get("gridPos", {})
        grid = (g.get("x", 0), g.get("y", 0), g.get("w", 0), g.get("h", 0))
        for t in p.get("targets", []) or []:
            if "expr" in t:
                out.append(
                    PanelQuery(
                        uid,
                        "panel",
                        str(p.get("title", "")),
                        t["expr"],
                        bool(t.get("instant")) and not t.get("range"),
                        grid,
                        t.get("legendFormat", ""),
                        str(p.get("type", "")),
                    )
                )
    for a in board.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append(PanelQuery(uid, "annotation", a["name"], a["expr"]))
    for v in board.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and isinstance(q, str):
            lv = label_values_query(q)
            out.append(PanelQuery(uid, "variable", v["name"], lv[0] if lv else q))
    return out


def expand(expr: str, variables: Mapping[str, str], macros: Mapping[str, str]) -> str:
    """Replace Grafana's macros and template variables as Grafana would before querying.

    Parameters
    ----------
    variables
        Variable name -> the value to substitute (a regex for multi-value variables).
    macros
        Macro name (``__rate_interval``, ``__range`` ...) -> duration text.

    >>> expand('rate(x{s=~"$series"}[$__rate_interval])', {"series": "a|b"},
    ...        {"__rate_interval": "1m"})
    'rate(x{s=~"a|b"}[1m])'
    """
    values = {**variables, **macros}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)
