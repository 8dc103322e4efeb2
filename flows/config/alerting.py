"""Configuration section of the alerting pipeline (routing, grouping, silences, receivers).

Durations accept seconds or Prometheus-style strings (``30s``, ``5m``, ``4h``, ``1d``).
Secrets never appear here: ``*_env`` keys name environment variables (webhook signing
secrets, the PagerDuty routing key, a Slack webhook URL, the Grafana token, a Redis URL
with a password).

The older ``alerts:`` section (a file and one webhook) stays the simple case: with no
``alerting.receivers`` and no ``alerting.route``, :func:`effective_alerting` turns
``alerts.webhook`` into a receiver named ``default`` and a root route to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator
from vigil.flows.config.base import Frozen, known_zone
from vigil.sinks.alerting.model import Matcher, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _env_name(value: str | None, key: str) -> str | None:
    if value is not None and not value.isidentifier():
        msg = f"{key} must name an environment variable, got {value!r}"
        raise ValueError(msg)
    return value


def _matchers(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        Matcher.parse(v)  # raises ValueError with the offending text
    return values


# ---------------------------------------------------------------- receivers
class WebhookReceiverConfig(Frozen):
    """Signed Alertmanager-v4 webhook."""

    url: str
    secret_env: str | None = "VIGIL_WEBHOOK_SECRET"
    timeout_s: float = Field(default=5.0, gt=0)
    insecure_unsigned: bool = Field(
        default=False,
        description="send unsigned when the secret variable is unset (logged as a warning)",
    )

    _check = field_validator("secret_env")(lambda v: _env_name(v, "secret_env"))


class PagerDutyReceiverConfig(Frozen):
    """PagerDuty Events API v2."""

    routing_key_env: str
    url: str = "https://events.pagerduty.com/v2/enqueue"
    timeout_s: float = Field(default=10.0, gt=0)

    _check = field_validator("routing_key_env")(lambda v: _env_name(v, "routing_key_env"))


class SlackReceiverConfig(Frozen):
    """Slack-compatible incoming webhook (the URL is a secret: it comes from ``url_env``)."""

    url_env: str
    channel: str | None = None
    timeout_s: float = Field(default=5.0, gt=0)

    _check = field_validator("url_env")(lambda v: _env_name(v, "url_env"))


class ReceiverConfig(Frozen):
    """A named receiver with any of three integrations (or none: notifications are dropped)."""

    name: str = Field(min_length=1)
    language: Literal["en", "vi"] = "en"
    send_resolved: bool = True
    webhook: WebhookReceiverConfig | None = None
    pagerduty: PagerDutyReceiverConfig | None = None
    slack: SlackReceiverConfig | None = None


# ---------------------------------------------------------------- routing and muting
class RouteConfig(Frozen):
    """A node of the routing tree; unset keys are inherited from the parent."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    receiver: str | None = None
    matchers: tuple[str, ...] = ()
    group_by: tuple[str, ...] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(default=False, alias="continue")
    mute_windows: tuple[str, ...] | None = None
    routes: tuple[RouteConfig, ...] = ()

    _m = field_validator("matchers")(_matchers)


class InhibitRuleConfig(Frozen):
    """While an alert matching ``source_matchers`` fires, mute alerts matching
    ``target_matchers`` that have the same values for the ``equal`` labels."""

    source_matchers: tuple[str, ...] = Field(min_length=1)
    target_matchers: tuple[str, ...] = Field(min_length=1)
    equal: tuple[str, ...] = ()

    _m = field_validator("source_matchers", "target_matchers")(_matchers)


#: While an attack fires in a log source, that log source's volume anomaly is its echo.
DEFAULT_INHIBIT_RULES = (
    InhibitRuleConfig(
        source_matchers=(
            "feed=security",
            'alertname=~"ssh_.*|port_scan.*|ping_sweep|web_scan"',
        ),
        target_matchers=("feed=security", "alertname=volume_anomaly"),
        equal=("log_source",),
    ),
)


class SilenceConfig(Frozen):
    """A silence from the configuration (operators add more with ``vigil silence add``)."""

    matchers: tuple[str, ...] = Field(min_length=1)
    starts_at: datetime
    ends_at: datetime
    created_by: str = "config"
    comment: str = ""

    _m = field_validator("matchers")(_matchers)

    @model_validator(mode="after")
    def _aware(self) -> SilenceConfig:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            msg = "silence times need a time zone (e.g. 2024-06-01T22:00:00+07:00)"
            raise ValueError(msg)
        if self.ends_at <= self.starts_at:
            msg = "silence ends_at must be after starts_at"
            raise ValueError(msg)
        return self


