"""Configuration section of the security feed: its inputs and detection rules."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator
from vigil.flows.config.base import Frozen, Severity, known_zone
from vigil.flows.config.detectors import DetectorConfig, EWMAZScoreConfig
from vigil.flows.inputs import InputConfig
from vigil.flows.security.sigma.config import SigmaConfig


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


class DistributedScanRule(_Rule):
    """Many addresses of one source prefix probing many ports of one host without an answer.

    One alert per prefix (``prefix_v4``/``prefix_v6`` bits), whatever the number of hosts.
    """

    window_s: float = Field(default=86400.0, gt=0)
    ports: int = Field(default=20, ge=2, description="distinct ports probed on one host")
    addresses: int = Field(default=5, ge=2, description="distinct addresses of the prefix")
    prefix_v4: int = Field(default=24, ge=8, le=32)
    prefix_v6: int = Field(default=64, ge=16, le=128)


class PortFanInRule(_Rule):
    """Many sources probing one port of one host without an answer (a worm, a botnet).

    With ``security.protected_networks`` set, only hosts inside them are watched.
    """

    window_s: float = Field(default=86400.0, gt=0)
    sources: int = Field(default=100, ge=2, description="distinct source addresses")


class OutboundFanOutRule(_Rule):
    """A protected address connecting out to many hosts on one port, or many ports of one
    host, outside ``security.protected_networks`` (off while that list is empty)."""

    severity: Severity = "high"
    window_s: float = Field(default=3600.0, gt=0)
    hosts: int = Field(default=10, ge=2, description="distinct outside hosts on one port")
    ports: int = Field(default=20, ge=2, description="distinct ports of one outside host")
    ignore_ports: tuple[int, ...] = Field(
        default=(53, 80, 123, 443, 853),
        description="ports a protected host talks to many hosts on in normal use",
    )

    @field_validator("ignore_ports")
    @classmethod
    def _ports_ok(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return _ports(v)


class ForbiddenPortRule(_Rule):
    """A connection from a protected address to a port in ``security.forbidden_ports``."""

    severity: Severity = "high"
    window_s: float = Field(default=3600.0, gt=0)


class AccountManySourcesRule(_Rule):
    """Successful logins of one user name from ``sources`` distinct addresses."""

    severity: Severity = "high"
    window_s: float = Field(default=86400.0, gt=0)
    sources: int = Field(default=5, ge=2, description="distinct source addresses")


def _ports(v: tuple[int, ...]) -> tuple[int, ...]:
    bad = [p for p in v if not 0 < p < 65536]
    if bad:
        msg = f"ports must be 1 to 65535, got {bad[0]}"
        raise ValueError(msg)
    return v


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
    distributed_scan: DistributedScanRule = DistributedScanRule()
    port_fan_in: PortFanInRule = PortFanInRule()
    outbound_fan_out: OutboundFanOutRule = OutboundFanOutRule()
    forbidden_port: ForbiddenPortRule = ForbiddenPortRule()
    account_many_sources: AccountManySourcesRule = AccountManySourcesRule()
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
    protected_networks: tuple[str, ...] = Field(
        default=(),
        description="CIDRs of the site's own addresses: outbound rules watch them "
        "(empty: off); port fan-in watches only them when set",
    )
    forbidden_ports: tuple[int, ...] = Field(
        default=(), description="ports a protected address must never connect to (6667: IRC)"
    )
    rules: SecurityRules = SecurityRules()
    sigma: SigmaConfig = SigmaConfig()

    _tz_ok = field_validator("timezone")(known_zone)

    @field_validator("protected_networks")
    @classmethod
    def _cidrs_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for net in v:
            try:
                out.append(str(ipaddress.ip_network(net.strip(), strict=False)))
            except ValueError:
                msg = f"not a CIDR network: {net!r} (e.g. 192.0.2.0/24 or 2001:db8::/32)"
                raise ValueError(msg) from None
        return tuple(out)

    @field_validator("forbidden_ports")
    @classmethod
    def _forbidden_ok(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return _ports(v)
