"""Slack-compatible incoming-webhook messages (Slack, Mattermost, Rocket.Chat ...).

One message per notification: a title line (``[FIRING:2] ssh_brute_force``), the reason,
then one line per alert with its summary and description, in the receiver's language.
The webhook URL is itself the secret, so it comes from the environment and is never
stored in the outbox.

Examples
--------
>>> from vigil.sinks.alerting.model import Notification
>>> a = {"status": "firing", "labels": {"alertname": "x", "severity": "high"},
...      "annotations": {"summary": "S", "description": "D"}, "fingerprint": "f"}
>>> n = Notification("id", "chat", "{}:{}", 1, "first_notification", "firing",
...                  {"alertname": "x"}, (a,), 0.0)
>>> print(message(n, language="en")["text"])
*[FIRING:1] x* (first notification)
• HIGH S: D
"""

from __future__ import annotations

import time
from typing import Any

from vigil.sinks.alerting.delivery import JsonPoster
from vigil.sinks.alerting.model import Notification
from vigil.sinks.alerting.outbox import OutboxItem, SendResult
from vigil.sinks.alerting.templates import Templates


def message(
    n: Notification, *, language: str = "en", channel: str | None = None, max_alerts: int = 20
) -> dict[str, Any]:
    """The message body for a notification."""
    name = n.group_labels.get("alertname") or n.alerts[0]["labels"].get("alertname", "vigil")
    firing = sum(a["status"] == "firing" for a in n.alerts)
    count = firing if n.status == "firing" else len(n.alerts)
    lines = [
        f"*{Templates.title(language, n.status, count, name)}* "
        f"({Templates.reason(language, n.reason)})"
    ]
    for a in n.alerts[:max_alerts]:
        sev = a["labels"].get("severity", "").upper()
        mark = "✅" if a["status"] == "resolved" else "•"
        ann = a["annotations"]
        lines.append(f"{mark} {sev} {ann.get('summary', '')}: {ann.get('description', '')}")
    if len(n.alerts) > max_alerts:
        lines.append(f"… +{len(n.alerts) - max_alerts}")
    body: dict[str, Any] = {"text": "\n".join(lines)}
    if channel:
        body["channel"] = channel
    return body


class SlackIntegration:
    """POST :func:`message` bodies to an incoming-webhook URL."""

    kind = "slack"

    def __init__(
        self, url: str, *, language: str = "en", channel: str | None = None, timeout_s: float = 5.0
    ) -> None:
        self._url = url
        self.language = language
        self.channel = channel
        self._http = JsonPoster(timeout_s=timeout_s)

    def render(self, n: Notification, target: str) -> list[OutboxItem]:
        return [
            OutboxItem(
                id=f"{n.id}-{target.rsplit('/', 1)[-1]}",
                target=target,
                kind=self.kind,
                payload=message(n, language=self.language, channel=self.channel),
                order_key=f"{target}|{n.group_key}",
                created_wall=time.time(),
                detected_wall=n.detected_wall,
            )
        ]

    def send(self, item: OutboxItem) -> SendResult:
        return self._http.post(self._url, item.payload)

    def close(self) -> None:
        self._http.close()
