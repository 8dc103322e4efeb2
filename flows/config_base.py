"""Base pieces of the configuration schema, shared by every section's module.

The schema is one tree (:class:`vigil.flows.config.VigilConfig`); each flow's section lives in its
own module (``flows/config_<area>.py``) so flows can grow without editing one large file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["info", "warning", "high", "critical"]


class Frozen(BaseModel):
    """Frozen, and unknown keys are errors (reported with their path)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
