"""Port scans: vertical, horizontal and ping sweeps of one source as one episode.

A mixin of :class:`~vigil.flows.security.rules.SecurityRules` (connection events go here),
its own module because the scan rules share a single ``port_scan`` episode and their own
per-target tables, apart from the authentication and web rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vigil.flows.security.config import SecurityRules as RulesConfig
from vigil.flows.security.episodes import (
    _Episode,
    _fmt_n,
    _ongoing,
    _RuleLike,
    _seed_keys,
    _Source,
)
from vigil.flows.security.parsers.zeek import BACKWARD
from vigil.flows.security.windows import SlidingDistinct

from vigil.records import Detection, SecurityEvent

# Connection states that count as a failed probe, as in Zeek's own scan detection: no answer
# (S0), rejected (REJ), or aborted before any answer (RSTOS0, RSTRH, SH), plus a firewall's
# "blocked" and a flow that never got past "new". A connection that was answered (SF, S1,
# RSTO after a handshake, OTH midstream traffic ...) never counts towards a scan: ordinary
# clients produce plenty of those. A connection without a state (a firewall line that says
# neither block nor allow) is unknown: neither a probe nor an answered connection. Nor is a
# flow Zeek recorded backwards (``reason="backward"``, see parsers.zeek): the replies of a
# server to a client whose first packet Zeek missed are not probes of the client's ports.
UNANSWERED = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "blocked", "new"})
_MAX_TARGETS = 256  # per source: hosts tracked for vertical scans, ports for horizontal


def _decay(value: float, last_ts: float, ts: float, tau: float) -> float:
    if ts <= last_ts or value == 0.0:
        return value
    return value * math.exp((last_ts - ts) / tau)


def _probe_evidence(ep: _Episode, dst: str, port: int, proto: str) -> None:
    ep.count("ports", f"{port}/{proto}")
    ep.count("hosts", dst)


def _seed_window(
    ep: _Episode,
    d: SlidingDistinct | None,
    each: str,
    label: Callable[[object], str],
    whole: str,
    item: str,
) -> None:
    """A scan's start: the distinct values in the window (ports of a host, hosts of a port),
    once each under ``each``, and their number under ``whole``."""
    if d is None:
        return
    for v in d.exact_values():
        ep.count(each, label(v))
    ep.count(whole, item, len(d))


def _seed_ports(
    ep: _Episode, table: dict[str, SlidingDistinct] | None, dst: str, proto: str
) -> None:
    """A vertical scan's start: the distinct ports probed on the host in the window."""
    _seed_window(ep, (table or {}).get(dst), "ports", lambda p: f"{p}/{proto}", "hosts", dst)


def _seed_hosts(
    ep: _Episode, table: dict[int, SlidingDistinct] | None, port: int, proto: str
) -> None:
    """A horizontal scan's start: the distinct hosts probed on the port in the window."""
    _seed_window(ep, (table or {}).get(port), "hosts", str, "ports", f"{port}/{proto}")


#: A scan condition met by one probe: which (``VERTICAL``, ``HORIZONTAL``, ``PING``), its
#: count, and its target (the host of a vertical scan, the port of a horizontal one, ``""``
#: for a ping sweep). Its rule follows from the first (:meth:`_PortScans._scan_rule`); its
#: texts and the evidence of its start are built only when a detection is emitted.
_Hit = tuple[str, float, str]
VERTICAL, HORIZONTAL, PING = "vertical", "horizontal", "ping_sweep"
_PORT_SCAN = ("port_scan", "")


