"""Typed panel helpers over the Grafana Foundation SDK, shared by every Vigil dashboard.

A dashboard is a function that returns a ``grafana_foundation_sdk`` ``Dashboard`` builder
(see :mod:`dashboards`). The helpers here fix what every panel shares: the Prometheus
datasource referenced by uid, query ``refId``\\ s, sizes on Grafana's 24-column grid, and a
placeholder panel for metrics that other features have not defined yet.

Metric names never appear as literals in dashboards: they are imported from
:mod:`vigil.sinks.prometheus` (or, for the process metrics, from :data:`CLIENT_METRICS` here), so
renaming a metric breaks ``tests/test_dashboards.py`` instead of a panel.

Examples
--------
>>> from vigil.dashboards.core import Q, timeseries, to_dict
>>> p = timeseries("Lines", Q("sum(rate(vigil_lines_total[$__rate_interval]))", "lines"))
>>> t = p.build().targets[0]
>>> t.ref_id, t.datasource.uid
('A', 'vigil-prometheus')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, table, text
from grafana_foundation_sdk.builders import common as gcommon
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

#: uid of the Prometheus datasource; the provisioning file gives the datasource this uid.
DATASOURCE_UID = "vigil-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
#: Scrape job of every Vigil process (deploy/prometheus/prometheus.yml uses it).
VIGIL_JOB = "vigil"
#: Folder the dashboards live in (provisioning and ``vigil dashboards push``).
FOLDER_UID = "vigil"
FOLDER_TITLE = "Vigil"
TAG = "vigil"

# prometheus_client's default collectors (ProcessCollector, on Linux); not Vigil's names,
# so they are listed here, and tests check that the client really exports them.
PROCESS_CPU = "process_cpu_seconds_total"
PROCESS_RSS = "process_resident_memory_bytes"
PROCESS_OPEN_FDS = "process_open_fds"
PROCESS_START = "process_start_time_seconds"
#: Prometheus's own series for every scrape target.
UP = "up"
CLIENT_METRICS: tuple[str, ...] = (PROCESS_CPU, PROCESS_RSS, PROCESS_OPEN_FDS, PROCESS_START)
PROMETHEUS_METRICS: tuple[str, ...] = (UP,)

_REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def transient_metrics() -> frozenset[str]:
    """Gauges that have series only while something is happening.

    A panel on one of these may rightly be empty; the live test reports it, not fails.
    None at present: the top bursting terms stay shown until the next burst replaces them.
    """
    return frozenset()


def metric_owners() -> dict[str, str]:
    """Metric name -> the flow or feature that produces it, for metrics not every run has.

    The live dashboard test requires data from every query except those whose metrics
    come from a flow (or the alerting pipeline) that the run does not include.
    """
    import vigil.sinks.prometheus as sp

    owners = {"MEDIA_": "media", "QUEUE_": "service_queues", "ALERTING_": "alerting"}
    out = {}
    for const, value in vars(sp).items():
        for prefix, owner in owners.items():
            if const.startswith(prefix) and isinstance(value, str):
                out[value] = owner
    return out


def feed_uid(feed: str) -> str:
    """The uid of a feed's dashboard, e.g. ``vigil-feed-security``.

    The overview links to ``/d/vigil-feed-${__field.labels.flow}``, so the uid must be
    derived from the flow name alone.

    >>> feed_uid("service_queues")
    'vigil-feed-service_queues'
    """
    return f"vigil-feed-{feed}"


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel.

    Parameters
    ----------
    expr
        PromQL; may use Grafana's ``$__rate_interval``/``$__range`` and template variables.
    legend
        Legend format, e.g. ``"{{flow}}"``.
    instant
        Evaluate at the end of the time range only (stat, table, bar gauge panels).
    """

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Waiting:
    """A panel that waits for a metric another feature will define.

    Parameters
    ----------
    title
        The panel's title once it exists.
    needs
        What it waits for: the metric (and labels) and the module expected to define it.
    """

    title: str
    needs: str


