"""Integrations: turn a notification into outbox items, and send one item.

An integration does two things, at two different times:

- :meth:`Integration.render` runs when the engine decides a notification: it builds the
  receiver-specific payloads, which are persisted in the outbox (never with a secret:
  routing keys, signing secrets and secret URLs are added when sending);
- :meth:`Integration.send` runs in a dispatcher thread, once per attempt, and classifies
  the outcome for the retry policy: transport errors, timeouts, ``429`` and ``5xx`` are
  retryable, any other status is final.

:class:`WebhookIntegration` is the generic one: an Alertmanager webhook (version 4)
payload, signed as described in :mod:`vigil.sinks.webhook`, with the notification's
idempotency key in ``Idempotency-Key``. Receivers for PagerDuty, Slack, Alertmanager and
Grafana live in their own modules in ``sinks/``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx
import orjson
from vigil.sinks.alerting.model import Notification
from vigil.sinks.alerting.outbox import OutboxItem, SendResult
from vigil.sinks.alerting.templates import Templates
from vigil.sinks.alerts import webhook_payload
from vigil.sinks.webhook import DeliveryResult, WebhookClient, status_reason

RETRYABLE = frozenset({"timeout", "transport_error", "http_429", "http_5xx"})


class Integration(Protocol):
    """One way of delivering a receiver's notifications."""

    kind: str

    def render(self, n: Notification, target: str) -> list[OutboxItem]: ...
    def send(self, item: OutboxItem) -> SendResult: ...
    def close(self) -> None: ...


def classify(status: int | None, error: BaseException | None = None) -> SendResult:
    """Map an HTTP outcome to a :class:`SendResult` (Alertmanager's retry rules).

    Examples
    --------
    >>> [classify(s).retryable for s in (200, 400, 404, 429, 500, 503)]
    [False, False, False, True, True, True]
    >>> classify(None, httpx.ConnectError("refused")).reason
    'transport_error'
    """
    if error is not None:
        if isinstance(error, httpx.TimeoutException):
            return SendResult(False, True, "timeout")
        if isinstance(error, httpx.TransportError):
            return SendResult(False, True, "transport_error")
        return SendResult(False, False, "internal_error")
    assert status is not None
    reason = status_reason(status)
    if reason == "ok":
        return SendResult(True, False, "ok", status)
    return SendResult(False, reason in RETRYABLE, reason, status)


class JsonPoster:
    """POST JSON with one pooled ``httpx.Client``; never raises."""

    def __init__(self, *, timeout_s: float = 5.0, headers: Mapping[str, str] | None = None):
        self._client = httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            headers={"User-Agent": "vigil-alerting/0.1", **dict(headers or {})},
        )

    def post(self, url: str, body: Any, headers: Mapping[str, str] | None = None) -> SendResult:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        try:
            resp = self._client.post(
                url, content=data, headers={"Content-Type": "application/json", **(headers or {})}
            )
        except Exception as ex:
            return classify(None, ex)
        return classify(resp.status_code)

    def close(self) -> None:
        self._client.close()


class WebhookIntegration:
    """Alertmanager webhook v4 payloads, HMAC-signed, one POST per notification.

    The payload adds fields Alertmanager does not send (receivers that do not know them
    ignore them): ``reason`` (why this notification: ``first_notification``,
    ``new_alerts``, ``some_resolved``, ``all_resolved``, ``repeat``), ``title``,
    ``notificationId`` (the notification's key; the ``Idempotency-Key`` header is it plus
    ``-<integration index>``) and ``sequence`` (1, 2, ... per group and receiver).

    Parameters
    ----------
    url
        Endpoint.
    secret
        HMAC secret (from the environment); ``None`` sends unsigned requests.
    timeout_s
        Per attempt (the outbox does the retrying).
    language
        Language of the title (the alerts' annotations are rendered by the engine).
    external_url
        ``externalURL`` of the payload.
    """

    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None = None,
        timeout_s: float = 5.0,
        language: str = "en",
        external_url: str = "",
        now: Any = time.time,
    ) -> None:
        self.url = url
        self.language = language
        self.external_url = external_url
        self._client = WebhookClient(
            url, secret=secret, timeout_s=timeout_s, max_attempts=1, now=now
        )

    def payload(self, n: Notification) -> dict[str, Any]:
        alerts = list(n.alerts)
        body = webhook_payload(
            alerts, receiver=n.receiver, status=n.status, external_url=self.external_url
        )
        body["groupKey"] = n.group_key
        body["groupLabels"] = dict(n.group_labels)
        body["reason"] = n.reason
        name = n.group_labels.get("alertname") or body["commonLabels"].get("alertname", "vigil")
        firing = sum(a["status"] == "firing" for a in alerts)
        body["title"] = Templates.title(
            self.language, n.status, firing if n.status == "firing" else len(alerts), name
        )
        body["notificationId"] = f"{n.id}"
        body["sequence"] = n.seq
        incident = n.extra.get("incident")
        if incident is not None:  # an incident across feeds: its members are the alerts
            body["incident"] = incident
            feeds = ", ".join(incident["feeds"])
            body["title"] = (
                f"[{incident['severity'].upper()}] incident {incident['name']} "
                f"({incident['state']}): {len(alerts)} alert(s) from {feeds}"
            )
        return body

    def render(self, n: Notification, target: str) -> list[OutboxItem]:
        return [
            OutboxItem(
                id=f"{n.id}-{target.rsplit('/', 1)[-1]}",
                target=target,
                kind=self.kind,
                payload=self.payload(n),
                order_key=f"{target}|{n.group_key}",
                created_wall=time.time(),
                detected_wall=n.detected_wall,
            )
        ]

    def send(self, item: OutboxItem) -> SendResult:
        body = orjson.dumps(item.payload)
        return _send_result(self._client.post(body, idempotency_key=item.id))

    def send_many(self, items: Sequence[OutboxItem]) -> list[SendResult]:
        """:meth:`send` for several items, sent together (one connection each)."""
        results = self._client.post_many([(orjson.dumps(it.payload), it.id) for it in items])
        return [_send_result(r) for r in results]

    def close(self) -> None:
        self._client.close()


def _send_result(res: DeliveryResult) -> SendResult:
    if res.ok:
        return SendResult(True, False, "ok", res.status)
    return SendResult(False, res.reason in RETRYABLE, res.reason, res.status)
