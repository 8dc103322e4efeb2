"""The health feed: Vigil watches its own metrics and alerts through its own pipeline.

Modules: ``config`` (its section), ``flow`` (the monitor; ``attach``).
"""

from __future__ import annotations

from vigil.flows.feed import FeedSpec
from vigil.flows.health.config import HealthConfig
from vigil.flows.health.flow import attach

FEED = FeedSpec(
    name="health",
    config=HealthConfig,
    summary="Vigil watches itself: stalled feeds, dead letters, failed deliveries",
    attach_fn=attach,
)
