"""The indicator feed: numeric series in, baselines, bands and anomaly alerts out.

Modules: ``config`` (its section), ``records``, ``parsing`` (lines to points),
``detection`` (detectors per series), ``flow`` (the dataflow; ``attach``).
"""

from __future__ import annotations

from vigil.flows.feed import FeedSpec
from vigil.flows.indicators.config import IndicatorsConfig, explain
from vigil.flows.indicators.flow import attach

FEED = FeedSpec(
    name="indicators",
    config=IndicatorsConfig,
    summary="numeric indicator series (health, education, digital KPIs): bands, anomalies",
    attach_fn=attach,
    explain_fn=explain,
)
