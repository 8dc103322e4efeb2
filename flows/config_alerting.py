"""Configuration section of the alerting pipeline (routing, grouping, silences, receivers)."""

from __future__ import annotations

from flows.config_base import Frozen


class AlertingConfig(Frozen):
    """Settings of the alerting pipeline. Empty until that feature lands."""
