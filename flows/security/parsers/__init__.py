"""Security log parsers: one :class:`LineParser` per worker turns each :class:`RawLine` into a
:class:`SecurityEvent`, a :class:`DeadLetter`, or ``None`` for a consumed meta line.

Formats (``RawLine.fmt``) and their aliases:

- ``"ssh"`` / ``"syslog"``: syslog lines (file, RFC 3164, RFC 5424) with OpenSSH, PAM and
  ftpd messages; see :mod:`vigil.flows.security.parsers.syslog`.
- ``"zeek"``: Zeek ``conn.log``, TSV or JSON; see :mod:`vigil.flows.security.parsers.zeek`.
- ``"suricata"``: Suricata ``eve.json``; see :mod:`vigil.flows.security.parsers.suricata`.
- ``"iptables"`` / ``"ufw"``: kernel netfilter log lines behind a syslog header.
- ``"access"`` / ``"nginx"`` / ``"apache"``: common and combined access logs; see
  :mod:`vigil.flows.security.parsers.access`.

``SecurityEvent.dataset`` is the canonical name (the first of each group above).

Dead-letter reasons (``DeadLetter.reason``, stable, usable as a metric label):
``"line too long"``, ``"unknown format"``, ``"bad syslog header"``, ``"bad json"``,
``"missing field: <name>"``, ``"bad field: <name>"`` (present but of the wrong JSON type),
``"bad number"``, ``"bad zeek row"``, ``"bad timestamp"``, ``"timestamp without time zone"``,
``"bad access line"``, and the exception class name for anything unexpected.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vigil.flows.errors import ParseError
from vigil.flows.security.parsers._common import (
    BAD_ACCESS_LINE,
    BAD_JSON,
    BAD_NUMBER,
    BAD_SYSLOG_HEADER,
    BAD_TIMESTAMP,
    BAD_ZEEK_ROW,
    LINE_TOO_LONG,
    NO_TIME_ZONE,
    UNKNOWN_FORMAT,
    bad_field,
    missing_field,
)
from vigil.flows.security.parsers.access import access_time, parse_access
from vigil.flows.security.parsers.suricata import eve_time, parse_eve
from vigil.flows.security.parsers.syslog import SyslogParser, SyslogYears
from vigil.flows.security.parsers.zeek import ZeekParser

from vigil.records import DeadLetter, RawLine, SecurityEvent

__all__ = [
    "ALIASES",
    "BAD_ACCESS_LINE",
    "BAD_JSON",
    "BAD_NUMBER",
    "BAD_SYSLOG_HEADER",
    "BAD_TIMESTAMP",
    "BAD_ZEEK_ROW",
    "FORMATS",
    "LINE_TOO_LONG",
    "NO_TIME_ZONE",
    "PAYLOAD_MAX",
    "UNKNOWN_FORMAT",
    "LineParser",
    "bad_field",
    "missing_field",
]

#: Accepted ``RawLine.fmt`` values mapped to the canonical format (``SecurityEvent.dataset``).
ALIASES: dict[str, str] = {
    "ssh": "ssh",
    "syslog": "ssh",
    "zeek": "zeek",
    "suricata": "suricata",
    "iptables": "iptables",
    "ufw": "iptables",
    "access": "access",
    "nginx": "access",
    "apache": "access",
}

#: The accepted format names, aliases included.
FORMATS: tuple[str, ...] = tuple(ALIASES)

#: Longest prefix of a line kept in a dead letter's payload.
PAYLOAD_MAX = 512

Result = SecurityEvent | DeadLetter | None


class LineParser:
    """Parses raw log lines of every supported format. Stateful, one per worker.

    State is kept per ``RawLine.origin``: the Zeek TSV layout (``#fields`` and friends) and
    the syslog year, which syslog timestamps lack.

    Parameters
    ----------
    year
        Year of the first syslog line of each origin; it moves on by one when an origin's
        month goes backwards by more than six months (Dec to Jan). ``None`` infers the year
        from ``RawLine.ref_ts`` (or ``now()`` when that is ``0.0``): its UTC year, or the
        year before if that would put the line more than a day after the reference time.
    now
        Wall clock in epoch seconds, for lines without a reference time.
    timezone
        IANA name of the zone in which syslog and netfilter timestamps are written (they
        carry none); the year and its rollover follow that zone's calendar. Other formats
        carry their own offset (or are UTC, as Zeek's epochs) and ignore it.

    Examples
    --------
    >>> p = LineParser(year=2017)
    >>> line = ("Mar 30 15:54:19 ip-10-77-20-248 sshd[8273]: Failed password for invalid"
    ...         " user pi from 24.151.103.17 port 50378 ssh2")
    >>> ev = p.parse(RawLine("ssh", "auth.log", line))
    >>> ev.ts, ev.action, ev.outcome, ev.reason, ev.user_name, ev.source_ip, ev.source_port
    (1490889259.0, 'authentication', 'failure', 'password', 'pi', '24.151.103.17', 50378)
    >>> ev.host_name, ev.process_name, ev.process_pid
    ('ip-10-77-20-248', 'sshd', 8273)
    >>> p.parse(RawLine("zeek", "conn.log", "#fields\\tts\\tuid")) is None
    True
    >>> p.parse(RawLine("ssh", "auth.log", "garbage"))
    DeadLetter(step='parse', reason='bad syslog header', payload='garbage', fmt='ssh',
               origin='auth.log')
    >>> p.event_time(RawLine("ssh", "auth.log", line))
    1490889259.0
    >>> hcm = LineParser(year=2017, timezone="Asia/Ho_Chi_Minh")  # UTC+7
    >>> hcm.parse(RawLine("ssh", "auth.log", line)).ts == ev.ts - 7 * 3600
    True
    """

    def __init__(
        self,
        *,
        year: int | None = None,
        now: Callable[[], float] = time.time,
        timezone: str = "UTC",
    ) -> None:
        self.year = year
        self.now = now
        self.timezone = timezone
        self._years = SyslogYears(year, now, timezone=timezone)
        # event_time keeps its own rollover state, so calling it never shifts what parse sees.
        self._time_years = SyslogYears(year, now, timezone=timezone)
        ssh = SyslogParser("ssh", self._years)
        fw = SyslogParser("iptables", self._years)
        zeek = ZeekParser()
        parsers: dict[str, Callable[[RawLine], SecurityEvent | None]] = {
            "ssh": ssh.parse,
            "zeek": zeek.parse,
            "suricata": parse_eve,
            "iptables": fw.parse,
            "access": parse_access,
        }
        times: dict[str, Callable[[RawLine], float | None]] = {
            "ssh": lambda raw: ssh.event_time(raw, self._time_years),
            "zeek": zeek.event_time,
            "suricata": eve_time,
            "iptables": lambda raw: fw.event_time(raw, self._time_years),
            "access": access_time,
        }
        self._parse = {name: parsers[canon] for name, canon in ALIASES.items()}
        self._time = {name: times[canon] for name, canon in ALIASES.items()}

    def parse(self, raw: RawLine) -> Result:
        """Parse one line. Never raises.

        Returns
        -------
        SecurityEvent | DeadLetter | None
            The event; a ``DeadLetter(step="parse")`` with a stable reason and the line's
            first :data:`PAYLOAD_MAX` characters; or ``None`` for a consumed meta line (a
            Zeek ``#`` header, a blank line).
        """
        try:
            if raw.oversize:
                return _dead(raw, LINE_TOO_LONG)
            fn = self._parse.get(raw.fmt)
            if fn is None:
                return _dead(raw, UNKNOWN_FORMAT)
            return fn(raw)
        except ParseError as ex:
            return _dead(raw, ex.reason)
        except Exception as ex:  # a parser bug must not stop the dataflow
            return _dead(raw, type(ex).__name__)

    def event_time(self, raw: RawLine) -> float | None:
        """The line's event time for replay ordering, or ``None`` if it has none. Never raises.

        Cheaper than :meth:`parse` for syslog and access lines. Zeek ``#`` headers are read
        (they set the column layout) and give ``None``.
        """
        try:
            fn = self._time.get(raw.fmt)
            return None if fn is None else fn(raw)
        except Exception:  # unreadable: no time
            return None


def _dead(raw: RawLine, reason: str) -> DeadLetter:
    text = getattr(raw, "text", "")
    return DeadLetter(
        step="parse",
        reason=reason,
        payload=text[:PAYLOAD_MAX] if isinstance(text, str) else repr(text)[:PAYLOAD_MAX],
        fmt=str(getattr(raw, "fmt", "")),
        origin=str(getattr(raw, "origin", "")),
    )
