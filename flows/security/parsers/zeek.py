"""Zeek ``conn.log``, as TSV (with its ``#`` header lines) or as JSON lines.

TSV layout is kept per origin: ``#separator``, ``#unset_field``, ``#empty_field`` and
``#fields`` set it, and until a ``#fields`` line is seen an origin uses Zeek's standard
``conn.log`` column order. Extra trailing columns (``label detailedlabel`` in labelled data
sets) are ignored; fewer columns than the layout is a ``"bad zeek row"``.

The log type comes from ``#path`` (JSON: ``_path``): ``conn``, or any ``#fields`` with the
conn columns ``proto`` and ``conn_state`` (a conn log written under another path), is read
as connections; the rows of any other Zeek log (``ssl``, ``weird``, ``http`` ...) are
dead-lettered as ``"unsupported zeek log: <type>"``, where ``<type>`` is one of Zeek's own
log names or ``other`` (so the reasons stay a bounded set). Without ``#path`` or
``#fields`` a row is read as conn.log.

A flow Zeek recorded backwards (it missed the real originator's first packet, e.g. the
replies of a DNS-over-TLS server from port 853 to a client's ephemeral port) gets
``reason="backward"``: a TCP or UDP flow whose history does not open with the originator's
SYN (``S``; ``^``, Zeek's own flip, counts as an opening), from a well-known originator port
(below 1024) to an ephemeral responder port (1024 and up). The scan rules ignore those.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

import orjson
from vigil.flows.errors import ParseError
from vigil.flows.security.parsers._common import (
    BAD_JSON,
    BAD_NUMBER,
    BAD_ZEEK_ROW,
    CACHE_MAX,
    bad_field,
    check_count,
    check_port,
    iso_to_epoch,
    make_event,
    missing_field,
    opt_str,
)

from vigil.records import RawLine, SecurityEvent

#: Zeek's standard conn.log columns, used until an origin sends a ``#fields`` line.
CONN_FIELDS: tuple[str, ...] = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents",
)  # fmt: skip

# Columns read from a row, in this order; the first five are required.
_WANTED = (
    "ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p",
    "proto", "orig_bytes", "resp_bytes", "conn_state", "history",
)  # fmt: skip
_REQUIRED = 5

#: ``SecurityEvent.reason`` of a flow recorded backwards (see the module docstring).
BACKWARD = "backward"

#: Zeek's own log names (``#path``), as named in an unsupported log's dead-letter reason;
#: any other name reads ``other``, so the reasons stay a bounded set.
ZEEK_LOGS = frozenset({
    "analyzer", "broker", "capture_loss", "cluster", "config", "conn", "conn_long", "dce_rpc",
    "dhcp", "dnp3", "dns", "dpd", "files", "ftp", "http", "intel", "irc", "kerberos",
    "known_certs", "known_hosts", "known_modbus", "known_services", "ldap", "ldap_search",
    "loaded_scripts", "modbus", "mqtt_connect", "mqtt_publish", "mqtt_subscribe", "mysql",
    "netcontrol", "notice", "notice_alarm", "ntlm", "ntp", "ocsp", "openflow", "packet_filter",
    "pe", "print", "quic", "radius", "rdp", "reporter", "rfb", "signatures", "sip", "smb_files",
    "smb_mapping", "smtp", "snmp", "socks", "software", "ssh", "ssl", "stats", "syslog",
    "traceroute", "tunnel", "unknown_protocols", "weird", "weird_stats", "websocket", "x509",
})  # fmt: skip


def unsupported_log(path: str) -> str:
    """Dead-letter reason for the rows of a Zeek log that is not read:
    ``"unsupported zeek log: <path>"``, ``<path>`` one of :data:`ZEEK_LOGS` or ``other``.

    >>> unsupported_log("ssl"), unsupported_log("my_custom_log")
    ('unsupported zeek log: ssl', 'unsupported zeek log: other')
    """
    return f"unsupported zeek log: {path if path in ZEEK_LOGS else 'other'}"


def is_backward(
    proto: str | None, history: str | None, sport: int | None, dport: int | None
) -> bool:
    """Whether a flow was recorded backwards: a TCP or UDP flow from a well-known port to an
    ephemeral one whose known history does not open with the originator's SYN.

    >>> is_backward("tcp", "HcADd", 853, 51234), is_backward("tcp", "Sr", 853, 51234)
    (True, False)
    >>> is_backward("tcp", "^hADd", 853, 51234), is_backward("tcp", None, 853, 51234)
    (False, False)
    """
    return (
        sport is not None
        and dport is not None
        and sport < 1024 <= dport
        and history is not None
        and history[:1] not in "S^"  # "" is in it too: an empty history tells nothing
        and proto in ("tcp", "udp")
    )


@dataclass(frozen=True, slots=True)
class ZeekLayout:
    """How to read the TSV rows of one origin.

    Parameters
    ----------
    sep
        Column separator (``#separator``).
    unset, empty
        Markers for an unset and an empty value (``#unset_field``, ``#empty_field``).
    names
        Column names (``#fields``).
    path
        The log type (``#path``), ``None`` until one is seen.
    fields_seen
        Whether ``names`` came from a ``#fields`` line.
    """

    sep: str = "\t"
    unset: str = "-"
    empty: str = "(empty)"
    names: tuple[str, ...] = CONN_FIELDS
    path: str | None = None
    fields_seen: bool = False

    @property
    def unsupported(self) -> str | None:
        """The dead-letter reason of this log's rows, ``None`` for a conn log."""
        path = self.path
        if path == "conn" or (path is None and not self.fields_seen):
            return None
        if self.fields_seen and {"proto", "conn_state"} <= set(self.names):
            return None  # conn columns: a conn log under another path ("conn_long" ...)
        return unsupported_log(path or "other")

    @property
    def ncols(self) -> int:
        """Minimum number of columns in a row."""
        return len(self.names)

    def getter(self) -> Callable[[list[str]], tuple[str, ...]]:
        """Picks the wanted fields out of a row; an absent column reads the row's last item."""
        pos = {n: i for i, n in reversed(list(enumerate(self.names)))}
        return itemgetter(*(pos.get(n, -1) for n in _WANTED))


_Getter = Callable[[list[str]], tuple[str, ...]]
# A layout, its getter of the wanted columns, and the dead-letter reason of its rows (None
# for a conn log).
_Entry = tuple[ZeekLayout, _Getter, str | None]
_DEFAULT = ZeekLayout()
_DEFAULT_ENTRY: _Entry = (_DEFAULT, _DEFAULT.getter(), None)


def _decode_escapes(value: str) -> str:
    r"""Zeek writes the separator as ``\x09``; decode ``\xNN`` escapes, keep anything else."""
    out = []
    i = 0
    while i < len(value):
        if value.startswith("\\x", i) and len(value) >= i + 4:
            try:
                out.append(chr(int(value[i + 2 : i + 4], 16)))
                i += 4
                continue
            except ValueError:
                pass
        out.append(value[i])
        i += 1
    return "".join(out)


class ZeekParser:
    r"""Parses Zeek conn.log lines (TSV or JSON) into ``action="connection"`` events.

    Examples
    --------
    >>> from vigil.records import RawLine
    >>> p = ZeekParser()
    >>> row = "1655071231.7\tC1\t193.201.9.232\t46563\t147.32.81.167\t23\ttcp\t-\t-\t-\t-\tS0"
    >>> p.parse(RawLine("zeek", "conn.log", row + "\t-" * 9)).destination_port
    23
    """

    def __init__(self) -> None:
        # origin -> (layout, its getter of the wanted columns, unsupported reason)
        self._layouts: dict[str, _Entry] = {}

    def parse(self, raw: RawLine) -> SecurityEvent | None:
        """Parse one line; ``None`` for header and blank lines.

        Raises
        ------
        ParseError
            ``"bad json"``, ``"missing field: <name>"``, ``"bad field: <name>"``,
            ``"bad number"``, ``"bad zeek row"``, ``"unsupported zeek log: <type>"``.
        """
        text = raw.text
        c = text[:1]
        if c == "{":
            return self._parse_json(text)
        if c == "#":
            self._header(raw.origin, text)
            return None
        if not text or text.isspace():
            return None
        if c.isspace():
            stripped = text.lstrip()
            if stripped[:1] == "{":
                return self._parse_json(stripped)
        return self._parse_tsv(raw.origin, text)

    def _layout(self, origin: str) -> _Entry:
        return self._layouts.get(origin, _DEFAULT_ENTRY)

    def _header(self, origin: str, text: str) -> None:
        layout = self._layout(origin)[0]
        if text.startswith("#separator "):
            sep = _decode_escapes(text[11:].rstrip("\r\n"))
            if sep:
                layout = replace(layout, sep=sep)
        else:
            name, _, rest = text.partition(layout.sep)
            rest = rest.rstrip("\r\n")
            if name == "#fields":
                layout = replace(layout, names=tuple(rest.split(layout.sep)), fields_seen=True)
            elif name == "#unset_field":
                layout = replace(layout, unset=rest)
            elif name == "#empty_field":
                layout = replace(layout, empty=rest)
            elif name == "#path":
                layout = replace(layout, path=rest.strip())
            else:
                return  # "#types", "#open", "#close", comments: nothing to keep
        if len(self._layouts) > CACHE_MAX:
            self._layouts.clear()
        self._layouts[origin] = (layout, layout.getter(), layout.unsupported)

    def _parse_tsv(self, origin: str, text: str) -> SecurityEvent:
        layout, get, unsupported = self._layout(origin)
        if unsupported is not None:
            raise ParseError(unsupported)
        cols = text.split(layout.sep)
        if len(cols) < layout.ncols:
            raise ParseError(BAD_ZEEK_ROW, f"{len(cols)} columns, want {layout.ncols}")
        unset = layout.unset
        nul = (unset, layout.empty)
        cols.append(unset)  # what the index -1 of an absent column reads
        ts_s, orig_h, orig_p, resp_h, resp_p, proto, ob, rb, state, hist = get(cols)
        required = (ts_s, orig_h, orig_p, resp_h, resp_p)
        if unset in required or nul[1] in required:
            for name, v in zip(_WANTED, required, strict=False):
                if v in nul:
                    raise ParseError(missing_field(name))
        try:
            ts = float(ts_s)
            sport = int(orig_p)
            dport = int(resp_p)
            ob_i = None if ob in nul else int(ob)
            rb_i = None if rb in nul else int(rb)
        except ValueError as ex:
            raise ParseError(BAD_NUMBER, str(ex)[:64]) from ex
        if (
            not math.isfinite(ts)
            or not (0 <= sport <= 65535 and 0 <= dport <= 65535)
            or (ob_i is not None and ob_i < 0)
            or (rb_i is not None and rb_i < 0)
        ):
            raise ParseError(BAD_NUMBER, f"{ts_s} {orig_p} {resp_p} {ob} {rb}")
        transport = None if proto in nul else proto
        backward = sport < 1024 <= dport and is_backward(
            transport, None if hist in nul else hist, sport, dport
        )
        return make_event(
            ts, "zeek", "connection", "unknown", BACKWARD if backward else None,
            source_ip=orig_h, source_port=sport, destination_ip=resp_h, destination_port=dport,
            transport=transport,
            bytes=None if ob_i is None and rb_i is None else (ob_i or 0) + (rb_i or 0),
            conn_state=None if state in nul else state,
        )  # fmt: skip

    def _parse_json(self, text: str) -> SecurityEvent:
        try:
            d = orjson.loads(text)
        except orjson.JSONDecodeError as ex:
            raise ParseError(BAD_JSON, str(ex)[:64]) from ex
        if type(d) is not dict:
            raise ParseError(BAD_JSON, "not an object")
        path = d.get("_path")
        if path is not None and path != "conn":
            raise ParseError(unsupported_log(path if type(path) is str else "other"))
        if "id.orig_h" not in d and type(d.get("id")) is dict:
            d = {**d, **{f"id.{k}": v for k, v in d["id"].items()}}  # nested "id" record
        ts = _json_ts(d)
        orig_h = _required_str(d, "id.orig_h")
        sport = check_port(_required(d, "id.orig_p"))
        resp_h = _required_str(d, "id.resp_h")
        dport = check_port(_required(d, "id.resp_p"))
        ob = check_count(d.get("orig_bytes"))
        rb = check_count(d.get("resp_bytes"))
        proto = opt_str(d, "proto")
        hist = d.get("history")
        backward = is_backward(proto, hist if type(hist) is str else None, sport, dport)
        return make_event(
            ts, "zeek", "connection", "unknown", BACKWARD if backward else None,
            source_ip=orig_h, source_port=sport, destination_ip=resp_h, destination_port=dport,
            transport=proto,
            bytes=None if ob is None and rb is None else (ob or 0) + (rb or 0),
            conn_state=opt_str(d, "conn_state"),
        )  # fmt: skip

    def event_time(self, raw: RawLine) -> float | None:
        """The row's ``ts``; ``None`` for headers and unreadable rows (headers still count)."""
        text = raw.text
        c = text[:1]
        if c == "#":
            self._header(raw.origin, text)
            return None
        if c == "{":
            d = orjson.loads(text)
            return _json_ts(d) if type(d) is dict else None
        layout = self._layout(raw.origin)[0]
        if "ts" not in layout.names:
            return None
        i = layout.names.index("ts")
        t = float(text.split(layout.sep, i + 1)[i])
        return t if math.isfinite(t) else None


def _required(d: dict[str, Any], key: str) -> Any:
    v = d.get(key)
    if v is None:
        raise ParseError(missing_field(key))
    return v


def _required_str(d: dict[str, Any], key: str) -> str:
    v = _required(d, key)
    if type(v) is not str:
        raise ParseError(bad_field(key), repr(v)[:64])
    return v


def _json_ts(d: dict[str, Any]) -> float:
    ts = _required(d, "ts")
    t = type(ts)
    if t is float or t is int:
        return float(ts)  # orjson rejects NaN and infinities
    if t is str:
        return iso_to_epoch(ts)  # Zeek with JSON::TimestampFormat = JSON::TS_ISO8601
    raise ParseError(BAD_NUMBER, repr(ts)[:64])