def _target(q: Q, i: int, *, table_format: bool = False) -> prom.Dataquery:
    t = prom.Dataquery().expr(q.expr).ref_id(_REF_IDS[i]).datasource(DATASOURCE)
    if q.legend:
        t = t.legend_format(q.legend)
    t = t.instant() if q.instant else t.range()
    if table_format:
        t = t.format(PromQueryFormat.TABLE)
    return t


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> gd.ThresholdsConfig:
    return (
        gd.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


def _link(title: str, url: str) -> gd.DashboardLink:
    return gd.DashboardLink(title).type(DashboardLinkType.LINK).url(url).keep_time(True)


def timeseries(
    title: str,
    *queries: Q,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    description: str = "",
    stack: bool = False,
) -> ts.Panel:
    """A time-series panel with one line per series of each query."""
    p = ts.Panel().title(title).datasource(DATASOURCE).unit(unit).span(w).height(h)
    p = p.fill_opacity(25 if stack else 8).line_width(1)
    if stack:
        p = p.stacking(gcommon.StackingConfig().mode(common.StackingMode.NORMAL))
    if description:
        p = p.description(description)
    for i, q in enumerate(queries):
        p = p.with_target(_target(q, i))
    return p


def stat(
    title: str,
    *queries: Q,
    unit: str = "short",
    w: int = 6,
    h: int = 5,
    description: str = "",
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    link: tuple[str, str] | None = None,
) -> gstat.Panel:
    """A big-number panel; ``link`` is ``(title, url)`` for a data link on each value."""
    p = gstat.Panel().title(title).datasource(DATASOURCE).unit(unit).span(w).height(h)
    p = p.thresholds(_thresholds(thresholds)).color_mode(common.BigValueColorMode.BACKGROUND)
    p = p.graph_mode(common.BigValueGraphMode.NONE)
    if description:
        p = p.description(description)
    if link is not None:
        p = p.data_links([_link(*link)])
    for i, q in enumerate(queries):
        p = p.with_target(_target(q, i))
    return p


def bars(
    title: str,
    *queries: Q,
    unit: str = "short",
    w: int = 8,
    h: int = 8,
    description: str = "",
) -> bargauge.Panel:
    """Horizontal bars, one per series (instant queries)."""
    p = bargauge.Panel().title(title).datasource(DATASOURCE).unit(unit).span(w).height(h)
    p = p.orientation(common.VizOrientation.HORIZONTAL).display_mode(
        common.BarGaugeDisplayMode.BASIC
    )
    if description:
        p = p.description(description)
    for i, q in enumerate(queries):
        p = p.with_target(_target(q, i))
    return p


def table_panel(
    title: str, q: Q, *, w: int = 12, h: int = 8, description: str = "", hide: Sequence[str] = ()
) -> table.Panel:
    """A table of one instant query (``format: table``); ``hide`` lists columns to drop."""
    p = table.Panel().title(title).datasource(DATASOURCE).span(w).height(h)
    if description:
        p = p.description(description)
    p = p.with_target(_target(q, 0, table_format=True))
    excluded = {"Time": True, **{c: True for c in hide}}
    p = p.with_transformation(
        DataTransformerConfig(id_val="organize", options={"excludeByName": excluded})
    )
    return p


def band(
    title: str,
    *,
    value: str,
    expected: str,
    lower: str,
    upper: str,
    selector: str,
    w: int = 12,
    h: int = 8,
    repeat: str | None = None,
) -> ts.Panel:
    """The value of a series with its expected value and the band between lower and upper.

    The band is drawn by filling from the ``upper`` line down to the ``lower`` line
    (Grafana's ``fillBelowTo``). With ``repeat`` set to a variable name, Grafana draws one
    panel per selected value, so each panel holds a single series.
    """
    p = ts.Panel().title(title).datasource(DATASOURCE).unit("short").span(w).height(h)
    p = p.line_width(1).fill_opacity(0)
    for i, (metric, legend) in enumerate(
        ((value, "value"), (expected, "expected"), (lower, "lower"), (upper, "upper"))
    ):
        p = p.with_target(_target(Q(f"max({metric}{{{selector}}})", legend), i))
    p = p.override_by_name(
        "upper",
        [
            DynamicConfigValue(id_val="custom.fillBelowTo", value="lower"),
            DynamicConfigValue(id_val="custom.fillOpacity", value=18),
            DynamicConfigValue(id_val="custom.lineWidth", value=0),
            DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"}),
        ],
    )
    p = p.override_by_name(
        "lower",
        [
            DynamicConfigValue(id_val="custom.lineWidth", value=0),
            DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"}),
        ],
    )
    p = p.override_by_name(
        "expected",
        [
            DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [6, 4]}),
            DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"}),
        ],
    )
    p = p.override_by_name(
        "value",
        [
            DynamicConfigValue(id_val="custom.lineWidth", value=2),
            DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "orange"}),
        ],
    )
    if repeat:
        p = p.repeat(repeat).repeat_direction("h").max_per_row(2)
    return p


