"""Syslog lines: the header (file, RFC 3164, RFC 5424) and the messages that matter for security.

One :class:`SyslogParser` serves both the ``"ssh"`` and the ``"iptables"`` datasets: a
``/var/log/syslog`` holds sshd and kernel firewall lines side by side, so every syslog line
goes through the same message classifier and only ``dataset`` differs.

Messages recognised, as ``action="authentication"`` with ``outcome`` and ``reason``:

- ``Failed <method> for [invalid user ]U from IP port P ssh2``: failure, reason = method
  (``"password"``, ``"none"``, ``"keyboard-interactive/pam"`` ...);
- ``Invalid user U from IP [port P]``: failure, ``"invalid_user"``;
- ``maximum authentication attempts exceeded for [invalid user ]U from IP port P ssh2``
  (sshd's MaxAuthTries reached on one connection): failure, ``"max_attempts"``;
- ``Accepted <method> for U from IP port P ssh2[: key]``: success, reason = method;
- ``[pam_unix(sshd:auth): ]authentication failure; ... rhost=H [user=U]`` (also the old
  ``sshd(pam_unix)[pid]:`` form): failure, ``"pam"``; ``rhost`` is kept as ``source_ip`` even
  when it is a host name;
- ``Connection closed by``, ``Connection reset by``, ``Disconnected from``, ``Received
  disconnect from`` and ``Disconnecting [authenticating |invalid ]user U IP port P: ...``
  ending in ``[preauth]``, and ``Did not receive identification string from IP``: unknown,
  ``"preauth_disconnect"``. ``Disconnecting: Too many authentication failures`` (no
  address) is ``"other"``; the form with an address (OpenSSH 7.5+) always follows a
  ``maximum authentication attempts exceeded`` line of the same connection, which counts;
- ``reverse mapping checking getaddrinfo for H [IP] failed - POSSIBLE BREAK-IN ATTEMPT!``
  and ``Address IP maps to H, but this does not map back``: unknown, ``"reverse_mapping"``.

Also recognised, as ``action="connection"``: ftpd's ``connection from IP (...)``
(``destination_port=21``, ``transport="tcp"``) and kernel netfilter lines (``... SRC=
DST= PROTO= ...``, see :meth:`SyslogParser._netfilter`). Anything else is
``action="other"``. ``message repeated N times: [ msg]`` is classified as ``msg`` (one event
per line) and sshd's ``error: `` prefix is ignored.

On a modern sshd a failed password gives two lines, ``pam_unix(sshd:auth): authentication
failure`` and ``Failed password``, so two failure events (reasons ``"pam"`` and
``"password"``); count one reason, not both. A connection that reaches MaxAuthTries after
logging each ``Failed password`` adds one ``"max_attempts"`` event to attempts already seen;
where sshd logged no attempt (public-key and keyboard-interactive bots) that line is the only
trace of them. ``PAM N more authentication failures`` is ``"other"``: it sums up, when the
connection ends, N failures that were each logged already (every one of the 151 such lines
in the shared auth logs follows them), so counting it would only count them twice.

Timestamps without a zone (RFC 3164 and file lines) are read in the zone given to
:class:`SyslogYears` (UTC by default); RFC 5424 timestamps carry their own offset.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from vigil.flows.errors import ParseError
from vigil.flows.security.parsers._common import (
    BAD_NUMBER,
    BAD_SYSLOG_HEADER,
    CACHE_MAX,
    MONTHS,
    days_from_civil,
    days_in_month,
    iso_to_epoch,
    local_to_utc,
    local_zone,
    make_event,
    utc_to_local,
    year_of_epoch,
)

from vigil.records import RawLine, SecurityEvent

# Latest epoch accepted as a reference time (year 9999); anything else means "unknown".
_MAX_REF = 253_402_300_800.0

_BSD = re.compile(
    r"(?:<\d{1,3}>)?"  # PRI, present on the wire (RFC 3164), absent in files
    r"([A-Z][a-z][a-z] [ \d]?\d \d\d:\d\d):(\d\d)(?:\.\d{1,6})? "  # no year
    r"(\S+) +"  # host
    r"(?:([^\s\[\]():]+)(?:\([^\s)]*\))?(?:\[(\d{1,10})\])?: ?)?"  # tag: prog(sub)[pid]:
    r"(.*)",
    re.S | re.A,
)
_R5424 = re.compile(
    r"<\d{1,3}>1 (\S+) (\S+) (\S+) (\S+) \S+ "  # PRI VERSION TIMESTAMP HOST APP PROCID MSGID
    r'(?:-|(?:\[(?:[^\]"\\]|\\.|"(?:[^"\\]|\\.)*")*\])+)'  # STRUCTURED-DATA
    r"(?: \ufeff?(.*))?",  # MSG, maybe with a BOM
    re.S | re.A,
)

_FAILED = re.compile(
    r"Failed (\S+) for (?:(?:invalid|illegal) user )?(.*?) from (\S+) port (\d{1,5})(?: ssh\d)?\s*",
    re.A,
)
_ACCEPTED = re.compile(
    r"Accepted (\S+) for (.*?) from (\S+) port (\d{1,5})(?: ssh\d)?(?::.*)?\s*", re.S | re.A
)
_INVALID = re.compile(r"(?:Invalid|Illegal) user (.*?) from (\S+)(?: port (\d{1,5}))?\s*", re.A)
_PAM_FAIL = re.compile(r"(?:pam_\w+\([^)]*\): )?authentication failure;")
_RHOST = re.compile(r" rhost=(\S*)")
_PAM_USER = re.compile(r" user=(\S+)")
_PREAUTH = re.compile(
    r"(?:Connection (?:closed|reset) by|Disconnected from|Received disconnect from|Disconnecting) "
    r"(?:(?:invalid |authenticating )?user (.*?) )?"
    r"(\S+)(?: port (\d{1,5}))?(?::.*)?",  # matched without " [preauth]", see _classify
    re.S | re.A,
)
_MAX_TRIES = re.compile(
    r"maximum authentication attempts exceeded for (?:(?:invalid|illegal) user )?(.*?)"
    r" from (\S+) port (\d{1,5})(?: ssh\d)?(?: \[preauth\])?\s*",
    re.A,
)
_NO_IDENT = re.compile(
    r"Did not receive identification string from (\S+)(?: port (\d{1,5}))?\s*", re.A
)
_REVERSE = re.compile(
    r"reverse mapping checking getaddrinfo for (\S+) \[(\S+)\] failed"
    r"|Address (\S+) maps to (\S+), but this does not map back"
)
_FTP_CONN = re.compile(r"connection from (\S+)")
_REPEATED = re.compile(r"message repeated \d+ times: \[ ?(.*)\]\s*", re.S | re.A)

_Header = tuple[float, str | None, str | None, int | None, str]


class SyslogYears:
    """Year and time-zone inference for syslog timestamps, which carry neither.

    With a fixed ``year``, each origin starts in that year and moves to the next one when
    its month goes backwards by more than six months (Dec to Jan). A line whose month is more
    than six months *ahead* of the origin's current month is a straggler from the previous
    year and does not move the state. Without ``year``, the year comes from the line's
    reference time (or ``now()``), minus one if that puts the line more than a day in the
    future. Months and years are those of the site's wall clock in ``timezone``.

    Parameters
    ----------
    year
        The year of the first line of every origin, or ``None`` to use reference times.
    now
        Wall clock, epoch seconds; used when a line has no reference time.
    timezone
        IANA name of the zone the timestamps are written in (``"Asia/Ho_Chi_Minh"``).

    Examples
    --------
    >>> ys = SyslogYears(year=2016)
    >>> [ys.year_for("f", m) for m in (11, 12, 1, 12, 2)]
    [2016, 2016, 2017, 2016, 2017]
    >>> SyslogYears(now=lambda: 1_483_228_800.0).ref_year(0.0)  # no reference: now, 2017-01-01
    (2017, 1483228800.0)
    >>> SyslogYears(timezone="America/New_York").ref_year(1_483_228_800.0)[0]  # still 2016 there
    2016
    """

    def __init__(
        self,
        year: int | None = None,
        now: Callable[[], float] = time.time,
        *,
        timezone: str = "UTC",
    ) -> None:
        self.year = year
        self.now = now
        self.timezone = timezone
        self.zone = local_zone(timezone)  # None for UTC: no conversion
        self._state: dict[str, list[int]] = {}  # origin -> [year, last month]
        self._span = (0, 0.0, -1.0)  # cached year_of_epoch result

    def year_for(self, origin: str, month: int, ref_ts: float = 0.0) -> int:
        """The year of a line of ``origin`` in ``month``; updates rollover state.

        With no fixed year the result is the reference time's year; the caller applies the
        one-day rule (see :meth:`SyslogParser.header`).
        """
        if self.year is None:
            return self.ref_year(ref_ts)[0]
        st = self._state.get(origin)
        if st is None:
            self._state[origin] = [self.year, month]
            return self.year
        last = st[1]
        if month == last:
            return st[0]
        if month < last:
            if last - month > 6:
                st[0] += 1
            st[1] = month
            return st[0]
        if month - last > 6:
            return st[0] - 1  # a straggler from before the rollover
        st[1] = month
        return st[0]

    def ref_year(self, ref_ts: float) -> tuple[int, float]:
        """The local year of ``ref_ts`` (``now()`` when unknown) and the reference time used."""
        if not 0.0 < ref_ts < _MAX_REF:  # also rejects NaN
            ref_ts = self.now()
        y, start, end = self._span
        if not start <= ref_ts < end:
            zone = self.zone
            if zone is None:
                self._span = year_of_epoch(ref_ts)
            else:  # the span of the local year, in epoch seconds
                y, first, nxt = year_of_epoch(utc_to_local(zone, ref_ts))
                self._span = (y, local_to_utc(zone, first), local_to_utc(zone, nxt))
            y = self._span[0]
        return y, ref_ts

    def to_utc(self, wall: float) -> float:
        """Epoch seconds of a wall-clock time of the zone (seconds since 1970-01-01 local)."""
        return wall if self.zone is None else local_to_utc(self.zone, wall)


class SyslogParser:
    """Parses syslog lines into :class:`SecurityEvent` for one dataset.

    Parameters
    ----------
    dataset
        Value of ``SecurityEvent.dataset`` (``"ssh"`` or ``"iptables"``).
    years
        Year inference state, shared by the parsers of one :class:`LineParser`.
    """

    def __init__(self, dataset: str, years: SyslogYears) -> None:
        self.dataset = dataset
        self.years = years
        self._minutes: dict[str, list[Any]] = {}  # "Mon DD hh:mm" -> see _minute

    # -- header ----------------------------------------------------------------------------

    def _minute(self, key: str) -> list[Any]:
        """Cache entry for ``"Mon DD hh:mm"``: month, day, seconds into the day, then twice
        a year and the epoch of that minute in it: the year last used, and the year before it
        (for the one-day rule), so a steady stream costs one lookup per line."""
        mon, day_s, hm = key.split()  # the day may be "9", " 9" or "09"
        month = MONTHS.get(mon)
        day, h, mi = int(day_s), int(hm[:2]), int(hm[3:])
        if month is None or not 1 <= day <= 31 or h > 23 or mi > 59:
            raise ParseError(BAD_SYSLOG_HEADER, key)
        if len(self._minutes) > CACHE_MAX:
            self._minutes.clear()
        ent: list[Any] = [month, day, h * 3600 + mi * 60, None, 0.0, None, 0.0]
        self._minutes[key] = ent
        return ent

    @staticmethod
    def _epoch(ent: list[Any], year: int, years: SyslogYears) -> float:
        """Epoch of the cached minute in ``year``, read in the zone of ``years``."""
        month, day = ent[0], ent[1]
        if day > days_in_month(year, month):
            raise ParseError(BAD_SYSLOG_HEADER, f"{year}-{month}-{day}")
        return years.to_utc(days_from_civil(year, month, day) * 86400.0 + float(ent[2]))

    def header(self, raw: RawLine, text: str, years: SyslogYears) -> _Header | None:
        """Split a line into ``(ts, host, process, pid, message)``; ``None`` for a blank line.

        Raises
        ------
        ParseError
            ``"bad syslog header"``.
        """
        if text[:1] == "<":
            m5 = _R5424.match(text)
            if m5 is not None:
                return self._header_5424(raw, m5, years)
        m = _BSD.match(text)
        if m is None:
            if not text or text.isspace():
                return None
            raise ParseError(BAD_SYSLOG_HEADER)
        key, ss, host, prog, pid, msg = m.groups()
        ent = self._minutes.get(key)
        if ent is None:
            ent = self._minute(key)
        s = int(ss)
        if s > 60:
            raise ParseError(BAD_SYSLOG_HEADER, ss)
        if years.year is not None:
            year = years.year_for(raw.origin, ent[0])
            if ent[3] != year:
                ent[4] = self._epoch(ent, year, years)
                ent[3] = year
            ts = ent[4] + s
        else:
            year, ref = years.ref_year(raw.ref_ts)
            if ent[3] != year:
                ent[4] = self._epoch(ent, year, years)
                ent[3] = year
            ts = ent[4] + s
            if ts > ref + 86400.0:  # a line from the end of last year
                if ent[5] != year - 1:
                    ent[6] = self._epoch(ent, year - 1, years)
                    ent[5] = year - 1
                ts = ent[6] + s
        return ts, host, prog, (int(pid) if pid is not None else None), msg

    def _header_5424(self, raw: RawLine, m: re.Match[str], years: SyslogYears) -> _Header:
        stamp, host, app, procid, msg = m.groups()
        if stamp == "-":  # NILVALUE: the reception time (or now) is the best we have
            ts = years.ref_year(raw.ref_ts)[1]
        else:
            try:
                ts = iso_to_epoch(stamp)
            except ParseError as ex:
                raise ParseError(BAD_SYSLOG_HEADER, stamp[:64]) from ex
        return (
            ts,
            None if host == "-" else host,
            None if app == "-" else app,
            int(procid) if procid.isascii() and procid.isdigit() and len(procid) <= 10 else None,
            msg or "",
        )

    # -- lines -----------------------------------------------------------------------------

    def parse(self, raw: RawLine) -> SecurityEvent | None:
        """Parse one line; ``None`` for a blank line.

        Raises
        ------
        ParseError
            ``"bad syslog header"`` or ``"bad number"`` (netfilter fields).
        """
        hdr = self.header(raw, raw.text, self.years)
        if hdr is None:
            return None
        ts, host, prog, pid, msg = hdr
        ev = self._classify(ts, host, prog, pid, msg)
        if ev is None:
            return make_event(
                ts, self.dataset, "other", host_name=host, process_name=prog, process_pid=pid
            )
        return ev

    def _classify(
        self, ts: float, host: str | None, prog: str | None, pid: int | None, msg: str
    ) -> SecurityEvent | None:
        if msg.startswith("error: "):  # sshd's error() prefix, as on "Received disconnect"
            msg = msg[7:]
        c = msg[:1]
        ds = self.dataset
        if c == "F":
            m = _FAILED.fullmatch(msg)
            if m is not None:
                method, user, ip, port = m.groups()
                return make_event(
                    ts, ds, "authentication", "failure", method,
                    source_ip=ip, source_port=_port(port), user_name=user,
                    host_name=host, process_name=prog, process_pid=pid,
                )  # fmt: skip
        elif c == "A":
            if msg.startswith("Accepted "):
                m = _ACCEPTED.fullmatch(msg)
                if m is not None:
                    method, user, ip, port = m.groups()
                    return make_event(
                        ts, ds, "authentication", "success", method,
                        source_ip=ip, source_port=_port(port), user_name=user,
                        host_name=host, process_name=prog, process_pid=pid,
                    )  # fmt: skip
            elif msg.startswith("Address "):
                return self._reverse(ts, host, prog, pid, msg)
        elif c == "I":
            m = _INVALID.fullmatch(msg)
            if m is not None:
                user, ip, port = m.groups()
                return make_event(
                    ts, ds, "authentication", "failure", "invalid_user",
                    source_ip=ip, source_port=_port(port), user_name=user,
                    host_name=host, process_name=prog, process_pid=pid,
                )  # fmt: skip
        elif c == "p" or c == "a":
            if "authentication failure;" in msg and _PAM_FAIL.match(msg) is not None:
                rh = _RHOST.search(msg)
                us = _PAM_USER.search(msg)
                return make_event(
                    ts, ds, "authentication", "failure", "pam",
                    source_ip=(rh.group(1) or None) if rh is not None else None,
                    user_name=us.group(1) if us is not None else None,
                    host_name=host, process_name=prog, process_pid=pid,
                )  # fmt: skip
        elif c == "C" or c == "D" or c == "R":
            cut = msg.rfind(" [preauth]", max(0, len(msg) - 16))
            if cut > 0 and (cut + 10 == len(msg) or msg[cut + 10 :].isspace()):
                # Without the suffix, the free-text tail (?::.*) runs to the end in one step;
                # with it, a crafted line can make that tail backtrack quadratically.
                m = _PREAUTH.fullmatch(msg, 0, cut)
                if m is not None:
                    user, ip, port = m.groups()
                    return self._preauth(ts, host, prog, pid, ip, port, user)
            elif c == "D" and msg.startswith("Did not receive identification string from "):
                m = _NO_IDENT.fullmatch(msg)
                if m is not None:
                    ip, port = m.groups()
                    return self._preauth(ts, host, prog, pid, ip, port, None)
        elif c == "r":
            if msg.startswith("reverse mapping checking"):
                return self._reverse(ts, host, prog, pid, msg)
        elif c == "c":
            if prog is not None and prog.endswith("ftpd") and msg.startswith("connection from "):
                m = _FTP_CONN.match(msg)
                if m is not None:
                    return make_event(
                        ts, ds, "connection", source_ip=m.group(1), destination_port=21,
                        transport="tcp", host_name=host, process_name=prog, process_pid=pid,
                    )  # fmt: skip
        elif c == "m":
            if msg.startswith("maximum authentication attempts exceeded for "):
                m = _MAX_TRIES.fullmatch(msg)
                if m is not None:
                    user, ip, port = m.groups()
                    return make_event(
                        ts, ds, "authentication", "failure", "max_attempts",
                        source_ip=ip, source_port=_port(port), user_name=user,
                        host_name=host, process_name=prog, process_pid=pid,
                    )  # fmt: skip
            elif msg.startswith("message repeated "):
                m = _REPEATED.fullmatch(msg)
                if m is not None and not m.group(1).startswith("message repeated "):
                    return self._classify(ts, host, prog, pid, m.group(1))  # unwrap once only
        if prog == "kernel" and " SRC=" in msg:
            return self._netfilter(ts, host, prog, pid, msg)
        return None

    def _preauth(
        self,
        ts: float,
        host: str | None,
        prog: str | None,
        pid: int | None,
        ip: str,
        port: str | None,
        user: str | None,
    ) -> SecurityEvent:
        return make_event(
            ts, self.dataset, "authentication", "unknown", "preauth_disconnect",
            source_ip=ip, source_port=_port(port), user_name=user,
            host_name=host, process_name=prog, process_pid=pid,
        )  # fmt: skip

    def _reverse(
        self, ts: float, host: str | None, prog: str | None, pid: int | None, msg: str
    ) -> SecurityEvent | None:
        m = _REVERSE.match(msg)
        if m is None:
            return None
        ip = m.group(2) if m.group(2) is not None else m.group(3)
        return make_event(
            ts, self.dataset, "authentication", "unknown", "reverse_mapping",
            source_ip=ip, host_name=host, process_name=prog, process_pid=pid,
        )  # fmt: skip

    def _netfilter(
        self, ts: float, host: str | None, prog: str | None, pid: int | None, msg: str
    ) -> SecurityEvent | None:
        """A netfilter ``LOG`` line (iptables, UFW), or ``None`` if it has no ``SRC=``.

        ``conn_state`` comes from the log prefix before ``IN=``: ``"blocked"`` if it holds
        BLOCK, DROP, REJECT, DENY or DENIED (``[UFW BLOCK]``, ``IPTABLES-DROP:``),
        ``"allowed"`` if it holds ALLOW, ACCEPT or AUDIT, else ``None``: a LOG rule without
        such a word says nothing of the packet's fate, so only ``"blocked"`` makes the line a
        probe without an answer for the scan rules. ``bytes`` is the IP packet's ``LEN``.
        """
        msg = msg.rstrip()
        src = _field(msg, " SRC=")
        if src is None:
            return None
        # The log prefix (UFW's "[UFW BLOCK]", a rule's "IPTABLES-DROP: ") comes before IN=.
        cut = 0 if msg.startswith("IN=") else msg.find(" IN=")
        prefix = msg[:cut].upper() if cut > 0 else ""
        state = None
        if prefix:
            if (
                "BLOCK" in prefix
                or "DROP" in prefix
                or "REJECT" in prefix
                or "DENY" in prefix
                or "DENIED" in prefix
            ):
                state = "blocked"
            elif "ALLOW" in prefix or "ACCEPT" in prefix or "AUDIT" in prefix:
                state = "allowed"  # UFW's AUDIT lines are not blocks
        proto = _field(msg, " PROTO=")
        return make_event(
            ts, self.dataset, "connection",
            source_ip=src or None, destination_ip=_field(msg, " DST=") or None,
            source_port=_num_port(_field(msg, " SPT=")),
            destination_port=_num_port(_field(msg, " DPT=")),
            transport=proto.lower() if proto else None, bytes=_num(_field(msg, " LEN=")),
            conn_state=state, host_name=host, process_name=prog, process_pid=pid,
        )  # fmt: skip

    def event_time(self, raw: RawLine, years: SyslogYears) -> float | None:
        """The line's timestamp, using ``years`` (the caller's own rollover state).

        ``years`` must have the time zone of the parser's own: both share one minute cache.
        """
        hdr = self.header(raw, raw.text, years)
        return None if hdr is None else hdr[0]


def _field(msg: str, key: str) -> str | None:
    """The value after the first ``key`` (such as ``" SRC="``) up to the next space."""
    i = msg.find(key)
    if i < 0:
        return None
    i += len(key)
    j = msg.find(" ", i)
    return msg[i:] if j < 0 else msg[i:j]


def _port(p: str | None) -> int | None:
    if p is None:
        return None
    v = int(p)  # the regexes allow at most five digits
    return v if v <= 65535 else None


def _num(s: str | None) -> int | None:
    if not s:
        return None
    if not (s.isascii() and s.isdigit()) or len(s) > 18:
        raise ParseError(BAD_NUMBER, s[:32])
    return int(s)


def _num_port(s: str | None) -> int | None:
    v = _num(s)
    if v is not None and v > 65535:
        raise ParseError(BAD_NUMBER, str(s))
    return v
