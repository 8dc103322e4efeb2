"""Port scans: vertical, horizontal and ping sweeps of one source as one episode.

A mixin of :class:`~vigil.flows.security.rules.SecurityRules` (connection events go here),
its own module because the scan rules share a single ``port_scan`` episode and their own
per-target tables, apart from the authentication and web rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.flows.security.config import SecurityRules as RulesConfig
from vigil.flows.security.episodes import (
    Evidence,
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


@dataclass(slots=True)
class _Hit:
    """A scan condition met by one event: which, its count, its rule and texts."""

    scan: str
    n: float
    rule: _RuleLike
    threshold: float
    text: Callable[[], tuple[str, str]]
    seed: Evidence
    target: str = ""  # the host of a vertical scan, the port of a horizontal one


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
                hit = (
                    _Hit(
                        "ping_sweep",
                        n,
                        ps,
                        ps.hosts,
                        lambda: (
                            f"Ping sweep from {ip}",
                            f"ICMP probes from {ip} to {n} distinct hosts within "
                            f"{_fmt_n(ps.window_s)} s (threshold {ps.hosts})",
                        ),
                        lambda ep: _seed_keys(ep, "hosts", hosts),
                    )
                    if n >= ps.hosts
                    else None
                )
                self._scan(ip, src, out, [hit] if hit else [], lambda ep: ep.count("hosts", dst))
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
        proto = ev.transport or "tcp"
        mostly_failed = bal > 0
        vs = r.vertical_scan
        n = 0
        v_hit = False
        if vs.enabled:
            table = src.ports_by_host
            if table is None:
                table = src.ports_by_host = {}
            d = table.get(dst)
            if d is None:
                d = self._new_distinct(table, dst, vs.window_s, 2 * vs.ports)
            n = d.add_count(port, ts)
            v_hit = n >= vs.ports and mostly_failed
        hs = r.horizontal_scan
        m = 0
        h_hit = False
        if hs.enabled:
            by_port = src.hosts_by_port
            if by_port is None:
                by_port = src.hosts_by_port = {}
            d = by_port.get(port)
            if d is None:
                d = self._new_distinct(by_port, port, hs.window_s, 2 * hs.hosts)
            m = d.add_count(dst, ts)
            h_hit = m >= hs.hosts and mostly_failed
        act = src.active
        if act is None:
            if not (v_hit or h_hit):
                return  # nothing to fire or extend: the common case
        elif self._scan_extends(act, ts, dst, port, proto, v_hit, n, h_hit, m):
            return  # an ongoing scan extended, nothing to report
        hits: list[_Hit] = []
        if v_hit:
            hits.append(
                _Hit(
                    "vertical",
                    n,
                    vs,
                    vs.ports,
                    lambda: (
                        f"Vertical port scan of {dst} from {ip}",
                        f"{n} distinct ports on {dst} probed by {ip} without an answer "
                        f"within {_fmt_n(vs.window_s)} s (threshold {vs.ports})",
                    ),
                    lambda ep: _seed_ports(ep, src.ports_by_host, dst, proto),
                    dst,
                )
            )
        if h_hit:
            hits.append(
                _Hit(
                    "horizontal",
                    m,
                    hs,
                    hs.hosts,
                    lambda: (
                        f"Horizontal scan of port {port} from {ip}",
                        f"port {port} probed on {m} distinct hosts by {ip} without an "
                        f"answer within {_fmt_n(hs.window_s)} s (threshold {hs.hosts})",
                    ),
                    lambda ep: _seed_hosts(ep, src.hosts_by_port, port, proto),
                    str(port),
                )
            )
        if hits or src.active:  # else nothing to fire or extend
            self._scan(ip, src, out, hits, lambda ep: _probe_evidence(ep, dst, port, proto))

    def _scan_extends(
        self,
        act: dict[tuple[str, str], _Episode],
        ts: float,
        dst: str,
        port: int,
        proto: str,
        v_hit: bool,
        n: int,
        h_hit: bool,
        m: int,
    ) -> bool:
        """What :meth:`_scan` does with a probe of an ongoing ``port_scan`` episode that
        reports nothing (no target newly over its threshold or due, no refresh due), done
        without building its hits; ``False`` (nothing changed) when :meth:`_scan` must run.
        Most probes of a long scan are this case."""
        ep = _ongoing(act, ("port_scan", ""), ts)
        if ep is None:
            return False
        refresh = self.refresh_s
        if ts - ep.last_emit >= refresh:
            return False
        targets = ep.targets
        if v_hit:
            last = targets.get(("vertical", dst)) if targets is not None else None
            if last is None or ts - last >= refresh:
                return False
        if h_hit:
            last = targets.get(("horizontal", str(port))) if targets is not None else None
            if last is None or ts - last >= refresh:
                return False
        _probe_evidence(ep, dst, port, proto)
        if targets is None:
            ep.targets = {}
        scans = ep.scans
        r = self.rules
        if v_hit:
            if "vertical" not in scans:
                ep.hold = max(ep.hold, r.vertical_scan.window_s)
            if n > scans.get("vertical", 0):
                scans["vertical"] = n
        if h_hit:
            if "horizontal" not in scans:
                ep.hold = max(ep.hold, r.horizontal_scan.window_s)
            if m > scans.get("horizontal", 0):
                scans["horizontal"] = m
        first = n if v_hit else m if h_hit else None
        if first is not None and first > ep.peak:
            ep.peak, ep.peak_ts = first, ts
        return True

    def _scan(
        self,
        ip: str,
        src: _Source,
        out: list[Detection],
        hits: list[_Hit],
        evidence: Evidence,
    ) -> None:
        """One ``port_scan`` episode per source, whatever mix of ping sweep, horizontal and
        vertical scanning it is: it starts with the first condition met, holds for the
        longest window among the conditions met so far, and every unanswered probe or ping
        extends it. A condition met for the first time in the episode (a new host scanned
        vertically, a new port horizontally) is reported at once; the ``scans`` evidence
        lists each kind of scan with its largest count."""
        act = src.active
        key = ("port_scan", "")
        ts = self._ts
        ep = _ongoing(act, key, ts)
        if ep is None:
            if not hits:
                return
            first = hits[0]
            if act is None:
                act = src.active = {}
            ep = act[key] = _Episode(ts, first.n, ts)
            ep.hold = max(h.rule.window_s for h in hits)
            ep.targets = {(h.scan, h.target): ts for h in hits}
            for h in hits:
                ep.scans[h.scan] = h.n
                h.seed(ep)
            self._emit_scan(out, ip, first, ep)
            return
        evidence(ep)
        news = False
        if ep.targets is None:
            ep.targets = {}
        targets = ep.targets
        for h in hits:
            if h.scan not in ep.scans:
                ep.hold = max(ep.hold, h.rule.window_s)
            tk = (h.scan, h.target)
            last = targets.get(tk)
            # A host or port newly over its threshold, or one not reported for refresh_s:
            # report it now (as an update of the source's one alert).
            if (last is None and len(targets) < _MAX_TARGETS) or (
                last is not None and ts - last >= self.refresh_s
            ):
                news = True
                targets[tk] = ts
            if h.n > ep.scans.get(h.scan, 0):
                ep.scans[h.scan] = h.n
        if hits and hits[0].n > ep.peak:
            ep.peak, ep.peak_ts = hits[0].n, ts
        if news or ts - ep.last_emit >= self.refresh_s:
            ep.last_emit = ts
            self._emit_scan(out, ip, hits[0] if hits else None, ep)

    def _emit_scan(self, out: list[Detection], ip: str, hit: _Hit | None, ep: _Episode) -> None:
        if hit is None:
            scans = ", ".join(f"{k} {_fmt_n(v)}" for k, v in ep.scans.items())
            hit = _Hit(
                next(iter(ep.scans)),
                ep.peak,
                self.rules.vertical_scan,
                0,
                lambda: (f"Port scan from {ip}", f"{ip} still probing ({scans})"),
                lambda ep: None,
            )
        self._emit(
            out,
            "port_scan",
            ip,
            hit.rule,
            hit.n,
            hit.threshold,
            hit.text,
            (("source_ip", ip), ("scan", hit.scan)),
            ep,
        )
