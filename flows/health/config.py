"""Configuration section of the health feed (``health:``)."""

from __future__ import annotations

from pydantic import Field
from vigil.flows.config.base import Frozen, Severity


class HealthConfig(Frozen):
    """Bounds of the health flow.

    ``None`` turns a check off. Set in the ``health:`` section of the configuration.
    """

    interval_s: float = Field(default=5.0, gt=0)
    silence_s: float | None = Field(default=300.0, gt=0)
    watermark_lag_s: float | None = Field(default=600.0, gt=0)
    dead_letter_ratio: float | None = Field(default=0.05, gt=0, le=1)
    min_lines: int = Field(default=100, ge=1)
    delivery_failures: int | None = Field(default=1, ge=1)
    window_s: float = Field(default=300.0, gt=0)
    repeat_s: float = Field(default=60.0, gt=0)
    severity: Severity = "high"
