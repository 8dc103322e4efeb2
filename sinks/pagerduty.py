"""PagerDuty Events API v2: a trigger per firing alert, a resolve per resolved alert.

Each alert of a notification becomes one event, ``dedup_key`` = the alert's fingerprint,
so PagerDuty keeps one incident per Vigil alert however often it is re-notified, and the
resolve closes it. The routing (integration) key comes from the environment and is added
only when sending: it is never stored in the outbox.

Examples
--------
>>> alert = {"status": "firing", "fingerprint": "ab12", "startsAt": "2024-01-01T00:00:00Z",
...          "labels": {"alertname": "ssh_brute_force", "entity": "203.0.113.7",
...                     "feed": "security", "severity": "high"},
...          "annotations": {"summary": "SSH brute force", "runbook_url": "https://rb"}}
>>> ev = event(alert, client_url="")
>>> ev["event_action"], ev["dedup_key"], ev["payload"]["severity"], ev["links"][0]["href"]
('trigger', 'ab12', 'error', 'https://rb')
>>> event({**alert, "status": "resolved"}, client_url="")
{'event_action': 'resolve', 'dedup_key': 'ab12'}
"""

from __future__ import annotations

import time
from typing import Any

from vigil.sinks.alerting.delivery import JsonPoster
from vigil.sinks.alerting.model import Notification
from vigil.sinks.alerting.outbox import OutboxItem, SendResult

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
#: Vigil severity -> PagerDuty severity (critical, error, warning, info).
SEVERITY = {"critical": "critical", "high": "error", "warning": "warning", "info": "info"}


def event(alert: dict[str, Any], *, client_url: str) -> dict[str, Any]:
    """The Events v2 body for one alert, without ``routing_key``."""
    fp = str(alert["fingerprint"])
    if alert["status"] == "resolved":
        return {"event_action": "resolve", "dedup_key": fp}
    lab, ann = alert["labels"], alert["annotations"]
    links = [
        {"href": ann[k], "text": text}
        for k, text in (("runbook_url", "Runbook"), ("dashboard_url", "Dashboard"))
        if ann.get(k)
    ]
    body: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": fp,
        "payload": {
            "summary": (ann.get("summary") or lab.get("alertname", "vigil alert"))[:1024],
            "source": lab.get("entity", "vigil"),
            "severity": SEVERITY.get(lab.get("severity", ""), "warning"),
            "timestamp": alert.get("startsAt"),
            "component": lab.get("feed", ""),
            "group": lab.get("agency") or lab.get("team") or lab.get("feed", ""),
            "class": lab.get("alertname", ""),
            "custom_details": {**ann, "labels": lab},
        },
        "links": links,
        "client": "Vigil",
    }
    if client_url:
        body["client_url"] = client_url
    return body


class PagerDutyIntegration:
    """Deliver notifications as PagerDuty Events v2 (one event per alert).

    Parameters
    ----------
    routing_key
        Integration key of the PagerDuty service (from the environment).
    url
        Events endpoint (tests point it at a local receiver).
    """

    kind = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        *,
        url: str = EVENTS_URL,
        timeout_s: float = 10.0,
        client_url: str = "",
    ) -> None:
        self.url = url
        self.client_url = client_url
        self._key = routing_key
        self._http = JsonPoster(timeout_s=timeout_s)

    def render(self, n: Notification, target: str) -> list[OutboxItem]:
        now = time.time()
        return [
            OutboxItem(
                id=f"{n.id}-{target.rsplit('/', 1)[-1]}-{a['fingerprint']}",
                target=target,
                kind=self.kind,
                payload=event(a, client_url=self.client_url),
                order_key=f"{target}|{a['fingerprint']}",
                created_wall=now,
                detected_wall=n.detected_wall,
            )
            for a in n.alerts
        ]

    def send(self, item: OutboxItem) -> SendResult:
        return self._http.post(self.url, {**item.payload, "routing_key": self._key})

    def close(self) -> None:
        self._http.close()
