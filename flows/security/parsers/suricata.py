"""Suricata ``eve.json`` lines.

``event_type`` decides the action: ``alert`` gives ``"ids_alert"``, ``flow`` gives
``"connection"``, ``http`` gives ``"http_request"`` and anything else ``"other"``. The
addresses, ports and protocol of the flow are kept for every event type.
"""

from __future__ import annotations

from typing import Any

import orjson
from vigil.flows.errors import ParseError
from vigil.flows.security.parsers._common import (
    BAD_JSON,
    BAD_NUMBER,
    BAD_TIMESTAMP,
    bad_field,
    check_count,
    check_port,
    iso_to_epoch,
    make_event,
    missing_field,
    opt_str,
)

from vigil.records import RawLine, SecurityEvent


def _obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    if v is None:
        raise ParseError(missing_field(key))
    if type(v) is not dict:
        raise ParseError(bad_field(key), repr(v)[:64])
    return v


def _load(text: str) -> dict[str, Any]:
    try:
        d = orjson.loads(text)
    except orjson.JSONDecodeError as ex:
        raise ParseError(BAD_JSON, str(ex)[:64]) from ex
    if type(d) is not dict:
        raise ParseError(BAD_JSON, "not an object")
    return d


def _timestamp(d: dict[str, Any]) -> float:
    ts = d.get("timestamp")
    if ts is None:
        raise ParseError(missing_field("timestamp"))
    if type(ts) is not str:
        raise ParseError(BAD_TIMESTAMP, repr(ts)[:64])
    return iso_to_epoch(ts)


def parse_eve(raw: RawLine) -> SecurityEvent | None:
    """Parse one ``eve.json`` line; ``None`` for a blank line.

    Raises
    ------
    ParseError
        ``"bad json"``, ``"missing field: <name>"``, ``"bad field: <name>"``,
        ``"bad number"``, ``"bad timestamp"``, ``"timestamp without time zone"``.

    Examples
    --------
    >>> from vigil.records import RawLine
    >>> line = ('{"timestamp":"2024-01-02T03:04:05.5+0000","event_type":"alert",'
    ...         '"src_ip":"1.2.3.4","src_port":4444,"dest_ip":"10.0.0.5","dest_port":22,'
    ...         '"proto":"TCP","alert":{"signature":"ET SCAN ssh","severity":2}}')
    >>> ev = parse_eve(RawLine("suricata", "eve.json", line))
    >>> ev.action, ev.ts, ev.rule_name, ev.severity, ev.transport
    ('ids_alert', 1704164645.5, 'ET SCAN ssh', 2, 'tcp')
    """
    text = raw.text
    if text[:1] != "{" and (not text or text.isspace()):
        return None
    d = _load(text)
    ts = _timestamp(d)
    et = d.get("event_type")
    if et is None:
        raise ParseError(missing_field("event_type"))
    if type(et) is not str:
        raise ParseError(bad_field("event_type"), repr(et)[:64])
    proto = opt_str(d, "proto")
    common: dict[str, Any] = {
        "source_ip": opt_str(d, "src_ip"),
        "source_port": check_port(d.get("src_port")),
        "destination_ip": opt_str(d, "dest_ip"),
        "destination_port": check_port(d.get("dest_port")),
        "transport": proto.lower() if proto is not None else None,
        "host_name": opt_str(d, "host"),
    }
    if et == "alert":
        alert = _obj(d, "alert")
        sev = alert.get("severity")
        if sev is not None and type(sev) is not int:
            raise ParseError(BAD_NUMBER, repr(sev)[:64])
        rule = opt_str(alert, "signature", "alert.")
        return make_event(ts, "suricata", "ids_alert", rule_name=rule, severity=sev, **common)
    if et == "flow":
        flow = _obj(d, "flow")
        ts_bytes = check_count(flow.get("bytes_toserver"))
        tc_bytes = check_count(flow.get("bytes_toclient"))
        total = None if ts_bytes is None and tc_bytes is None else (ts_bytes or 0) + (tc_bytes or 0)
        return make_event(
            ts, "suricata", "connection", bytes=total, conn_state=opt_str(flow, "state", "flow."),
            **common,
        )  # fmt: skip
    if et == "http":
        http = _obj(d, "http")
        status = http.get("status")
        if status is not None and (type(status) is not int or not 0 <= status <= 999):
            raise ParseError(BAD_NUMBER, repr(status)[:64])
        url = opt_str(http, "url", "http.")
        return make_event(
            ts,
            "suricata",
            "http_request",
            http_status=status,
            url_path=url.split("?", 1)[0] if url is not None else None,
            http_method=opt_str(http, "http_method", "http."),
            bytes=check_count(http.get("length")),
            **common,
        )
    return make_event(ts, "suricata", "other", **common)


def eve_time(raw: RawLine) -> float | None:
    """The line's ``timestamp``, or ``None``."""
    try:
        return _timestamp(_load(raw.text))
    except ParseError:
        return None
