"""Configuration section of the security feed: its inputs and detection rules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from vigil.flows.config.base import Frozen, Severity, known_zone
from vigil.flows.config.detectors import DetectorConfig, EWMAZScoreConfig
from vigil.flows.inputs import InputConfig


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
    # Any detector kind (flows/config/detectors.py); EWMA by default.
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
    timezone: str = Field(
        default="UTC",
        description="IANA time zone of syslog and iptables/ufw timestamps (they carry none)",
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

    _tz_ok = field_validator("timezone")(known_zone)
