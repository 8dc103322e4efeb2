"""Vigil's one configuration schema, and how to load and explain it.

Sections of later flows live in ``flows/config_<area>.py`` and are assembled here into one
tree. Every model is frozen and rejects unknown keys, so a typo such as ``failurs:`` fails at
startup with its path (``security.rules.brute_force.failurs``). Secrets never live in the
file: a field ending in ``_env`` names an environment variable that holds the secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from vigil.flows.config_alerting import AlertingConfig
from vigil.flows.config_base import Frozen, InputName, Severity
from vigil.flows.config_detectors import DetectorConfig, EWMAZScoreConfig
from vigil.flows.config_indicators import IndicatorsConfig
from vigil.flows.config_media import MediaConfig
from vigil.flows.config_queues import ServiceQueuesConfig
from vigil.flows.errors import ConfigError

Format = Literal[
    "ssh", "syslog", "zeek", "suricata", "iptables", "ufw", "access", "nginx", "apache"
]


# ---------------------------------------------------------------- inputs
class FileInput(Frozen):
    """Read files matching glob patterns; with ``follow`` keep reading like ``tail -F``."""

    kind: Literal["file"] = "file"
    name: str | None = InputName
    paths: tuple[str, ...] = Field(min_length=1)
    format: Format
    follow: bool = False
    start_at_end: bool = False
    max_line_bytes: int = Field(default=65536, ge=512)


class SyslogInput(Frozen):
    """Listen for syslog (RFC 3164 / RFC 5424) on UDP and/or TCP."""

    kind: Literal["syslog"] = "syslog"
    name: str | None = InputName
    host: str = "127.0.0.1"
    port: int = Field(default=5514, ge=0, le=65535)
    udp: bool = True
    tcp: bool = True
    format: Format = "ssh"
    max_line_bytes: int = Field(default=65536, ge=512)


class ReplayInput(Frozen):
    """Replay recorded files as a live feed, in event-time order, at ``speed`` x real time."""

    kind: Literal["replay"] = "replay"
    name: str | None = InputName
    paths: tuple[str, ...] = Field(min_length=1)
    format: Format
    speed: float | None = Field(default=None, gt=0)
    max_line_bytes: int = Field(default=65536, ge=512)


class RedisStreamInput(Frozen):
    """Read the bus: Redis Streams ``<stream>:0`` ... ``<stream>:<shards-1>``.

    See ``sources/redis_streams.py`` for positions, rewinding and trimming. Every flow
    that takes ``inputs`` of this union can read the bus. Each flow needs its own ``group``.
    The password, if any, comes from the environment variable ``password_env``.
    """

    kind: Literal["redis_stream"] = "redis_stream"
    name: str | None = InputName
    url: str = "redis://127.0.0.1:6379/0"
    password_env: str | None = None
    stream: str = "vigil:lines"
    shards: int = Field(default=1, ge=1, le=1024)
    group: str = "vigil"
    format: Format = Field(default="ssh", description="for entries without a fmt field")
    batch_size: int = Field(default=1000, ge=1)
    poll_interval_s: float = Field(default=0.1, gt=0)
    ack_lag: int = Field(default=2, ge=1, description="snapshots the committed position lags")
    trim: bool = True
    start: Literal["0", "$"] = "0"
    max_line_bytes: int = Field(default=65536, ge=512)


class KafkaInput(Frozen):
    """Read Kafka topics, one line per message (needs the ``kafka`` extra; untested here)."""

    kind: Literal["kafka"] = "kafka"
    name: str | None = InputName
    brokers: tuple[str, ...] = Field(min_length=1)
    topics: tuple[str, ...] = Field(min_length=1)
    format: Format = "ssh"
    batch_size: int = Field(default=1000, ge=1)
    poll_interval_s: float = Field(default=0.1, gt=0)
    add_config: dict[str, str] = Field(default_factory=dict, description="consumer settings")
    max_line_bytes: int = Field(default=65536, ge=512)


InputConfig = Annotated[
    FileInput | SyslogInput | ReplayInput | RedisStreamInput | KafkaInput,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- detection rules
class _Rule(Frozen):
    enabled: bool = True
    severity: Severity = "warning"
    window_s: float = Field(default=600.0, gt=0)


class BruteForceRule(_Rule):
    """N authentication failures from one source within ``window_s``."""

    severity: Severity = "high"
    failures: int = Field(default=5, ge=1)


class UserEnumerationRule(_Rule):
    """Many distinct invalid user names tried from one source within ``window_s``."""

    distinct_users: int = Field(default=5, ge=1)


class CompromiseRule(_Rule):
    """A successful login from a source with ``failures`` failures within ``window_s``."""

    severity: Severity = "critical"
    failures: int = Field(default=5, ge=1)


class VerticalScanRule(_Rule):
    """One source, one target host, many distinct ports with unanswered connections.

    The default window is a day so that slow scans (a port an hour) are found too.
    """

    window_s: float = Field(default=86400.0, gt=0)
    ports: int = Field(default=20, ge=2)


class HorizontalScanRule(_Rule):
    """One source, one port, many target hosts with unanswered connections."""

    window_s: float = Field(default=3600.0, gt=0)
    hosts: int = Field(default=20, ge=2)


class PingSweepRule(_Rule):
    """One source sending ICMP to many hosts."""

    hosts: int = Field(default=20, ge=2)


class WebScanRule(_Rule):
    """One web client producing a burst of 404s or requesting many distinct paths."""

    window_s: float = Field(default=300.0, gt=0)
    not_found: int = Field(default=30, ge=1)
    distinct_paths: int = Field(default=100, ge=1)


VolumeSeries = Literal[
    "events",
    "auth_failures",
    "auth_successes",
    "connections",
    "bytes",
    "http_errors",
    "ids_alerts",
    "ids_alerts_high",
]


class VolumeRule(_Rule):
    """Per-log-source rates per tumbling window against a streaming baseline.

    Series: all events, authentication failures and successes, connections, network bytes,
    HTTP 4xx/5xx responses, IDS alerts, and IDS alerts of severity 1-2. Each listed series
    is exported as ``vigil_series_*{series="<dataset>.<series>"}`` with its band.
    """

    series: tuple[VolumeSeries, ...] = (
        "events",
        "auth_failures",
        "connections",
        "http_errors",
        "ids_alerts",
    )
    threshold: float = Field(default=6.0, gt=0, description="score above which to alert")
    min_count: int = Field(default=20, ge=0, description="a window below this count never alerts")
    # Any detector kind (flows/config_detectors.py); EWMA by default.
    detector: DetectorConfig = EWMAZScoreConfig(alpha=0.1, grace_period=30, min_std=2.0)


class SecurityRules(Frozen):
    brute_force: BruteForceRule = BruteForceRule()
    user_enumeration: UserEnumerationRule = UserEnumerationRule()
    compromise: CompromiseRule = CompromiseRule()
    vertical_scan: VerticalScanRule = VerticalScanRule()
    horizontal_scan: HorizontalScanRule = HorizontalScanRule()
    ping_sweep: PingSweepRule = PingSweepRule()
    web_scan: WebScanRule = WebScanRule()
    volume: VolumeRule = VolumeRule()


class SecurityConfig(Frozen):
    inputs: tuple[InputConfig, ...] = ()
    year: int | None = Field(
        default=None, ge=1970, le=2200, description="year of syslog lines (they carry none)"
    )
    tumbling_s: float = Field(default=60.0, gt=0, description="aggregation window")
    allowed_lateness_s: float = Field(default=300.0, ge=0)
    shards: int = Field(default=16, ge=1, le=4096)
    max_sources: int = Field(
        default=200_000, ge=100, description="tracked sources per shard; least recent evicted"
    )
    refresh_s: float = Field(
        default=60.0, gt=0, description="repeat a detection this often while it holds"
    )
    rules: SecurityRules = SecurityRules()


# ---------------------------------------------------------------- outputs
class MetricsConfig(Frozen):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class WebhookConfig(Frozen):
    url: str
    secret_env: str | None = Field(
        default="VIGIL_WEBHOOK_SECRET",
        description="environment variable holding the HMAC secret",
    )
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)


class AlertsConfig(Frozen):
    file: str | None = Field(default="vigil-out/alerts.jsonl", description='"-" = stdout')
    webhook: WebhookConfig | None = None


class DeadLetterConfig(Frozen):
    file: str | None = "vigil-out/dead_letters.jsonl"


class VigilConfig(Frozen):
    """The whole configuration file."""

    security: SecurityConfig = SecurityConfig()
    indicators: IndicatorsConfig = IndicatorsConfig()
    service_queues: ServiceQueuesConfig = ServiceQueuesConfig()
    media: MediaConfig = MediaConfig()
    alerting: AlertingConfig = AlertingConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    dead_letters: DeadLetterConfig = DeadLetterConfig()

    @model_validator(mode="after")
    def _secrets_not_inline(self) -> VigilConfig:
        wh = self.alerts.webhook
        if wh is not None and wh.secret_env is not None and not wh.secret_env.isidentifier():
            msg = (
                "alerts.webhook.secret_env must name an environment variable, "
                f"got {wh.secret_env!r}"
            )
            raise ValueError(msg)
        return self


def parse_config(data: Any) -> VigilConfig:
    """Validate already-loaded YAML data (``None`` means an empty file)."""
    return VigilConfig.model_validate(data or {})


def load_config(path: str | Path) -> VigilConfig:
    """Read and validate a YAML configuration file.

    Raises
    ------
    ConfigError
        With one line per problem, each naming the key's path.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as ex:
        msg = f"cannot read config {str(p)!r}: {ex.strerror}"
        raise ConfigError(msg) from ex
    except yaml.YAMLError as ex:
        msg = f"config {str(p)!r} is not valid YAML: {ex}"
        raise ConfigError(msg) from ex
    try:
        return parse_config(data)
    except ValidationError as ex:
        raise ConfigError(explain_errors(ex, str(p))) from ex


def explain_errors(ex: ValidationError, source: str) -> str:
    """One line per validation error: ``path: problem (got value)``."""
    lines = [f"{source}: {ex.error_count()} problem(s)"]
    for err in ex.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (misspelt?)")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: required key is missing")
        else:
            lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def webhook_secret(cfg: WebhookConfig, environ: dict[str, str] | None = None) -> bytes | None:
    """The webhook's HMAC secret, read from the environment variable the config names."""
    env = os.environ if environ is None else environ
    if cfg.secret_env is None:
        return None
    val = env.get(cfg.secret_env)
    return val.encode() if val else None
