"""The public-service queue feed: request lifecycles in, queue metrics and alerts out.

Modules: ``config`` (its section), ``records``, ``mapping`` (a portal's rows to events),
``calendar`` (working days), ``state`` (per-agency queues and detectors), ``agency``
(per-agency window accounting), ``rules`` (its detection rules), ``flow`` (``attach``),
``cli`` (``vigil report service-queues``).
"""

from __future__ import annotations

from vigil.flows.feed import FeedSpec
from vigil.flows.queues.cli import register
from vigil.flows.queues.config import ServiceQueuesConfig, explain
from vigil.flows.queues.flow import attach

FEED = FeedSpec(
    name="service_queues",
    config=ServiceQueuesConfig,
    summary="citizens' applications per agency: backlog, deadlines, surges",
    attach_fn=attach,
    explain_fn=explain,
    commands_fn=register,
)