class _PortScans:
    """The connection rules of :class:`~vigil.flows.security.rules.SecurityRules`."""

    if TYPE_CHECKING:
        rules: RulesConfig
        refresh_s: float
        _ts: float

        def _emit(
            self,
            out: list[Detection],
            kind: str,
            entity: str,
            rule: _RuleLike,
            n: float,
            threshold: float,
            text: Callable[[], tuple[str, str]],
            extra: tuple[tuple[str, str], ...] = (),
            ep: _Episode | None = None,
        ) -> None: ...

    @staticmethod
    def _distinct_in(
        table: dict[Any, SlidingDistinct],
        target: object,
        item: object,
        ts: float,
        window_s: float,
        cap: int,
    ) -> int:
        """Add ``item`` to the per-target distinct set; return its count. At most
        ``_MAX_TARGETS`` targets per source: the least recently created goes first."""
        d = table.get(target)
        if d is None:
            d = _PortScans._new_distinct(table, target, window_s, cap)
        return d.add_count(item, ts)

    @staticmethod
    def _new_distinct(
        table: dict[Any, SlidingDistinct], target: object, window_s: float, cap: int
    ) -> SlidingDistinct:
        """A new distinct set for ``target`` in ``table`` (at most ``_MAX_TARGETS``: the
        least recently created goes first)."""
        if len(table) >= _MAX_TARGETS:
            del table[next(iter(table))]
        d = table[target] = SlidingDistinct(window_s, cap)
        return d

    def _conn(self, ip: str, src: _Source, ev: SecurityEvent, out: list[Detection]) -> None:
        dst = ev.destination_ip
        if dst is None:
            return
        r = self.rules
        ts = ev.ts
        if ev.transport == "icmp":
            ps = r.ping_sweep
            if not ps.enabled:
                return
            hosts = src.icmp_hosts
            if hosts is None:
                hosts = src.icmp_hosts = SlidingDistinct(ps.window_s, 2 * ps.hosts)
            n = hosts.add_count(dst, ts)
            if n >= ps.hosts or src.active:  # else nothing to fire or extend
                self._scan(ip, src, out, [(PING, n, "")] if n >= ps.hosts else [], dst, None, "")
            return
        state = ev.conn_state
        if state is None or ev.reason == BACKWARD:
            return  # unknown whether answered; a reply recorded backwards
        failed = state in UNANSWERED
        # Share of failed connections, exponentially decayed over the scan window: a
        # scanner's probes mostly fail, a busy client's connections mostly succeed.
        bal = src.conn_balance
        last_ts = src.conn_ts
        if ts > last_ts:  # _decay, inlined (once per connection)
            if bal != 0.0:
                bal *= math.exp((last_ts - ts) / r.horizontal_scan.window_s)
            src.conn_ts = ts
        bal += 1.0 if failed else -1.0
        src.conn_balance = bal
        port = ev.destination_port
        if not failed or port is None:
            return
        mostly_failed = bal > 0
        hits: list[_Hit] = []
        vs = r.vertical_scan
        if vs.enabled:
            table = src.ports_by_host
            if table is None:
                table = src.ports_by_host = {}
            d = table.get(dst)
            if d is None:
                d = self._new_distinct(table, dst, vs.window_s, 2 * vs.ports)
            n = d.add_count(port, ts)
            if n >= vs.ports and mostly_failed:
                hits.append((VERTICAL, n, dst))
        hs = r.horizontal_scan
        if hs.enabled:
            by_port = src.hosts_by_port
            if by_port is None:
                by_port = src.hosts_by_port = {}
            d = by_port.get(port)
            if d is None:
                d = self._new_distinct(by_port, port, hs.window_s, 2 * hs.hosts)
            m = d.add_count(dst, ts)
            if m >= hs.hosts and mostly_failed:
                hits.append((HORIZONTAL, m, str(port)))
        if hits or src.active:  # else nothing to fire or extend: the common case
            self._scan(ip, src, out, hits, dst, port, ev.transport or "tcp")

    def _scan_rule(self, scan: str) -> tuple[_RuleLike, float]:
        """The rule of a scan condition and its threshold."""
        r = self.rules
        if scan == VERTICAL:
            return r.vertical_scan, r.vertical_scan.ports
        if scan == HORIZONTAL:
            return r.horizontal_scan, r.horizontal_scan.hosts
        return r.ping_sweep, r.ping_sweep.hosts

    def _scan(
        self,
        ip: str,
        src: _Source,
        out: list[Detection],
        hits: list[_Hit],
        dst: str,
        port: int | None,
        proto: str,
    ) -> None:
        """One ``port_scan`` episode per source, whatever mix of ping sweep, horizontal and
        vertical scanning it is: it starts with the first condition met, holds for the
        longest window among the conditions met so far, and every unanswered probe of
        ``port``/``proto`` on ``dst`` (a ping of ``dst``: ``port`` is ``None``) extends it.
        A condition met for the first time in the episode (a new host scanned vertically,
        a new port horizontally) is reported at once; the ``scans`` evidence lists each
        kind of scan with its largest count. Most probes of a long scan report nothing."""
        act = src.active
        ts = self._ts
        ep = _ongoing(act, _PORT_SCAN, ts)
        if ep is None:
            if not hits:
                return
            if act is None:
                act = src.active = {}
            ep = act[_PORT_SCAN] = _Episode(ts, hits[0][1], ts)
            ep.hold = max(self._scan_rule(scan)[0].window_s for scan, _, _ in hits)
            ep.targets = {(scan, target): ts for scan, _, target in hits}
            for scan, n, _ in hits:
                ep.scans[scan] = n
                self._seed_scan(ep, src, scan, dst, port, proto)
            self._emit_scan(out, ip, hits[0], ep, dst, port)
            return
        if port is None:
            ep.count("hosts", dst)
        else:
            _probe_evidence(ep, dst, port, proto)
        targets = ep.targets
        if targets is None:
            targets = ep.targets = {}
        scans = ep.scans
        refresh = self.refresh_s
        news = False
        for scan, n, target in hits:
            if scan not in scans:
                ep.hold = max(ep.hold, self._scan_rule(scan)[0].window_s)
            tk = (scan, target)
            last = targets.get(tk)
            # A host or port newly over its threshold, or one not reported for refresh_s:
            # report it now (as an update of the source's one alert).
            if (last is None and len(targets) < _MAX_TARGETS) or (
                last is not None and ts - last >= refresh
            ):
                news = True
                targets[tk] = ts
            if n > scans.get(scan, 0):
                scans[scan] = n
        if hits and hits[0][1] > ep.peak:
            ep.peak, ep.peak_ts = hits[0][1], ts
        if news or ts - ep.last_emit >= refresh:
            ep.last_emit = ts
            self._emit_scan(out, ip, hits[0] if hits else None, ep, dst, port)

    @staticmethod
    def _seed_scan(
        ep: _Episode, src: _Source, scan: str, dst: str, port: int | None, proto: str
    ) -> None:
        """What led up to a scan condition: the distinct values of its window."""
        if scan == VERTICAL:
            _seed_ports(ep, src.ports_by_host, dst, proto)
        elif scan == HORIZONTAL and port is not None:
            _seed_hosts(ep, src.hosts_by_port, port, proto)
        elif scan == PING and src.icmp_hosts is not None:
            _seed_keys(ep, "hosts", src.icmp_hosts)

    def _emit_scan(
        self,
        out: list[Detection],
        ip: str,
        hit: _Hit | None,
        ep: _Episode,
        dst: str,
        port: int | None,
    ) -> None:
        """Report the episode: as ``hit`` (met by this probe of ``port`` on ``dst``), or
        without one, as the scanning still going on."""
        rule: _RuleLike
        threshold: float
        if hit is None:
            scan, n, rule, threshold = next(iter(ep.scans)), ep.peak, self.rules.vertical_scan, 0
        else:
            scan, n, _ = hit
            rule, threshold = self._scan_rule(scan)
        self._emit(
            out,
            "port_scan",
            ip,
            rule,
            n,
            threshold,
            lambda: _scan_text(ip, scan if hit else None, n, rule, threshold, dst, port, ep),
            (("source_ip", ip), ("scan", scan)),
            ep,
        )


def _scan_text(
    ip: str,
    scan: str | None,
    n: float,
    rule: _RuleLike,
    threshold: float,
    dst: str,
    port: int | None,
    ep: _Episode,
) -> tuple[str, str]:
    """(summary, description) of a port scan report: of the condition ``scan`` met with
    count ``n``, or (``None``) of the scanning still going on."""
    w = _fmt_n(rule.window_s)
    if scan == VERTICAL:
        return (
            f"Vertical port scan of {dst} from {ip}",
            f"{n} distinct ports on {dst} probed by {ip} without an answer "
            f"within {w} s (threshold {threshold})",
        )
    if scan == HORIZONTAL:
        return (
            f"Horizontal scan of port {port} from {ip}",
            f"port {port} probed on {n} distinct hosts by {ip} without an "
            f"answer within {w} s (threshold {threshold})",
        )
    if scan == PING:
        return (
            f"Ping sweep from {ip}",
            f"ICMP probes from {ip} to {n} distinct hosts within {w} s (threshold {threshold})",
        )
    scans = ", ".join(f"{k} {_fmt_n(v)}" for k, v in ep.scans.items())
    return f"Port scan from {ip}", f"{ip} still probing ({scans})"
