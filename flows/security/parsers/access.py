"""Apache and nginx access logs in the common and combined log formats.

``IP ident user [10/Oct/2000:13:55:36 -0700] "GET /path?q HTTP/1.1" 404 2326 "ref" "ua"``;
fields after the size are optional: the user agent of the combined format is kept (its
first 256 characters: web-scan evidence), the referer and nginx extras are ignored. A
request line that is not ``METHOD target [HTTP/x]`` (scanners send TLS handshakes to port
80) still gives an event, with no method or path: the status is what matters then.
"""

from __future__ import annotations

import re

from vigil.flows.errors import ParseError
from vigil.flows.security.parsers._common import (
    BAD_ACCESS_LINE,
    BAD_TIMESTAMP,
    CACHE_MAX,
    MONTHS,
    days_from_civil,
    days_in_month,
    iso_to_epoch,
    make_event,
    offset_seconds,
)

from vigil.records import RawLine, SecurityEvent

_LINE = re.compile(
    r'(\S+) \S+ (\S+) \[([^\]]*)\] "((?:[^"\\]|\\.)*)" (\d{3}|-) (\d{1,18}|-)(?=\s|$)', re.S | re.A
)
_CLF_TIME = re.compile(r"(\d\d/[A-Z][a-z][a-z]/\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d\d)(\d\d)", re.A)
_METHOD = re.compile(r"[A-Z][A-Z_-]{0,31}", re.A)
_REF_UA = re.compile(r'\s+"(?:[^"\\]|\\.)*"\s+"((?:[^"\\]|\\.)*)"', re.S | re.A)
_UA_CHARS = 256
_date_base: dict[str, float] = {}


def clf_to_epoch(stamp: str) -> float:
    """Epoch seconds of a common-log-format time such as ``10/Oct/2000:13:55:36 -0700``.

    ISO 8601 with an offset (nginx ``$time_iso8601``) is accepted too.

    Raises
    ------
    ParseError
        ``"bad timestamp"``.

    Examples
    --------
    >>> clf_to_epoch("10/Oct/2000:13:55:36 -0700")
    971211336.0
    """
    m = _CLF_TIME.fullmatch(stamp)
    if m is None:
        try:
            return iso_to_epoch(stamp)
        except ParseError as ex:
            raise ParseError(BAD_TIMESTAMP, stamp[:64]) from ex
    date, hh, mm, ss, oh, om = m.groups()
    base = _date_base.get(date)
    if base is None:
        d, mon, y = int(date[:2]), MONTHS.get(date[3:6]), int(date[7:])
        if mon is None or not 1 <= d <= days_in_month(y, mon):
            raise ParseError(BAD_TIMESTAMP, stamp[:64])
        base = days_from_civil(y, mon, d) * 86400.0
        if len(_date_base) > CACHE_MAX:
            _date_base.clear()
        _date_base[date] = base
    h, mi, s = int(hh), int(mm), int(ss)
    if h > 23 or mi > 59 or s > 60:
        raise ParseError(BAD_TIMESTAMP, stamp[:64])
    return base + h * 3600 + mi * 60 + s - offset_seconds(oh, om)


def parse_access(raw: RawLine) -> SecurityEvent | None:
    """Parse one access log line; ``None`` for a blank line.

    Raises
    ------
    ParseError
        ``"bad access line"``, ``"bad timestamp"``.

    Examples
    --------
    >>> from vigil.records import RawLine
    >>> line = ('203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif?x=1 HTTP/1.0"'
    ...         ' 404 2326 "http://example.com/" "curl/8.0"')
    >>> ev = parse_access(RawLine("access", "access.log", line))
    >>> ev.source_ip, ev.user_name, ev.http_method, ev.url_path, ev.http_status, ev.bytes
    ('203.0.113.9', 'frank', 'GET', '/a.gif', 404, 2326)
    >>> ev.user_agent
    'curl/8.0'
    """
    text = raw.text
    m = _LINE.match(text)
    if m is None:
        if not text or text.isspace():
            return None
        raise ParseError(BAD_ACCESS_LINE)
    ip, user, stamp, request, status, size = m.groups()
    ts = clf_to_epoch(stamp)
    method = path = None
    parts = request.split(" ")
    if 2 <= len(parts) <= 3 and _METHOD.fullmatch(parts[0]) is not None:
        method = parts[0]
        path = parts[1].split("?", 1)[0]
    ua = None
    if m.end() < len(text):
        um = _REF_UA.match(text, m.end())
        if um is not None and um[1] not in ("", "-"):
            ua = um[1][:_UA_CHARS]
    return make_event(
        ts, "access", "http_request", source_ip=ip,
        user_name=None if user == "-" else user,
        http_method=method, url_path=path,
        http_status=None if status == "-" else int(status),
        bytes=None if size == "-" else int(size), user_agent=ua,
    )  # fmt: skip


def access_time(raw: RawLine) -> float | None:
    """The line's timestamp, or ``None``."""
    text = raw.text
    i = text.find("[")
    j = text.find("]", i + 1)
    if i < 0 or j < 0:
        return None
    try:
        return clf_to_epoch(text[i + 1 : j])
    except ParseError:
        return None
