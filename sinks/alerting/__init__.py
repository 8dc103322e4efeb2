"""The alerting pipeline shared by every flow: detections in, few explained notifications out.

- :mod:`vigil.sinks.alerting.engine`: lifecycle (pending, firing, resolved), grouping, routing,
  silences, maintenance windows, inhibition. Pure Python, no bytewax, no I/O. Its parts:
  :mod:`~vigil.sinks.alerting.lifecycle`, :mod:`~vigil.sinks.alerting.notify` (muting,
  notifications), :mod:`~vigil.sinks.alerting.state` (state records),
  :mod:`~vigil.sinks.alerting.clock`.
- :mod:`vigil.sinks.alerting.routing`, :mod:`vigil.sinks.alerting.model`,
  :mod:`vigil.sinks.alerting.templates`: the routing tree, plain data, English and Vietnamese
  summaries.
- :mod:`vigil.sinks.alerting.store`: state in memory (mirrored to a folder) or in Redis.
- :mod:`vigil.sinks.alerting.outbox`: persisted deliveries and dead letters; the threads
  that send and retry them in :mod:`vigil.sinks.alerting.dispatcher`.
- :mod:`vigil.sinks.alerting.delivery`: integrations (the signed webhook; PagerDuty, Slack,
  Alertmanager and Grafana live in ``sinks/``).
- :mod:`vigil.sinks.alerting.service`: the running pipeline; its bytewax sink in
  :mod:`vigil.sinks.alerting.sink`, its metrics in :mod:`vigil.sinks.alerting.metrics`.
"""

from __future__ import annotations
