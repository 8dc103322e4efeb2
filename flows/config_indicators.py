"""Configuration section of the indicator flow (flows/indicators.py)."""

from __future__ import annotations

from flows.config_base import Frozen


class IndicatorsConfig(Frozen):
    """Settings of the indicator flow (flows/indicators.py). Empty until that feature lands."""
