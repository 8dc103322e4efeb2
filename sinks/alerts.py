"""Turn detections into Alertmanager-shaped alerts and deliver them.

An alert is one entry of the ``alerts`` array of Alertmanager's webhook payload (version
``"4"``), plus a ``dedup_key``:

- ``labels`` identify the condition and never change while it lasts: ``alertname`` (the
  detection kind), ``feed``, ``entity`` and ``severity``.
- ``annotations`` carry everything that varies: summary, description, the observed value
  and threshold, the window, the baseline band and the detection's ``extra`` pairs. Numbers
  are strings, as Alertmanager sends them.
- ``fingerprint`` is 16 hex characters of SHA-256 over the sorted *identity* labels
  (``alertname``, ``entity``, ``feed``): the same kind on the same entity in the same feed is
  the same alert whatever its severity (see ``Detection.fingerprint_key``).
- ``dedup_key`` is ``"<fingerprint>@<unix seconds>"``. Sinks are at-least-once (bytewax
  replays the epoch it resumes from), so receivers drop alerts whose key they have seen.

The alerting pipeline (:mod:`vigil.sinks.alerting`) builds its alerts with
:func:`alert_from_detection` and its webhook payloads with :func:`webhook_payload`;
:func:`idempotency_key` is one key over a batch's ``dedup_key``\\ s.

Examples
--------
>>> from vigil.records import Detection
>>> d = Detection(kind="ssh_brute_force", entity="203.0.113.7", severity="high",
...               ts=1700000000.0, observed=42.0, threshold=10.0,
...               summary="42 failed logins", description="42 failures in 60s, limit 10",
...               window_s=60.0)
>>> alert = alert_from_detection(d)
>>> alert["labels"]
{'alertname': 'ssh_brute_force', 'feed': 'security', 'entity': '203.0.113.7', 'severity': 'high'}
>>> alert["annotations"]["observed"], alert["annotations"]["window_s"]
('42', '60')
>>> alert["startsAt"]
'2023-11-14T22:13:20Z'
>>> alert["dedup_key"] == alert["fingerprint"] + "@1700000000"
True
>>> webhook_payload([alert])["commonLabels"]["alertname"]
'ssh_brute_force'
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from vigil.records import Detection

__all__ = [
    "alert_from_detection",
    "idempotency_key",
    "webhook_payload",
]

#: Alertmanager's "zero" time: the alert has no known end.
ZERO_TIME = "0001-01-01T00:00:00Z"
_IDENTITY_LABELS = ("alertname", "entity", "feed")
_ANNOTATION_NAME = re.compile(r"[^A-Za-z0-9_]")


def _format_number(x: float) -> str:
    """Numbers as Alertmanager-style strings: ``42``, ``0.25``, ``NaN``, ``+Inf``."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == int(x) and abs(x) < 2**53:
        return str(int(x))
    return repr(float(x))


# Cached: an alert's startsAt is formatted for each of its transitions and notifications.
@functools.lru_cache(maxsize=4096)
def _rfc3339(ts: float) -> str:
    """UTC RFC 3339 with only as many fractional digits as needed (as Go's RFC3339Nano)."""
    if not math.isfinite(ts):
        msg = f"detection timestamp must be finite, got {ts!r}"
        raise ValueError(msg)
    try:
        dt = datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, OSError) as ex:
        msg = f"detection timestamp out of range: {ts!r}"
        raise ValueError(msg) from ex
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