def waiting(item: Waiting, *, w: int = 8, h: int = 5) -> text.Panel:
    """A text panel holding the place of a panel whose metric is not defined yet."""
    return (
        text.Panel().title(item.title).span(w).height(h).content(f"Waiting for **{item.needs}**.")
    )


def row(title: str) -> gd.Row:
    """A row header spanning the grid."""
    return gd.Row(title)


def variable(
    name: str,
    query: str,
    *,
    label: str = "",
    multi: bool = True,
    include_all: bool = True,
) -> gd.QueryVariable:
    """A template variable filled from ``label_values(...)`` on the Prometheus datasource.

    ``All`` selects the regex ``.*``, so every query must match the variable with ``=~``.
    """
    v = (
        gd.QueryVariable(name)
        .label(label or name)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    if include_all:
        v = v.all_value(".*")
    return v


def alert_annotation(name: str, expr: str, colour: str = "red") -> gd.AnnotationQuery:
    """A Prometheus annotation: one marker wherever ``expr`` returns a series."""
    return (
        gd.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(colour)
        .expr(expr)
    )


def builtin_annotation() -> gd.AnnotationQuery:
    """Grafana's own annotations (what Vigil's Grafana annotation sink writes)."""
    return (
        gd.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .built_in(1)
    )


def dashboard(uid: str, title: str, *, description: str, tags: Sequence[str] = ()) -> gd.Dashboard:
    """A dashboard with Vigil's defaults: UTC, 1 h window, 30 s refresh, links to the others."""
    return (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG, *tags])
        .timezone("utc")
        .time("now-1h", "now")
        .refresh("30s")
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(
            gd.DashboardLink("Vigil dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .keep_time(True)
            .include_vars(False)
        )
        .annotation(builtin_annotation())
    )


def alerts_annotation_expr(metric: str, selector: str) -> str:
    """PromQL that returns a series wherever detections (which become alerts) were raised.

    ``increase`` misses a counter's first value (a series that appears with its first
    alert), so the second half marks series that did not exist two minutes earlier.
    """
    by = "sum by (feed, kind, severity)"
    return (
        f"{by} (increase({metric}{{{selector}}}[2m])) > 0 "
        f"or {by} ({metric}{{{selector}}} unless {metric}{{{selector}}} offset 2m)"
    )


def add_panels(b: gd.Dashboard, panels: Sequence[Builder[Any]]) -> gd.Dashboard:
    """Add panels in order; a :func:`row` starts a new row of the grid."""
    for p in panels:
        b = b.with_row(p) if isinstance(p, gd.Row) else b.with_panel(p)
    return b


def to_dict(board: gd.Dashboard) -> dict[str, Any]:
    """The dashboard as the JSON object Grafana stores (``dashboard`` of the HTTP API).

    Legacy Prometheus annotation fields the SDK does not model (``titleFormat``,
    ``tagKeys``, ``step``) are added here, so the markers carry the alert kind.
    """
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for ann in data.get("annotations", {}).get("list", []):
        if "expr" in ann:
            ann.setdefault("titleFormat", "{{kind}} ({{severity}})")
            ann.setdefault("tagKeys", "feed,kind,severity")
            ann.setdefault("step", "60s")
    data["id"] = None
    return data
