"""The overview: the operations centre's wall.

Each feed's health (time since its last batch, watermark lag) and volume, with a link from
each value into that feed's dashboard; alerts raised by severity and by feed; detections
over time; the top offenders; the worst anomaly score per feed; and the service and media
panels, which wait for their flows' metrics (:data:`WAITING`).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gd
from vigil.dashboards.core import (
    Q,
    Waiting,
    add_panels,
    alert_annotation,
    alerts_annotation_expr,
    bars,
    dashboard,
    row,
    stat,
    table_panel,
    timeseries,
)
from vigil.sinks.prometheus import (
    ALERTING_ALERTS,
    ALERTING_INCIDENTS,
    DETECTIONS,
    EVENT_TIME,
    LAST_BATCH,
    LINES,
    MEDIA_MENTIONS,
    QUEUE_ON_TIME,
    SERIES_SCORE,
    TOP_OFFENDER,
)

UID = "vigil-overview"
#: Data link from a value labelled with a flow to that feed's dashboard.
FEED_LINK = (
    "Open ${__field.labels.flow}",
    "/d/vigil-feed-${__field.labels.flow}?${__url_time_range}",
)

#: Panels waiting for metrics other features define. When one lands, replace its line.
WAITING: tuple[Waiting, ...] = ()


def overview() -> gd.Dashboard:
    """The overview dashboard (uid ``vigil-overview``).

    Examples
    --------
    >>> from vigil.dashboards.core import to_dict
    >>> to_dict(overview())["title"]
    'Vigil / Overview'
    """
    rate = "[$__rate_interval]"
    b = dashboard(
        UID,
        "Vigil / Overview",
        description="The operations centre's wall: every feed's health and volume, alerts, "
        "top offenders; click a feed to open its dashboard.",
        tags=["overview"],
    )
    b = b.annotation(
        alert_annotation(
            "Critical detections", alerts_annotation_expr(DETECTIONS, 'severity="critical"')
        )
    )
    panels = [
        row("Feeds"),
        stat(
            "Lines per minute by feed",
            Q(f"sum by (flow) (rate({LINES}{rate})) * 60", "{{flow}}", instant=True),
            w=8,
            link=FEED_LINK,
        ),
        stat(
            "Seconds since last batch",
            Q(f"time() - max by (flow) ({LAST_BATCH})", "{{flow}}", instant=True),
            unit="s",
            w=8,
            link=FEED_LINK,
            thresholds=((None, "green"), (120, "orange"), (600, "red")),
            description="A feed that stops sending turns orange after 2 min, red after 10.",
        ),
        stat(
            "Watermark lag by feed",
            Q(f"time() - max by (flow) ({EVENT_TIME})", "{{flow}}", instant=True),
            unit="s",
            w=8,
            link=FEED_LINK,
            thresholds=((None, "green"), (300, "orange"), (3600, "red")),
            description="How far event time trails wall time (a replay of old logs lags by "
            "their age).",
        ),
        row("Alerts"),
        stat(
            "Alerts raised by severity ($__range)",
            Q(
                f"sum by (severity) (increase({DETECTIONS}[$__range]))",
                "{{severity}}",
                instant=True,
            ),
            w=8,
            h=6,
            thresholds=((None, "green"), (1, "orange")),
        ),
        bars(
            "Alerts raised by feed ($__range)",
            Q(f"sum by (feed) (increase({DETECTIONS}[$__range]))", "{{feed}}", instant=True),
            w=8,
            h=6,
        ),
        stat(
            "Alerts firing now",
            Q(f'sum({ALERTING_ALERTS}{{state="firing"}})', "firing", instant=True),
            w=4,
            h=6,
            thresholds=((None, "green"), (1, "red")),
            description="Alerts in the alerting pipeline's firing state (sinks/alerting/).",
        ),
        bars(
            "Firing alerts by severity and agency",
            Q(
                f'sum by (severity, agency) ({ALERTING_ALERTS}{{state="firing"}})',
                "{{severity}} {{agency}}",
                instant=True,
            ),
            w=4,
            h=6,
        ),
        stat(
            "Incidents across feeds",
            Q(f"sum by (state) ({ALERTING_INCIDENTS})", "{{state}}", instant=True),
            w=24,
            h=4,
            thresholds=((None, "green"), (1, "red")),
            description="Alerts of several feeds joined into one incident (same agency or a "
            "configured link, within alerting.incidents.window_s): open, updated, resolved. "
            "vigil incidents list shows them; 0 while alerting.incidents is off.",
        ),
        timeseries(
            "Detections per minute by feed",
            Q(f"sum by (feed) (rate({DETECTIONS}{rate})) * 60", "{{feed}}"),
            w=12,
            stack=True,
        ),
        table_panel(
            "Top offenders",
            Q(f"topk(10, max by (kind, entity) ({TOP_OFFENDER}))", instant=True),
            w=12,
        ),
        row("Series, services and media"),
        timeseries(
            "Worst anomaly score per feed",
            Q(f"max by (feed) ({SERIES_SCORE})", "{{feed}}"),
            w=12,
        ),
        bars(
            "Service on-time % by agency",
            Q(f'max by (agency) ({QUEUE_ON_TIME}{{service="_all"}})', "{{agency}}", instant=True),
            unit="percentunit",
            w=6,
        ),
        timeseries(
            "Mentions per minute by sentiment",
            Q(f"sum by (sentiment) (rate({MEDIA_MENTIONS}{rate})) * 60", "{{sentiment}}"),
            w=6,
            stack=True,
        ),
    ]
    return add_panels(b, panels)