def _annotation_name(key: str) -> str:
    """A valid Alertmanager annotation name (``[A-Za-z_][A-Za-z0-9_]*``)."""
    name = _ANNOTATION_NAME.sub("_", key)
    return name if name and not name[0].isdigit() else f"_{name}"


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex characters of SHA-256 over the sorted identity labels.

    Parameters
    ----------
    labels
        Alert labels; only ``alertname``, ``entity`` and ``feed`` are used.

    Examples
    --------
    >>> a = fingerprint({"alertname": "x", "entity": "e", "feed": "f", "severity": "high"})
    >>> b = fingerprint({"feed": "f", "entity": "e", "alertname": "x", "severity": "info"})
    >>> a == b, len(a)
    (True, 16)
    """
    h = hashlib.sha256()
    for name in sorted(_IDENTITY_LABELS):
        # 0xff never occurs in UTF-8, so it separates names and values unambiguously
        # (the same trick as Prometheus's label hashing).
        h.update(name.encode() + b"\xff" + labels.get(name, "").encode() + b"\xff")
    return h.hexdigest()[:16]


def alert_from_detection(d: Detection, *, now: float | None = None) -> dict[str, Any]:
    """One Alertmanager webhook v4 alert (plus ``dedup_key``) for a detection.

    Parameters
    ----------
    d
        The detection.
    now
        Unused by firing alerts today (``startsAt`` is the detection's event time, so a
        replay yields the identical alert); accepted so callers can pass a clock uniformly.

    Returns
    -------
    dict
        ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
        ``generatorURL``, ``fingerprint`` and ``dedup_key``. ``d.extra`` keys are made
        valid annotation names (other characters become ``_``) and cannot override the
        standard annotations.

    Raises
    ------
    ValueError
        If ``d.ts`` is not a finite, representable time.
    """
    del now  # see docstring: the alert depends on event time only
    labels = {"alertname": d.kind, "feed": d.feed, "entity": d.entity, "severity": d.severity}
    if d.log_source:
        labels["log_source"] = d.log_source  # routing and inhibition; not identity
    annotations: dict[str, str] = {_annotation_name(k): str(v) for k, v in d.extra}
    annotations.update(
        summary=d.summary,
        description=d.description,
        observed=_format_number(d.observed),
        threshold=_format_number(d.threshold),
        window_s=_format_number(d.window_s),
    )
    for name in ("expected", "lower", "upper"):
        value = getattr(d, name)
        if value is not None:
            annotations[name] = _format_number(value)
    annotations.update(episode_annotations(d))
    starts_at = _rfc3339(d.episode_start)
    fp = fingerprint(labels)
    return {
        "status": "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at,
        "endsAt": ZERO_TIME,
        "generatorURL": "",
        "fingerprint": fp,
        "dedup_key": f"{fp}@{int(d.episode_start)}",
    }


def episode_annotations(d: Detection) -> dict[str, str]:
    """The evidence of a detection's episode as annotations (strings, as Alertmanager's).

    ``value_at_start`` (with ``startsAt``), ``latest_value`` and ``last_seen``,
    ``peak_value`` and ``peak_at``, ``first_seen``, ``log_source``, and one
    ``evidence_<name>`` per evidence list (``"22/tcp (41), 23/tcp (3)"``).

    >>> from vigil.records import Detection
    >>> d = Detection(kind="k", entity="e", severity="high", ts=120.0, observed=9.0,
    ...               threshold=5.0, summary="", description="", start=60.0, start_value=5.0,
    ...               peak=9.0, peak_ts=120.0, evidence=(("users", (("root", 7), ("a", 2))),))
    >>> ann = episode_annotations(d)
    >>> ann["value_at_start"], ann["latest_value"], ann["peak_at"], ann["evidence_users"]
    ('5', '9', '1970-01-01T00:02:00Z', 'root (7), a (2)')
    """
    out = {
        "value_at_start": _format_number(d.observed if d.start_value is None else d.start_value),
        "latest_value": _format_number(d.observed),
        "last_seen": _rfc3339(d.ts),
    }
    if d.first_seen is not None:
        out["first_seen"] = _rfc3339(min(d.first_seen, d.episode_start))
    if d.peak is not None:
        out["peak_value"] = _format_number(d.peak)
        out["peak_at"] = _rfc3339(d.ts if d.peak_ts is None else d.peak_ts)
    if d.log_source:
        out["log_source"] = d.log_source
    for name, items in d.evidence:
        out[f"evidence_{_annotation_name(name)}"] = ", ".join(f"{k} ({n})" for k, n in items)
    return out


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    """Pairs present with the same value in every dict."""
    if not dicts:
        return {}
    first, *rest = dicts
    if not rest:  # one alert per notification is the common case
        return dict(first)
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in rest)}


def webhook_payload(
    alerts: list[dict[str, Any]],
    *,
    receiver: str = "vigil",
    status: str = "firing",
    external_url: str = "",
) -> dict[str, Any]:
    """An Alertmanager webhook (version ``"4"``) payload around ``alerts``.

    Vigil does not group alerts, so ``groupLabels`` is empty and ``groupKey`` is what
    Alertmanager sends for a root route without ``group_by``: ``"{}:{}"``.

    Parameters
    ----------
    alerts
        Alerts from :func:`alert_from_detection`.
    receiver
        Receiver name reported to the endpoint.
    status
        ``"firing"`` or ``"resolved"``.
    external_url
        Link back to the sender, if any.

    Examples
    --------
    >>> p = webhook_payload([])
    >>> p["version"], p["groupKey"], p["truncatedAlerts"], p["alerts"]
    ('4', '{}:{}', 0, [])
    """
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }


def idempotency_key(alerts: Iterable[dict[str, Any]]) -> str:
    """SHA-256 hex over the sorted ``dedup_key``\\ s: the same batch always gets the same key.

    Parameters
    ----------
    alerts
        Alerts carrying a ``dedup_key``.

    Examples
    --------
    >>> idempotency_key([{"dedup_key": "a@1"}, {"dedup_key": "b@2"}]) == idempotency_key(
    ...     [{"dedup_key": "b@2"}, {"dedup_key": "a@1"}])
    True
    """
    keys = sorted(str(a["dedup_key"]) for a in alerts)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()
