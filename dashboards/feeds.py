"""One dashboard per feed: security, service queues, media, indicators.

Every feed dashboard has the same core, built from the metrics every flow feeds through
:class:`vigil.sinks.prometheus.FlowMetrics`: inputs, detections by kind and severity, top
offenders, and each monitored series against its expected band (one panel per series,
repeated over the ``series`` variable), with the feed's alerts as annotations. Each feed
adds its own panels; those that wait for a metric another feature has not defined yet are
listed in :data:`WAITING` and drawn as placeholders, so turning one into a panel is one line.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog.builder import Builder
from vigil.dashboards.core import (
    Q,
    Waiting,
    add_panels,
    alert_annotation,
    alerts_annotation_expr,
    band,
    bars,
    dashboard,
    feed_uid,
    row,
    stat,
    table_panel,
    timeseries,
    variable,
    waiting,
)
from vigil.sinks.prometheus import (
    DETECTIONS,
    EVENTS,
    LINES,
    MEDIA_ITEMS,
    MEDIA_MENTIONS,
    MEDIA_STORIES,
    MEDIA_TOP_TERMS,
    QUEUE_ARRIVALS,
    QUEUE_BACKLOG,
    QUEUE_BREACHES,
    QUEUE_CHANNEL_ARRIVALS,
    QUEUE_COMPLETIONS,
    QUEUE_ON_TIME,
    QUEUE_OVERDUE,
    QUEUE_PROCESSING,
    SERIES_EXPECTED,
    SERIES_LOWER,
    SERIES_SCORE,
    SERIES_UPPER,
    SERIES_VALUE,
    TOP_OFFENDER,
)

#: Feed -> title of its dashboard. The feed is also the ``flow`` label of its inputs.
FEEDS: dict[str, str] = {
    "security": "Vigil / Security",
    "service_queues": "Vigil / Service queues",
    "media": "Vigil / Media mentions",
    "indicators": "Vigil / Indicators",
}

#: Feeds whose flows report normalized events (``vigil_events_total``) and monitored series
#: with baselines (``vigil_series_*``); the other feeds' dashboards leave those panels out.
EVENT_FEEDS = frozenset({"security", "service_queues"})
SERIES_FEEDS = frozenset({"security", "media", "indicators"})

#: Panels waiting for metrics other features define, per feed. When a metric lands in
#: sinks/prometheus.py (or the flow module), replace its line in ``_specific`` below.
WAITING: dict[str, tuple[Waiting, ...]] = {
    "security": (),
    "service_queues": (),
    "media": (),
    "indicators": (
        Waiting(
            "Indicator readings by source",
            "an indicator readings counter with a `source` label (flows/indicators/flow.py)",
        ),
    ),
}


def _core(feed: str) -> list[Builder[Any]]:
    """Panels every feed has: detections, offenders, series bands, alerts."""
    f = f'feed="{feed}"'
    fk = f'{f}, kind=~"$kind"'
    panels: list[Builder[Any]] = [
        row("Detections"),
        stat(
            "Detections by severity ($__range)",
            Q(
                f"sum by (severity) (increase({DETECTIONS}{{{fk}}}[$__range]))",
                "{{severity}}",
                instant=True,
            ),
            w=6,
            h=8,
            thresholds=((None, "green"), (1, "orange")),
        ),
        timeseries(
            "Detections per minute by kind",
            Q(f"sum by (kind) (rate({DETECTIONS}{{{fk}}}[$__rate_interval])) * 60", "{{kind}}"),
            w=10,
            stack=True,
        ),
        table_panel(
            "Top offenders",
            Q(
                f'max by (kind, entity) ({TOP_OFFENDER}{{kind=~"$kind", entity=~"$entity"}}) '
                f"and on (kind) group by (kind) ({DETECTIONS}{{{f}}})",
                instant=True,
            ),
            w=8,
            description="Heaviest entities per detection kind (summed observed values, top 10).",
        ),
    ]
    if feed in SERIES_FEEDS:
        panels += [
            row("Series against their expected band"),
            band(
                "$series against its expected band",
                value=SERIES_VALUE,
                expected=SERIES_EXPECTED,
                lower=SERIES_LOWER,
                upper=SERIES_UPPER,
                selector=f'{f}, series=~"$series"',
                w=24,
                repeat="series",
            ),
            timeseries(
                "Anomaly score by series",
                Q(f'max by (series) ({SERIES_SCORE}{{{f}, series=~"$series"}})', "{{series}}"),
                w=24,
                h=6,
            ),
        ]
    return panels


def _queues() -> list[Builder[Any]]:
    """Service-queue panels (metrics of sinks/queues.py), filtered by ``$agency``."""
    a = 'agency=~"$agency", service="_all"'
    rate = "[$__rate_interval]"
    return [
        row("Service levels"),
        bars(
            "On-time % by agency",
            Q(f"max by (agency) ({QUEUE_ON_TIME}{{{a}}})", "{{agency}}", instant=True),
            unit="percentunit",
            w=8,
        ),
        timeseries(
            "Backlog and overdue requests by agency",
            Q(f"max by (agency) ({QUEUE_BACKLOG}{{{a}}})", "backlog {{agency}}"),
            Q(f"max by (agency) ({QUEUE_OVERDUE}{{{a}}})", "overdue {{agency}}"),
            w=8,
        ),
        timeseries(
            "Processing time p50 and p90 by agency",
            Q(f'max by (agency) ({QUEUE_PROCESSING}{{{a}, quantile="0.5"}})', "p50 {{agency}}"),
            Q(f'max by (agency) ({QUEUE_PROCESSING}{{{a}, quantile="0.9"}})', "p90 {{agency}}"),
            unit="s",
            w=8,
        ),
        timeseries(
            "Arrivals, completions and deadline breaches per minute",
            Q(f"sum(rate({QUEUE_ARRIVALS}{{{a}}}{rate})) * 60", "arrivals"),
            Q(f"sum(rate({QUEUE_COMPLETIONS}{{{a}}}{rate})) * 60", "completions"),
            Q(f"sum(rate({QUEUE_BREACHES}{{{a}}}{rate})) * 60", "deadline breaches"),
        ),
        timeseries(
            "Arrivals per minute by channel",
            Q(
                f'sum by (channel) (rate({QUEUE_CHANNEL_ARRIVALS}{{agency=~"$agency"}}{rate})) '
                "* 60",
                "{{channel}}",
            ),
            stack=True,
        ),
    ]


def _media() -> list[Builder[Any]]:
    """Media panels (metrics of flows/media/metrics.py)."""
    rate = "[$__rate_interval]"
    return [
        row("Mentions"),
        timeseries(
            "Mentions per minute by sentiment",
            Q(f"sum by (sentiment) (rate({MEDIA_MENTIONS}{rate})) * 60", "{{sentiment}}"),
            w=8,
            stack=True,
        ),
        timeseries(
            "Mentions per minute by source",
            Q(f"sum by (source) (rate({MEDIA_MENTIONS}{rate})) * 60", "{{source}}"),
            w=8,
        ),
        timeseries(
            "Items per minute: stories and near-duplicate copies",
            Q(f"sum by (kind) (rate({MEDIA_ITEMS}{rate})) * 60", "{{kind}}"),
            w=8,
        ),
        timeseries(
            "Bursting terms (z-score)",
            Q(f"max by (term) ({MEDIA_TOP_TERMS})", "{{term}}"),
            w=12,
            description="Terms in the top-K burst set while they burst (empty when calm).",
        ),
        stat(
            "Emerging stories ($__range)",
            Q(f"sum(increase({MEDIA_STORIES}[$__range]))", instant=True),
            w=12,
            h=8,
        ),
    ]


def _specific(feed: str) -> list[Builder[Any]]:
    """Panels of one feed only (the place to add a panel when its metric lands)."""
    fl = f'flow="{feed}"'
    panels: list[Builder[Any]] = [
        row("Inputs"),
        timeseries(
            "Lines per second by format and outcome",
            Q(
                f"sum by (format, outcome) (rate({LINES}{{{fl}}}[$__rate_interval]))",
                "{{format}} {{outcome}}",
            ),
            w=12 if feed in EVENT_FEEDS else 24,
        ),
    ]
    if feed in EVENT_FEEDS:
        panels.append(
            timeseries(
                "Events per second by dataset and action",
                Q(
                    f"sum by (dataset, action) (rate({EVENTS}{{{fl}}}[$__rate_interval]))",
                    "{{dataset}} {{action}}",
                ),
            )
        )
    if feed == "service_queues":
        panels += _queues()
    if feed == "media":
        panels += _media()
    panels += [waiting(w) for w in WAITING[feed]]
    return panels


def feed_dashboard(feed: str) -> gd.Dashboard:
    """The dashboard of one feed (uid ``vigil-feed-<feed>``).

    Parameters
    ----------
    feed
        A key of :data:`FEEDS`.

    Examples
    --------
    >>> from vigil.dashboards.core import to_dict
    >>> d = to_dict(feed_dashboard("security"))
    >>> d["uid"], [v["name"] for v in d["templating"]["list"]]
    ('vigil-feed-security', ['series', 'kind', 'entity'])
    """
    f = f'feed="{feed}"'
    b = dashboard(
        feed_uid(feed),
        FEEDS[feed],
        description=f"The {feed} feed: inputs, detections, offenders, series and their bands.",
        tags=["feed", feed],
    )
    if feed == "service_queues":
        b = b.with_variable(variable("agency", f"label_values({QUEUE_ARRIVALS}, agency)"))
    if feed in SERIES_FEEDS:
        b = b.with_variable(variable("series", f"label_values({SERIES_VALUE}{{{f}}}, series)"))
    b = b.with_variable(variable("kind", f"label_values({DETECTIONS}{{{f}}}, kind)"))
    b = b.with_variable(
        variable("entity", f'label_values({TOP_OFFENDER}{{kind=~"$kind"}}, entity)')
    )
    b = b.annotation(alert_annotation("Detections", alerts_annotation_expr(DETECTIONS, f)))
    return add_panels(b, [*_specific(feed), *_core(feed)])


def security() -> gd.Dashboard:
    """The security feed's dashboard."""
    return feed_dashboard("security")


def service_queues() -> gd.Dashboard:
    """The public-service queue feed's dashboard."""
    return feed_dashboard("service_queues")


def media() -> gd.Dashboard:
    """The media-mentions feed's dashboard."""
    return feed_dashboard("media")


def indicators() -> gd.Dashboard:
    """The indicator feed's dashboard."""
    return feed_dashboard("indicators")