class MaintenanceWindowConfig(Frozen):
    """A recurring mute (weekdays, local hours, time zone); routes may name it in
    ``mute_windows``, otherwise it applies to every alert its matchers match."""

    name: str
    matchers: tuple[str, ...] = ()
    weekdays: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = ()
    start: str = "00:00"
    end: str = "24:00"
    timezone: str = "UTC"

    _m = field_validator("matchers")(_matchers)

    _tz_ok = field_validator("timezone")(known_zone)

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        from datetime import time

        if v not in ("24:00", "24:00:00"):
            time.fromisoformat(v)
        return v


# ---------------------------------------------------------------- runtime
class StateConfig(Frozen):
    """Where alerts, groups, the notification log, silences and feedback live."""

    redis_url: str | None = None
    redis_url_env: str | None = None
    prefix: str = "vigil:alerting"
    dir: str | None = Field(
        default=None, description="without Redis; default: <alerts.file folder>/alerting"
    )
    reset: bool = Field(default=False, description="start with empty alert state (the demo)")

    _check = field_validator("redis_url_env")(lambda v: _env_name(v, "redis_url_env"))

    @field_validator("redis_url")
    @classmethod
    def _no_password(cls, v: str | None) -> str | None:
        if v is not None and "@" in v.split("//", 1)[-1].split("/", 1)[0]:
            msg = "redis_url must not carry credentials: put the URL in redis_url_env"
            raise ValueError(msg)
        return v


