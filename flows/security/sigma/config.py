"""Configuration of Sigma rules in the security feed: ``security.sigma``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from vigil.flows.config.base import Frozen

SigmaStatus = Literal["stable", "test", "experimental", "deprecated", "unsupported"]
SigmaLevel = Literal["informational", "low", "medium", "high", "critical"]


class SigmaConfig(Frozen):
    """Folders of Sigma rule files (``*.yml``, searched recursively) and which to use.

    A rule is used when its status and level are in ``status`` and ``levels``, it has at
    least one tag of ``tags`` (empty: any), and none of ``exclude_tags``. Relative paths are
    read from the configuration file's folder.
    """

    paths: tuple[str, ...] = ()
    status: tuple[SigmaStatus, ...] = ("stable", "test", "experimental")
    levels: tuple[SigmaLevel, ...] = ("informational", "low", "medium", "high", "critical")
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    hold_s: float = Field(
        default=600.0, gt=0, description="an alert of a matching rule holds this long after a match"
    )
    samples: int = Field(default=5, ge=0, le=50, description="matching lines kept per alert")
    max_entities: int = Field(
        default=100_000, ge=100, description="tracked (rule, entity) episodes; oldest evicted"
    )
