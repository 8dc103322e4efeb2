"""The Sigma taxonomy mapped onto what the security parsers emit: one pySigma processing
pipeline per log source, and the field getters the compiled rules read.

A log source here is a Vigil dataset (``SecurityEvent.dataset``, the parser's format).
Each :class:`LogSource` says which Sigma ``logsource`` blocks it serves, which of the
events of that dataset they apply to (sshd rules only on sshd's lines), and how each
Sigma field is read: a getter ``(event, raw_line) -> value``. Most getters read an event
attribute; a few derive a value from the raw line (the access log's request target with
its query string, its referer), which the event does not keep.

Fields a rule names that a log source cannot give make the rule *skipped* (``unknown
field: <name>``); unfielded values (Sigma *keywords*) are matched against the raw line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sigma.processing.conditions import LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation

from vigil.records import SecurityEvent

Getter = Callable[[SecurityEvent, str], Any]


def _attr(name: str) -> Getter:
    def get(ev: SecurityEvent, text: str) -> Any:
        return getattr(ev, name)

    get.__name__ = f"get_{name}"
    return get


def _request_target(ev: SecurityEvent, text: str) -> str | None:
    """The access log's request target, query string included (``/a.php?x=1``)."""
    i = text.find('"')
    if i < 0:
        return None
    j = text.find('"', i + 1)
    parts = text[i + 1 : j if j > 0 else None].split(" ")
    return parts[1] if 2 <= len(parts) <= 3 else None


def _query(ev: SecurityEvent, text: str) -> str | None:
    t = _request_target(ev, text)
    if t is None:
        return None
    q = t.partition("?")[2]
    return q or None


def _referer(ev: SecurityEvent, text: str) -> str | None:
    i = text.find('"')
    j = text.find('"', i + 1) if i >= 0 else -1
    if j < 0:
        return None
    k = text.find('"', j + 1)
    m = text.find('"', k + 1) if k >= 0 else -1
    if m < 0:
        return None
    ref = text[k + 1 : m]
    return None if ref in ("", "-") else ref


def _fw_action(ev: SecurityEvent, text: str) -> str | None:
    st = ev.conn_state
    return {"blocked": "block", "allowed": "accept"}.get(st or "", st)


def _fw_blocked(ev: SecurityEvent, text: str) -> str | None:
    st = ev.conn_state
    return None if st not in ("blocked", "allowed") else ("true" if st == "blocked" else "false")


@dataclass(frozen=True)
class LogSource:
    """One Vigil dataset as Sigma sees it.

    ``services`` maps a Sigma ``service`` (``None``: the rule names none) to the process
    names whose lines it covers (``None``: every line of the dataset).
    """

    dataset: str
    category: str | None
    product: str | None
    services: dict[str | None, frozenset[str] | None]
    fields: dict[str, Getter]
    #: Sigma field name -> our field name (the pipeline's mapping).
    mapping: dict[str, str] = field(default_factory=dict)

    def _mapping(self) -> dict[str | None, str | list[str]]:
        return {k: v for k, v in self.mapping.items()}

    def pipeline(self) -> ProcessingPipeline:
        """The pySigma pipeline that renames this source's Sigma fields to ours."""
        return ProcessingPipeline(
            name=f"vigil {self.dataset}",
            items=[
                ProcessingItem(
                    identifier=f"vigil_{self.dataset}_fields",
                    transformation=FieldMappingTransformation(self._mapping()),
                    rule_conditions=[
                        LogsourceCondition(category=self.category, product=self.product)
                    ],
                )
            ],
        )


_WEB = {
    "c-ip": "source_ip",
    "cs-method": "http_method",
    "cs-uri-stem": "url_path",
    # SigmaHQ's web rules match paths in cs-uri-query ("/mgmt/tm/util/bash"): the whole
    # request target, as most backends map it; cs-uri is the same.
    "cs-uri-query": "url_target",
    "cs-uri": "url_target",
    "sc-status": "http_status",
    "cs-user-agent": "user_agent",
    "cs-username": "user_name",
    "cs-referer": "http_referer",
    "sc-bytes": "bytes",
}
_FIREWALL = {
    "src_ip": "source_ip",
    "src_port": "source_port",
    "dst_ip": "destination_ip",
    "dst_port": "destination_port",
    "protocol": "transport",
    "action": "fw_action",
    "blocked": "fw_blocked",
}
_ZEEK_CONN = {
    "id.orig_h": "source_ip",
    "id.orig_p": "source_port",
    "id.resp_h": "destination_ip",
    "id.resp_p": "destination_port",
    "proto": "transport",
    "conn_state": "conn_state",
    "src_ip": "source_ip",
    "dst_ip": "destination_ip",
    "dst_port": "destination_port",
}

# No Sigma taxonomy names the fields of sshd's lines (SigmaHQ's linux rules are keywords);
# these are the names Vigil's own rules (flows/security/sigma/rules) group and count by.
_LINUX = {
    "src_ip": "source_ip",
    "user": "user_name",
}

_EVENT_FIELDS = (
    "source_ip",
    "source_port",
    "destination_ip",
    "destination_port",
    "transport",
    "bytes",
    "conn_state",
    "user_name",
    "http_status",
    "http_method",
    "url_path",
    "host_name",
    "process_name",
    "process_pid",
    "user_agent",
)
_GETTERS: dict[str, Getter] = {n: _attr(n) for n in _EVENT_FIELDS}
_GETTERS.update(
    url_target=_request_target,
    url_query=_query,
    http_referer=_referer,
    fw_action=_fw_action,
    fw_blocked=_fw_blocked,
)


def _fields(mapping: dict[str, str]) -> dict[str, Getter]:
    return {ours: _GETTERS[ours] for ours in set(mapping.values()) | set(_EVENT_FIELDS)}


#: Every log source Sigma rules can run on, by dataset.
LOG_SOURCES: tuple[LogSource, ...] = (
    LogSource(
        "ssh",
        None,
        "linux",
        {
            None: None,
            "auth": None,
            "syslog": None,
            "sshd": frozenset({"sshd"}),
            "vsftpd": frozenset({"vsftpd"}),
            "cron": frozenset({"cron", "CRON", "crond"}),
            "sudo": frozenset({"sudo"}),
        },
        _fields(_LINUX),
        _LINUX,
    ),
    LogSource(
        "access",
        "webserver",
        None,
        {None: None, "apache": None, "nginx": None},
        _fields(_WEB),
        _WEB,
    ),
    LogSource("iptables", "firewall", None, {None: None}, _fields(_FIREWALL), _FIREWALL),
    LogSource("zeek", None, "zeek", {"conn": None}, _fields(_ZEEK_CONN), _ZEEK_CONN),
)


def source_for(category: str | None, product: str | None, service: str | None) -> LogSource | None:
    """The log source that serves a rule's ``logsource`` block, or ``None``.

    Web rules may name the server alone (``product: apache``, ``service: nginx``).
    """
    by = {s.dataset: s for s in LOG_SOURCES}
    web = ("apache", "nginx")
    if category == "webserver" or (category is None and (product in web or service in web)):
        return by["access"] if service in by["access"].services else None
    if category == "firewall":
        return by["iptables"] if service is None else None
    if category is None and product is not None:
        for src in LOG_SOURCES:
            if src.product == product and service in src.services:
                return src
    return None
