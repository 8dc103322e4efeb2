"""Grafana annotations at the start and the end of each alert, through ``grafana-client``.

When an alert starts firing, a point annotation is created at its ``startsAt`` (event
time, so it sits on the data that caused it) with tags ``vigil``, the alert name, feed
and severity. When it resolves, the same annotation is turned into a region ending at
``endsAt``. The annotation id is kept in the state store between the two. Both calls go
through the outbox, in order per alert. Only state changes are annotated, never every
detection.

``grafana-client`` is imported only when this integration is built; without it,
building one raises an :class:`ImportError` that says what to install. Grafana is moving
its HTTP API from ``/api`` to ``/apis``: the client library owns the endpoint paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from vigil.sinks.alerting.model import Transition
from vigil.sinks.alerting.outbox import OutboxItem, SendResult

from vigil.extras import need

log = logging.getLogger(__name__)

TARGET = "grafana"


def _ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def _grafana_api(url: str, token: str | None, timeout_s: float) -> Any:
    api = need("grafana_client.api", "grafana", "Grafana annotations (alerting.grafana)")
    return api.GrafanaApi.from_url(url, credential=token, timeout=timeout_s)


class GrafanaAnnotations:
    """Side channel: annotate alert start and end in Grafana.

    Parameters
    ----------
    url
        Grafana base URL.
    token
        Service-account token (from the environment), or ``None``.
    get_id, set_id
        Where the annotation id of an alert is kept (the state store).
    dashboard_uid, panel_id
        Attach annotations to one dashboard (and panel); ``None`` makes them organisation
        wide (shown by any dashboard querying the ``vigil`` tag).
    api
        An already-built ``GrafanaApi`` (tests); built from ``url`` when ``None``.
    """

    kind = "grafana"
    target = TARGET

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        get_id: Callable[[str], int | None],
        set_id: Callable[[str, int | None], None],
        dashboard_uid: str | None = None,
        panel_id: int | None = None,
        tags: Iterable[str] = ("vigil",),
        timeout_s: float = 5.0,
        api: Any = None,
    ) -> None:
        self._api = api if api is not None else _grafana_api(url, token, timeout_s)
        self._get_id = get_id
        self._set_id = set_id
        self.dashboard_uid = dashboard_uid
        self.panel_id = panel_id
        self.tags = tuple(tags)

    def on_transitions(self, transitions: Iterable[Transition]) -> list[OutboxItem]:
        now = time.time()
        out = []
        for t in transitions:
            if t.new not in ("firing", "resolved"):
                continue
            a = t.alert
            lab = a["labels"]
            payload = {
                "phase": "start" if t.new == "firing" else "end",
                "fingerprint": t.fingerprint,
                "time_ms": _ms(a["startsAt"]),
                "time_end_ms": _ms(a["endsAt"]) if t.new == "resolved" else None,
                "tags": [
                    *self.tags,
                    lab.get("alertname", ""),
                    lab.get("feed", ""),
                    lab.get("severity", ""),
                ],
                "text": f"{a['annotations'].get('summary', '')}: "
                f"{a['annotations'].get('description', '')}",
            }
            out.append(
                OutboxItem(
                    id=f"grafana-{t.fingerprint}-{a['startsAt']}-{payload['phase']}",
                    target=self.target,
                    kind=self.kind,
                    payload=payload,
                    order_key=f"{self.target}|{t.fingerprint}",
                    created_wall=now,
                )
            )
        return out

    def send(self, item: OutboxItem) -> SendResult:
        from grafana_client.client import (
            GrafanaClientError,
            GrafanaServerError,
            GrafanaTimeoutError,
        )

        p = item.payload
        fp = p["fingerprint"]
        try:
            if p["phase"] == "start":
                res = self._api.annotations.add_annotation(
                    dashboard_uid=self.dashboard_uid,
                    panel_id=self.panel_id,
                    time_from=p["time_ms"],
                    tags=[t for t in p["tags"] if t],
                    text=p["text"],
                )
                if isinstance(res, dict) and "id" in res:
                    self._set_id(fp, int(res["id"]))
            else:
                ann_id = self._get_id(fp)
                if ann_id is None:
                    self._api.annotations.add_annotation(
                        dashboard_uid=self.dashboard_uid,
                        panel_id=self.panel_id,
                        time_from=p["time_ms"],
                        time_to=p["time_end_ms"],
                        tags=[t for t in p["tags"] if t],
                        text=p["text"],
                    )
                else:
                    self._api.annotations.partial_update_annotation(
                        ann_id,
                        time_from=p["time_ms"],
                        time_to=p["time_end_ms"],
                        tags=[t for t in p["tags"] if t],
                        text=p["text"],
                    )
                    self._set_id(fp, None)
        except GrafanaTimeoutError:
            return SendResult(False, True, "timeout")
        except GrafanaServerError:
            return SendResult(False, True, "http_5xx")
        except GrafanaClientError as ex:
            status = getattr(ex, "status_code", 400)
            return SendResult(
                False, status == 429, "http_429" if status == 429 else "http_4xx", status
            )
        except Exception as ex:  # connection refused & co. come from niquests
            name = type(ex).__name__
            log.warning("grafana: annotation failed: %s: %s", name, ex)
            retry = "Connection" in name or "Timeout" in name
            return SendResult(False, retry, "transport_error" if retry else "internal_error")
        return SendResult(True, False, "ok")

    def close(self) -> None:
        session = getattr(getattr(self._api, "client", None), "s", None)
        if session is not None:
            session.close()
