"""The security feed: network-security logs in, attacks and volume anomalies out.

Modules: ``config`` (its section), ``parsers/`` (log formats to ``SecurityEvent``),
``windows`` (sliding counters), ``flow`` (parse, rules, volume baselines; ``attach``).
"""

from __future__ import annotations

from vigil.flows.feed import FeedSpec
from vigil.flows.security.config import SecurityConfig
from vigil.flows.security.flow import attach, explain

FEED = FeedSpec(
    name="security",
    config=SecurityConfig,
    summary="network-security logs: SSH/syslog auth, Zeek, Suricata, firewall, web access",
    attach_fn=attach,
    explain_fn=explain,
)
