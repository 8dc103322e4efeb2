"""Configuration section of the public-service queue flow (flows/service_queues.py)."""

from __future__ import annotations

from flows.config_base import Frozen


class ServiceQueuesConfig(Frozen):
    """Settings of the service queue flow. Empty until that feature lands."""