class TimingConfig(Frozen):
    """Lifecycle defaults and the root route's grouping timers (Alertmanager's defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = Field(
        default=300.0, description="hold of a detection that states none of its own"
    )
    lateness: Duration = Field(
        default=10.0,
        description="alert timers stay this far behind each feed's event time, for inputs "
        "not quite in time order",
    )
    resolved_retention: Duration = 86400.0
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    tick: Duration = Field(default=1.0, gt=0)


class OutboxConfig(Frozen):
    """Persisted deliveries and their retry policy."""

    dir: str | None = Field(default=None, description="without Redis; default <state dir>/outbox")
    max_attempts: int = Field(default=12, ge=1)
    backoff_base: Duration = 1.0
    backoff_max: Duration = 300.0
    jitter: float = Field(default=0.5, ge=0, le=1)
    max_age: Duration = 7 * 86400.0
    concurrency: int = Field(default=2, ge=1, le=64)
    lease: Duration = 30.0
    drain_timeout: Duration = 15.0


class AlertmanagerPushConfig(Frozen):
    """Push every alert to a Prometheus Alertmanager (it routes and notifies)."""

    url: str
    resend: Duration = 60.0
    timeout_s: float = Field(default=5.0, gt=0)


class GrafanaConfig(Frozen):
    """Annotate alert start and end in Grafana (through grafana-client)."""

    url: str
    token_env: str | None = "GRAFANA_TOKEN"
    dashboard_uid: str | None = None
    panel_id: int | None = None
    tags: tuple[str, ...] = ("vigil",)
    timeout_s: float = Field(default=5.0, gt=0)

    _check = field_validator("token_env")(lambda v: _env_name(v, "token_env"))


class AuditConfig(Frozen):
    """Audit log of every transition: the Redis stream ``<prefix>:audit`` with Redis,
    otherwise this file (default ``<state dir>/audit.jsonl``)."""

    file: str | None = None
    #: approximate cap of the stream in entries; an entry holds one engine step's records
    stream_maxlen: int = Field(default=100_000, ge=100)


class IncidentLinkConfig(Frozen):
    """Entities of several feeds that belong together: an alert matching every label of
    one entry of ``match`` (e.g. ``{feed: media, entity: so_y_te}``) joins the link."""

    name: str = Field(min_length=1)
    match: tuple[dict[str, str], ...] = Field(min_length=1)

    @field_validator("match")
    @classmethod
    def _non_empty(cls, v: tuple[dict[str, str], ...]) -> tuple[dict[str, str], ...]:
        for entry in v:
            if not entry:
                msg = "each match entry needs at least one label (e.g. {feed: media})"
                raise ValueError(msg)
        return v


class IncidentsConfig(Frozen):
    """Incidents across feeds (``alerting.incidents``): alerts of different feeds that
    share an agency or a link, within ``window_s`` of event time, become one incident."""

    enabled: bool = False
    window_s: Duration = Field(default=3600.0, gt=0)
    links: tuple[IncidentLinkConfig, ...] = ()
    agency_label: str = "agency"
    receiver: str | None = Field(
        default=None, description="receiver of incident notifications (default: the root route's)"
    )
    suppress_members: bool = Field(
        default=True,
        description="member alerts leave their groups' notifications (the incident carries them)",
    )
    retention: Duration = Field(default=7 * 86400.0, ge=0)


class AlertingConfig(Frozen):
    """Settings of the alerting pipeline every flow's detections go through."""

    clock: Literal["auto", "hybrid", "wall", "event"] = Field(
        default="auto",
        description="auto: when an input is live, time runs on with the wall clock from "
        "the newest event; event: never (replays); wall: always; hybrid: old name of auto",
    )
    state: StateConfig = StateConfig()
    timing: TimingConfig = TimingConfig()
    labels: tuple[str, ...] = Field(
        default=("agency", "team", "detector"),
        description="keys of a detection's extra pairs that become labels",
    )
    receivers: tuple[ReceiverConfig, ...] = ()
    route: RouteConfig | None = None
    inhibit_rules: tuple[InhibitRuleConfig, ...] = Field(
        default=DEFAULT_INHIBIT_RULES,
        description="default: a volume anomaly of a log source is muted while an attack "
        "alert of the same log source fires (it explains the surge)",
    )
    silences: tuple[SilenceConfig, ...] = ()
    maintenance_windows: tuple[MaintenanceWindowConfig, ...] = ()
    templates: dict[str, dict[str, dict[str, str]]] = Field(default_factory=dict)
    runbooks: dict[str, str] = Field(default_factory=dict)
    dashboard_url: str | None = Field(
        default=None,
        description="format string: {alertname} {entity} {feed} {from_ms} {to_ms}",
    )
    external_url: str = ""
    outbox: OutboxConfig = OutboxConfig()
    alertmanager: AlertmanagerPushConfig | None = None
    grafana: GrafanaConfig | None = None
    audit: AuditConfig = AuditConfig()
    incidents: IncidentsConfig = IncidentsConfig()

    @model_validator(mode="after")
    def _consistent(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            msg = f"receiver names must be unique, got {names}"
            raise ValueError(msg)
        rcv = self.incidents.receiver
        if rcv is not None and rcv not in {*names, "default", "null"}:
            msg = f"alerting.incidents.receiver {rcv!r} is not in alerting.receivers"
            raise ValueError(msg)
        if self.route is not None:
            if self.route.receiver is None:
                msg = "alerting.route needs a receiver (the root route catches everything)"
                raise ValueError(msg)
            known = {*names, "default", "null"}
            windows = {w.name for w in self.maintenance_windows}
            for node in _walk(self.route):
                if node.receiver is not None and node.receiver not in known:
                    msg = f"route receiver {node.receiver!r} is not in alerting.receivers"
                    raise ValueError(msg)
                for w in node.mute_windows or ():
                    if w not in windows:
                        msg = f"route mute window {w!r} is not in alerting.maintenance_windows"
                        raise ValueError(msg)
        for lang in self.templates:
            if lang not in ("en", "vi"):
                msg = f"templates language must be en or vi, got {lang!r}"
                raise ValueError(msg)
        return self


#: What the default route groups by (the README says so too; a test compares them).
DEFAULT_GROUP_BY = ("feed", "entity")


def _walk(route: RouteConfig) -> list[RouteConfig]:
    out = [route]
    for child in route.routes:
        out.extend(_walk(child))
    return out


def effective_alerting(alerting: AlertingConfig, legacy_webhook: Any | None) -> AlertingConfig:
    """``alerting`` with the ``alerts.webhook`` simple case folded in.

    A legacy webhook becomes a receiver named ``default`` (unless one exists); with no
    route, the root route (one group per ``feed`` and ``entity``: one notification for
    everything one attacking source does, however many ports, hosts or behaviours; one per
    series, agency or story in the other feeds) goes to
    ``default`` when it exists, else to the first receiver, else to ``null`` (alerts are tracked and
    written to the alerts file, not delivered).
    """
    receivers = list(alerting.receivers)
    names = {r.name for r in receivers}
    if legacy_webhook is not None and "default" not in names:
        receivers.append(
            ReceiverConfig(
                name="default",
                webhook=WebhookReceiverConfig(
                    url=legacy_webhook.url,
                    secret_env=legacy_webhook.secret_env,
                    timeout_s=legacy_webhook.timeout_s,
                    insecure_unsigned=legacy_webhook.insecure_unsigned,
                ),
            )
        )
        names.add("default")
    for special in ("default", "null"):
        if special not in names:
            receivers.append(ReceiverConfig(name=special))
    route = alerting.route
    if route is None:
        first = (
            "default"
            if legacy_webhook is not None
            else (alerting.receivers[0].name if alerting.receivers else "null")
        )
        route = RouteConfig(receiver=first, group_by=DEFAULT_GROUP_BY)
    return alerting.model_copy(update={"receivers": tuple(receivers), "route": route})
