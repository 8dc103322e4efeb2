"""Push Vigil's alerts to a real Prometheus Alertmanager (``POST /api/v2/alerts``).

For sites that already route, silence and notify with Alertmanager. Alertmanager expects
clients to re-send active alerts regularly and resolves an alert by itself once its
``endsAt`` passes, so, like Prometheus:

- a firing alert is pushed when it starts firing, then re-sent every ``resend_s``
  (:meth:`AlertmanagerPush.resend`) with ``endsAt = now + ends_after_s`` (default four
  resend intervals), computed when sending so a delayed retry is never already expired;
- a resolved alert is pushed once with ``endsAt`` = the wall time it resolved.

The transition pushes go through the outbox (ordered per alert, so a resolve never
overtakes the firing push); the periodic re-sends do not, as the next one replaces a lost
one. All alerts are pushed whatever Vigil's own routes, silences and inhibitions say:
Alertmanager applies its own.

Examples
--------
>>> alert = {"labels": {"alertname": "x"}, "annotations": {"summary": "s"},
...          "startsAt": "2024-01-01T00:00:00Z", "fingerprint": "f"}
>>> [a["endsAt"] for a in body([{"alert": alert, "status": "firing", "ends_at": None}],
...                            now=1704067200.0, ends_after_s=240)]
['2024-01-01T00:04:00Z']
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from vigil.sinks.alerting.delivery import JsonPoster
from vigil.sinks.alerting.model import Transition
from vigil.sinks.alerting.outbox import OutboxItem, SendResult
from vigil.sinks.alerts import _rfc3339

TARGET = "alertmanager"


def _am_alert(alert: dict[str, Any]) -> dict[str, Any]:
    return {
        "labels": dict(alert["labels"]),
        "annotations": {k: str(v) for k, v in alert["annotations"].items()},
        "startsAt": alert["startsAt"],
        "generatorURL": alert.get("generatorURL") or "",
    }


def body(payloads: Iterable[dict[str, Any]], *, now: float, ends_after_s: float) -> list[Any]:
    """The ``/api/v2/alerts`` body for stored payloads, with ``endsAt`` set now."""
    out = []
    for p in payloads:
        a = _am_alert(p["alert"])
        ends = p.get("ends_at")
        a["endsAt"] = _rfc3339(now + ends_after_s if ends is None else float(ends))
        out.append(a)
    return out


class AlertmanagerPush:
    """Side channel: every firing and resolved transition, pushed to Alertmanager.

    Parameters
    ----------
    url
        Alertmanager's base URL (``http://host:9093``).
    resend_s
        Re-send period of firing alerts.
    ends_after_s
        ``endsAt`` of a firing alert is this far after the push (default ``4 * resend_s``).
    """

    kind = "alertmanager"
    target = TARGET

    def __init__(
        self,
        url: str,
        *,
        resend_s: float = 60.0,
        ends_after_s: float | None = None,
        timeout_s: float = 5.0,
        wall: Any = time.time,
    ) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.resend_s = resend_s
        self.ends_after_s = ends_after_s if ends_after_s is not None else 4 * resend_s
        self._wall = wall
        self._http = JsonPoster(timeout_s=timeout_s)

    def on_transitions(self, transitions: Iterable[Transition]) -> list[OutboxItem]:
        now = self._wall()
        out = []
        for t in transitions:
            if t.new not in ("firing", "resolved"):
                continue
            ends = now if t.new == "resolved" else None
            out.append(
                OutboxItem(
                    id=f"am-{t.fingerprint}-{t.alert['startsAt']}-{t.new}",
                    target=self.target,
                    kind=self.kind,
                    payload={"alert": t.alert, "status": t.new, "ends_at": ends},
                    order_key=f"{self.target}|{t.fingerprint}",
                    created_wall=now,
                )
            )
        return out

    def send(self, item: OutboxItem) -> SendResult:
        return self._http.post(
            self.url, body([item.payload], now=self._wall(), ends_after_s=self.ends_after_s)
        )

    def resend(self, firing: list[dict[str, Any]]) -> SendResult | None:
        """Re-send every firing alert in one request (not through the outbox)."""
        if not firing:
            return None
        payloads = [{"alert": a, "status": "firing", "ends_at": None} for a in firing]
        return self._http.post(
            self.url, body(payloads, now=self._wall(), ends_after_s=self.ends_after_s)
        )

    def close(self) -> None:
        self._http.close()
