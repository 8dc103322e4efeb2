"""The alerting pipeline shared by every flow: detections in, few explained notifications out.

- :mod:`sinks.alerting.engine`: lifecycle (pending, firing, resolved), grouping, routing,
  silences, maintenance windows, inhibition. Pure Python, no bytewax, no I/O.
- :mod:`sinks.alerting.routing`, :mod:`sinks.alerting.model`,
  :mod:`sinks.alerting.templates`: the routing tree, plain data, English and Vietnamese
  summaries.
- :mod:`sinks.alerting.store`: state in memory (mirrored to a folder) or in Redis.
- :mod:`sinks.alerting.outbox`: persisted deliveries, retries, dead letters.
- :mod:`sinks.alerting.delivery`: integrations (the signed webhook; PagerDuty, Slack,
  Alertmanager and Grafana live in ``sinks/``).
- :mod:`sinks.alerting.service`: the running pipeline and its bytewax sink.
"""

from __future__ import annotations
