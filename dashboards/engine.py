"""Engine health: is Vigil itself keeping up, losing nothing, and delivering its alerts?

Throughput in and out of every flow, dead letters by step and reason, late events,
watermark lag (``time() - vigil_event_time_seconds``), time since each flow's last batch,
alert delivery outcomes and failures, the health flow's own detections (``feed="engine"``,
see :mod:`vigil.flows.health.flow`), and each process's CPU, memory and file descriptors from
prometheus_client's default collectors.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gd
from vigil.dashboards.core import (
    PROCESS_CPU,
    PROCESS_OPEN_FDS,
    PROCESS_RSS,
    UP,
    VIGIL_JOB,
    Q,
    Waiting,
    add_panels,
    alert_annotation,
    alerts_annotation_expr,
    bars,
    dashboard,
    row,
    stat,
    timeseries,
    variable,
    waiting,
)
from vigil.sinks.prometheus import (
    ALERTING_ALERTS,
    ALERTING_DELIVERIES,
    ALERTING_DELIVERY_LATENCY,
    ALERTING_NOTIFICATIONS,
    ALERTING_OUTBOX_DEPTH,
    DEAD_LETTERS,
    DETECTIONS,
    DETECTOR_SECONDS,
    EVENT_TIME,
    EVENTS,
    LAST_BATCH,
    LATE_EVENTS,
    LINES,
)

UID = "vigil-engine"

#: Panels waiting for metrics other features define. When one lands, replace its line.
WAITING: tuple[Waiting, ...] = ()


def engine() -> gd.Dashboard:
    """The engine-health dashboard (uid ``vigil-engine``).

    Examples
    --------
    >>> from vigil.dashboards.core import to_dict
    >>> to_dict(engine())["uid"]
    'vigil-engine'
    """
    fl = 'flow=~"$flow"'
    job = f'job="{VIGIL_JOB}", instance=~"$instance"'
    rate = "[$__rate_interval]"
    b = dashboard(
        UID,
        "Vigil / Engine health",
        description="Throughput, losses, lag, delivery and resources of every Vigil process.",
        tags=["engine"],
    )
    b = b.with_variable(variable("flow", f"label_values({LINES}, flow)"))
    b = b.with_variable(variable("instance", f'label_values({UP}{{job="{VIGIL_JOB}"}}, instance)'))
    b = b.annotation(
        alert_annotation(
            "Engine health alerts", alerts_annotation_expr(DETECTIONS, 'feed="engine"'), "orange"
        )
    )
    panels = [
        row("Throughput"),
        stat(
            "Processes up",
            Q(f'sum({UP}{{job="{VIGIL_JOB}"}})', instant=True),
            w=4,
            h=8,
            thresholds=((None, "red"), (1, "green")),
        ),
        timeseries(
            "Lines in per second by flow and outcome",
            Q(f"sum by (flow, outcome) (rate({LINES}{{{fl}}}{rate}))", "{{flow}} {{outcome}}"),
            w=10,
        ),
        timeseries(
            "Events per second by flow and dataset",
            Q(f"sum by (flow, dataset) (rate({EVENTS}{{{fl}}}{rate}))", "{{flow}} {{dataset}}"),
            w=10,
        ),
        timeseries(
            "Detections and notifications out per minute",
            Q(f"sum by (feed) (rate({DETECTIONS}{rate})) * 60", "detections {{feed}}"),
            Q(
                f"sum by (receiver, reason) (rate({ALERTING_NOTIFICATIONS}{rate})) * 60",
                "notifications {{receiver}} {{reason}}",
            ),
        ),
        bars(
            "Engine health alerts by kind ($__range)",
            Q(
                f'sum by (kind) (increase({DETECTIONS}{{feed="engine"}}[$__range]))',
                "{{kind}}",
                instant=True,
            ),
            w=12,
            description="Detections of the health flow (flows/health/flow.py).",
        ),
        row("Losses and lag"),
        timeseries(
            "Dead letters per minute by step and reason",
            Q(
                f"sum by (flow, step, reason) (rate({DEAD_LETTERS}{{{fl}}}{rate})) * 60",
                "{{flow}} {{step}}: {{reason}}",
            ),
            w=8,
        ),
        stat(
            "Dead-letter ratio ($__range)",
            Q(
                f'(sum by (flow) (increase({LINES}{{{fl}, outcome="dead_lettered"}}[$__range])) '
                f"or sum by (flow) (increase({LINES}{{{fl}}}[$__range])) * 0) "
                f"/ sum by (flow) (increase({LINES}{{{fl}}}[$__range]))",
                "{{flow}}",
                instant=True,
            ),
            unit="percentunit",
            w=4,
            h=8,
            thresholds=((None, "green"), (0.01, "orange"), (0.05, "red")),
        ),
        timeseries(
            "Late events per minute",
            # A flow's late counter appears with its first late event: 0 until then.
            Q(
                f"sum by (flow) (rate({LATE_EVENTS}{{{fl}}}{rate})) * 60 "
                f"or sum by (flow) (rate({LINES}{{{fl}}}{rate})) * 0",
                "{{flow}}",
            ),
            w=12,
        ),
        timeseries(
            "Watermark lag",
            Q(f"time() - max by (flow) ({EVENT_TIME}{{{fl}}})", "{{flow}}"),
            unit="s",
            description="Wall time minus the newest event time seen. A replay of old logs "
            "lags by their age.",
        ),
        timeseries(
            "Time since last batch",
            Q(f"time() - max by (flow) ({LAST_BATCH}{{{fl}}})", "{{flow}}"),
            unit="s",
        ),
        row("Alert delivery"),
        timeseries(
            "Delivery failures per minute by receiver and reason",
            Q(
                f'sum by (receiver, reason) (rate({ALERTING_DELIVERIES}{{outcome!="delivered"}}'
                f"{rate})) * 60",
                "{{receiver}} {{reason}}",
            ),
            w=8,
        ),
        timeseries(
            "Alerts by lifecycle state",
            Q(f"sum by (state) ({ALERTING_ALERTS})", "{{state}}"),
            w=8,
        ),
        timeseries(
            "Alert outbox depth",
            Q(f"sum by (state) ({ALERTING_OUTBOX_DEPTH})", "{{state}}"),
            w=8,
            description="Alerts waiting for delivery (pending) and given up (dead).",
        ),
        timeseries(
            "Alerting deliveries per minute by receiver and outcome",
            Q(
                f"sum by (receiver, outcome) (rate({ALERTING_DELIVERIES}{rate})) * 60",
                "{{receiver}} {{outcome}}",
            ),
            w=12,
        ),
        timeseries(
            "Detection-to-receiver latency p90",
            Q(
                "histogram_quantile(0.9, sum by (receiver, le) "
                f"(rate({ALERTING_DELIVERY_LATENCY}_bucket{rate})))",
                "{{receiver}}",
            ),
            unit="s",
            w=12,
        ),
        timeseries(
            "Detector latency (p50, p99) by flow",
            Q(
                "histogram_quantile(0.5, sum by (flow, le) "
                f"(rate({DETECTOR_SECONDS}_bucket{{{fl}}}{rate})))",
                "p50 {{flow}}",
            ),
            Q(
                "histogram_quantile(0.99, sum by (flow, le) "
                f"(rate({DETECTOR_SECONDS}_bucket{{{fl}}}{rate})))",
                "p99 {{flow}}",
            ),
            unit="s",
            w=12,
            description="Wall time the detection step spends on one batch of events.",
        ),
        *[waiting(w) for w in WAITING],
        row("Processes"),
        timeseries(
            "CPU (cores) by process",
            Q(f"rate({PROCESS_CPU}{{{job}}}{rate})", "{{instance}}"),
            w=8,
        ),
        timeseries(
            "Resident memory by process",
            Q(f"{PROCESS_RSS}{{{job}}}", "{{instance}}"),
            unit="bytes",
            w=8,
        ),
        timeseries(
            "Open file descriptors by process",
            Q(f"{PROCESS_OPEN_FDS}{{{job}}}", "{{instance}}"),
            w=8,
        ),
    ]
    return add_panels(b, panels)
