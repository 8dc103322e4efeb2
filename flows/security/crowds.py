"""Rules over many sources or many targets: distributed scans of a source prefix, many
sources on one port of a host, one account logging in from many sources, and connections
out of the site's protected networks (fan-out, forbidden ports).

A mixin of :class:`~vigil.flows.security.rules.SecurityRules`. The outbound rules are
per source (a protected address) like every other rule. The others gather events of many
sources under one key (a prefix, a host, a user name): :meth:`_Crowds.crowd_routes` names
the key of each role an event plays, and :meth:`_Crowds.process_crowd` applies the rules
to the events of the keys routed to it. A flow that shards sources must route each
``(role, event)`` to the shard of its key (``shard_of(key)``), so that every event of one
key meets in one place; a single :class:`SecurityRules` sees them all
(:meth:`~vigil.flows.security.rules.SecurityRules.process_all`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from vigil.flows.security.config import SecurityRules as RulesConfig
from vigil.flows.security.episodes import (
    _EVIDENCE_ITEMS,
    Evidence,
    _Crowd,
    _Episode,
    _fmt_n,
    _ongoing,
    _RuleLike,
    _Source,
)
from vigil.flows.security.parsers.zeek import BACKWARD
from vigil.flows.security.scans import UNANSWERED
from vigil.flows.security.windows import SlidingDistinct

from vigil.records import DeadLetter, Detection, SecurityEvent

_MAX_TARGETS = 256  # distinct-value sets per crowd (two per host for a prefix)
#: An episode of many sources (a day-long distributed scan, a botnet on a port) is reported
#: at most every ``refresh_s`` or this share of its window, whichever is longer: its end
#: can be that much early (under 15 minutes of a day), and its alert updates stay few.
_REFRESH_SHARE = 0.01
_CACHE = 100_000  # addresses whose prefix / protected membership is cached

#: Roles an event plays in the rules over many sources, and the prefix of their key.
PREFIX, HOST, USER = "prefix", "host", "user"
_KEY = {PREFIX: "p:", HOST: "h:", USER: "u:"}


class Memo(dict[Any, Any]):
    """A bounded cache of ``fn``: ``memo[key]`` is ``fn(key)``, computed once (then a
    dict lookup, in C). Emptied when it holds ``_CACHE`` keys, so memory stays bounded.

    >>> m = Memo(str.upper)
    >>> m["a"], m["a"], len(m)
    ('A', 'A', 1)
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, key: Any) -> Any:
        if len(self) >= _CACHE:
            self.clear()
        got = self[key] = self.fn(key)
        return got


def _distinct(
    table: dict[Any, SlidingDistinct], target: object, item: object, ts: float, w: float, cap: int
) -> int:
    """Add ``item`` to ``target``'s distinct set; return its count (at most
    ``_MAX_TARGETS`` targets: the least recently used goes first, so the port a crowd
    keeps probing outlives a vertical scan's one-off ports)."""
    d = table.pop(target, None)
    if d is None:
        if len(table) >= _MAX_TARGETS:
            del table[next(iter(table))]
        d = SlidingDistinct(w, cap)
    table[target] = d  # last: the most recently used
    return d.add_count(item, ts)


def _seed_set(ep: _Episode, name: str, d: SlidingDistinct | None) -> None:
    for v in d.exact_values() if d is not None else ():
        ep.count(name, str(v))


def _seed_hits(ep: _Episode, name: str, c: _Crowd) -> None:
    for who, n in c.hits.items():
        ep.count(name, who, n)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CrowdRouter:
    """Which rules over many sources an event counts towards, and under which key.

    The parse step of a sharded flow calls it on each event and sends ``(role, event)`` to
    the shard of each key, so that all events of one prefix, host or user meet in one
    :class:`~vigil.flows.security.rules.SecurityRules` (:meth:`_Crowds.process_crowd`).

    >>> from vigil.flows.security.config import SecurityRules as Cfg
    >>> ev = SecurityEvent(ts=0.0, dataset="zeek", action="connection", source_ip="198.51.100.7",
    ...     destination_ip="192.0.2.1", destination_port=445, transport="tcp", conn_state="S0")
    >>> CrowdRouter(Cfg()).routes(ev)
    [('prefix', 'p:198.51.100.0/24'), ('host', 'h:192.0.2.1')]
    """

    def __init__(self, rules: RulesConfig, protected_networks: Iterable[str] = ()) -> None:
        self.rules = rules
        self.nets = tuple(ipaddress.ip_network(n, strict=False) for n in protected_networks)
        self._inside: dict[str, bool] = {}
        self._prefixes: dict[str, str] = {}
        self._prefix_keys = Memo(lambda ip: _KEY[PREFIX] + self.prefix(ip))
        # What routes() gives per address (the hot path: one cached tuple per role)
        self._by_source = Memo(lambda ip: (PREFIX, self._prefix_keys[ip]))
        self._by_target = Memo(
            lambda dst: (HOST, _KEY[HOST] + dst) if not self.nets or self.protected(dst) else None
        )
        self._scan_roles = rules.distributed_scan.enabled, rules.port_fan_in.enabled
        self._logins = rules.account_many_sources.enabled

    def protected(self, ip: str) -> bool:
        """Whether ``ip`` lies in ``security.protected_networks``."""
        got = self._inside.get(ip)
        if got is None:
            if len(self._inside) >= _CACHE:
                self._inside.clear()
            try:
                a = ipaddress.ip_address(ip)
                got = any(a in n for n in self.nets)
            except ValueError:
                got = False
            self._inside[ip] = got
        return got

    def prefix(self, ip: str) -> str:
        """The source prefix of ``ip`` (``distributed_scan.prefix_v4``/``prefix_v6``)."""
        got = self._prefixes.get(ip)
        if got is None:
            if len(self._prefixes) >= _CACHE:
                self._prefixes.clear()
            ds = self.rules.distributed_scan
            parts = ip.split(".")
            if len(parts) == 4 and all(x.isdigit() and int(x) < 256 for x in parts):
                # IPv4, the common case, without ipaddress (several times faster)
                bits = ds.prefix_v4
                n = int(parts[0]) << 24 | int(parts[1]) << 16 | int(parts[2]) << 8 | int(parts[3])
                n &= (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
                got = f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/{bits}"
            else:
                bits = ds.prefix_v6 if ":" in ip else ds.prefix_v4
                try:
                    got = str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
                except ValueError:
                    got = ip  # not an address (a host name): its own prefix
            self._prefixes[ip] = got
        return got

    def prefix_key(self, ip: str) -> str:
        """The crowd key of ``ip``'s source prefix (``p:`` and :meth:`prefix`)."""
        return self._prefix_keys[ip]

    @staticmethod
    def probe(ev: SecurityEvent) -> bool:
        """An unanswered connection attempt to a port (what the scan rules count)."""
        return (
            ev.action == "connection"
            and ev.conn_state in UNANSWERED
            and ev.reason != BACKWARD
            and ev.destination_ip is not None
            and ev.destination_port is not None
            and ev.transport != "icmp"
        )

    def routes(self, ev: SecurityEvent) -> list[tuple[str, str]]:
        """``(role, key)`` for each rule over many sources that ``ev`` counts towards."""
        ip = ev.source_ip
        if ip is None:
            return []
        action = ev.action
        if action == "connection":
            # probe(ev), inlined: this runs on every connection
            dst = ev.destination_ip
            if (
                ev.conn_state in UNANSWERED
                and ev.reason != BACKWARD
                and dst is not None
                and ev.destination_port is not None
                and ev.transport != "icmp"
            ):
                by_prefix, by_host = self._scan_roles
                out = [self._by_source[ip]] if by_prefix else []
                if by_host:
                    host = self._by_target[dst]
                    if host is not None:
                        out.append(host)
                return out
        elif (
            action == "authentication" and self._logins and ev.outcome == "success" and ev.user_name
        ):
            return [(USER, _KEY[USER] + ev.user_name)]
        return []


class _Crowds:
    """The rules of :class:`~vigil.flows.security.rules.SecurityRules` over many sources."""

    if TYPE_CHECKING:
        rules: RulesConfig
        max_sources: int
        refresh_s: float
        evicted: int
        errors: list[DeadLetter]
        _ts: float
        _ds: str

        def _fire(
            self,
            src: _Source | _Crowd,
            out: list[Detection],
            *,
            kind: str,
            sub: str = "",
            hit: bool,
            entity: str,
            rule: _RuleLike,
            n: float,
            threshold: float,
            text: Callable[[], tuple[str, str]],
            extra: tuple[tuple[str, str], ...] = (),
            seed: Evidence | None = None,
            evidence: Evidence | None = None,
            is_evidence: bool = True,
            first_seen: float | None = None,
            refresh_s: float | None = None,
        ) -> None: ...

    def _init_crowds(self, protected: Iterable[str], forbidden: Iterable[int]) -> None:
        self._crowds: dict[str, _Crowd] = {}
        self._router = CrowdRouter(self.rules, protected)
        self._nets = self._router.nets
        self._forbidden = frozenset(forbidden)
        self._ignore = frozenset(self.rules.outbound_fan_out.ignore_ports)

    def _refresh(self, rule: _RuleLike) -> float:
        return max(self.refresh_s, _REFRESH_SHARE * rule.window_s)

    def crowd_routes(self, ev: SecurityEvent) -> list[tuple[str, str]]:
        """``(role, key)`` for each rule over many sources that ``ev`` counts towards
        (:meth:`CrowdRouter.routes`)."""
        return self._router.routes(ev)

    def _crowd(self, key: str, ts: float) -> _Crowd:
        crowds = self._crowds
        c = crowds.get(key)
        if c is None:
            if len(crowds) >= self.max_sources:
                del crowds[next(iter(crowds))]  # least recently seen
                self.evicted += 1
            c = crowds[key] = _Crowd(ts)
        else:
            del crowds[key]
            crowds[key] = c
            if ts > c.last:
                c.last = ts
        return c

    def process_crowd(self, items: Iterable[tuple[str, SecurityEvent]]) -> list[Detection]:
        """Apply each ``(role, event)`` routed here to its rule; return the detections.

        The probes' common case (count them, nothing to fire or extend) runs here, with
        the rules' settings bound to locals: it is most of the flow's events (connections).
        """
        out: list[Detection] = []
        rules = self.rules
        ds, fi = rules.distributed_scan, rules.port_fan_in
        ds_w, ds_addresses, ds_ports = ds.window_s, ds.addresses, ds.ports
        ds_addr_cap, ds_port_cap = 2 * ds.addresses, 2 * ds.ports
        fi_w, fi_sources, fi_cap = fi.window_s, fi.sources, 2 * fi.sources
        prefix_keys = self._router._prefix_keys
        crowd, account = self._crowd, self._account
        host_key = _KEY[HOST]
        for role, ev in items:
            ts = self._ts = ev.ts
            self._ds = ev.dataset
            try:
                if role == PREFIX:
                    ip, dst = str(ev.source_ip), str(ev.destination_ip)
                    pp = f"{int(ev.destination_port or 0)}/{ev.transport or 'tcp'}"
                    c = crowd(prefix_keys[ip], ts)  # prefix_key(ip), inlined
                    h = c.hits  # c.hit(ip), inlined
                    if ip in h:
                        h[ip] += 1
                    elif len(h) < _EVIDENCE_ITEMS:
                        h[ip] = 1
                    sets = c.sets
                    n_addr = _distinct(sets, ("addresses", dst), ip, ts, ds_w, ds_addr_cap)
                    n_ports = _distinct(sets, ("ports", dst), pp, ts, ds_w, ds_port_cap)
                    if c.active or (n_addr >= ds_addresses and n_ports >= ds_ports):
                        self._distributed(c, ip, dst, pp, n_addr, n_ports, out)
                elif role == HOST:
                    ip, dst = str(ev.source_ip), str(ev.destination_ip)
                    port = int(ev.destination_port or 0)
                    pp = f"{port}/{ev.transport or 'tcp'}"
                    c = crowd(host_key + dst, ts)
                    n = _distinct(c.sets, ("sources", pp), ip, ts, fi_w, fi_cap)
                    act = c.active
                    if n >= fi_sources or (act and ("port_fan_in", pp) in act):
                        self._fan_in(c, ip, dst, port, ev.transport or "tcp", pp, n, out)
                elif role == USER:
                    account(ev, out)
            except Exception as ex:  # a rule bug must not stop the flow: dead-letter it
                self.errors.append(
                    DeadLetter("rules", type(ex).__name__, repr(ev)[:512], ev.dataset, "")
                )
        return out

    def expire_crowds(self, now_ts: float, horizon_s: float) -> int:
        old = [k for k, c in self._crowds.items() if c.last < now_ts - horizon_s]
        for k in old:
            del self._crowds[k]
        return len(old)

    # ------------------------------------------------------------ rules over many sources
    def _distributed(
        self,
        c: _Crowd,
        ip: str,
        dst: str,
        pp: str,
        n_addr: int,
        n_ports: int,
        out: list[Detection],
    ) -> None:
        """A prefix's probe that hits or meets an episode (its counts taken already)."""
        ds = self.rules.distributed_scan
        ts = self._ts
        act = c.active
        hit = n_addr >= ds.addresses and n_ports >= ds.ports
        ep = _ongoing(act, ("distributed_scan", ""), ts)
        refresh = self._refresh(ds)
        if ep is not None and ts - ep.last_emit < refresh:  # the common case, inlined
            ep.count("addresses", ip)
            ep.count("ports", pp)
            ep.count("hosts", dst)
            if n_ports > ep.peak:
                ep.peak, ep.peak_ts = n_ports, ts
            return
        pfx = self._router.prefix(ip)

        def seed(ep: _Episode) -> None:
            _seed_hits(ep, "addresses", c)
            _seed_set(ep, "ports", c.sets.get(("ports", dst)))
            ep.count("hosts", dst, n_ports)

        def evidence(ep: _Episode) -> None:
            ep.count("addresses", ip)
            ep.count("ports", pp)
            ep.count("hosts", dst)

        self._fire(
            c,
            out,
            kind="distributed_scan",
            refresh_s=refresh,
            hit=hit,
            entity=pfx,
            rule=ds,
            n=n_ports,
            threshold=ds.ports,
            seed=seed,
            evidence=evidence,
            extra=(("source_prefix", pfx),),
            text=lambda: (
                f"Distributed port scan of {dst} from {pfx}",
                f"{n_ports} distinct ports on {dst} probed without an answer by {n_addr} "
                f"addresses of {pfx} within {_fmt_n(ds.window_s)} s (thresholds "
                f"{ds.ports} ports, {ds.addresses} addresses)",
            ),
        )

    def _fan_in(
        self,
        c: _Crowd,
        ip: str,
        dst: str,
        port: int,
        proto: str,
        pp: str,
        n: int,
        out: list[Detection],
    ) -> None:
        """A host's probe that hits or meets an episode (its count taken already)."""
        fi = self.rules.port_fan_in
        ts = self._ts
        act = c.active
        ep = _ongoing(act, ("port_fan_in", pp), ts)
        refresh = self._refresh(fi)
        if ep is not None and ts - ep.last_emit < refresh:  # the common case, inlined
            ep.count("sources", ip)
            if n > ep.peak:
                ep.peak, ep.peak_ts = n, ts
            return
        entity = _host_port(dst, port)
        self._fire(
            c,
            out,
            kind="port_fan_in",
            refresh_s=refresh,
            sub=pp,
            hit=n >= fi.sources,
            entity=entity,
            rule=fi,
            n=n,
            threshold=fi.sources,
            seed=lambda ep: _seed_set(ep, "sources", c.sets.get(("sources", pp))),
            evidence=lambda ep: ep.count("sources", ip),
            extra=(("destination_ip", dst), ("destination_port", str(port)), ("transport", proto)),
            text=lambda: (
                f"Many sources on port {pp} of {dst}",
                f"{n} distinct sources probed port {pp} of {dst} without an answer within "
                f"{_fmt_n(fi.window_s)} s (threshold {fi.sources})",
            ),
        )

    def _account(self, ev: SecurityEvent, out: list[Detection]) -> None:
        am = self.rules.account_many_sources
        ip, user = str(ev.source_ip), str(ev.user_name)
        ts = ev.ts
        c = self._crowd(_KEY[USER] + user, ts)
        c.hit(ip)
        n = _distinct(c.sets, ("sources", ""), ip, ts, am.window_s, max(64, 2 * am.sources))
        if n < am.sources and not c.active:
            return
        host = ev.host_name
        # A login from an address the episode has not named yet is reported at once.
        ep = _ongoing(c.active, ("account_many_sources", ""), ts)
        new = ep is not None and ip not in ep.evidence.get("sources", {})

        def seed(ep: _Episode) -> None:
            _seed_hits(ep, "sources", c)
            if host is not None:
                ep.count("hosts", host)

        def evidence(ep: _Episode) -> None:
            ep.count("sources", ip)
            if host is not None:
                ep.count("hosts", host)

        self._fire(
            c,
            out,
            kind="account_many_sources",
            refresh_s=0.0 if new else self.refresh_s,
            hit=n >= am.sources,
            entity=user,
            rule=am,
            n=n,
            threshold=am.sources,
            seed=seed,
            evidence=evidence,
            # The entity is a user name: kept out of metric labels (sinks/prometheus.py).
            extra=(("entity_is", "user_name"),),
            text=lambda: (
                f"Account {user} logged in from {n} sources",
                f"successful logins as {user} from {n} distinct addresses within "
                f"{_fmt_n(am.window_s)} s (threshold {am.sources})",
            ),
        )

    # ------------------------------------------------------------ outbound (per source)
    def _outbound(self, ip: str, src: _Source, ev: SecurityEvent, out: list[Detection]) -> None:
        """A connection from a protected address to an outside one (any state: blocked
        and unanswered attempts count as much as answered ones)."""
        dst = ev.destination_ip
        port = ev.destination_port
        if dst is None or port is None or ev.reason == BACKWARD or ev.transport == "icmp":
            return
        if not self._router.protected(ip) or self._router.protected(dst):
            return
        proto = ev.transport or "tcp"
        pp = f"{port}/{proto}"
        ts = ev.ts
        r = self.rules
        fp = r.forbidden_port
        if fp.enabled and port in self._forbidden:

            def dest(ep: _Episode) -> None:
                ep.count("ports", pp)
                ep.count("hosts", dst)

            self._fire(
                src,
                out,
                kind="forbidden_port",
                hit=True,
                entity=ip,
                rule=fp,
                n=1,
                threshold=1,
                evidence=dest,
                seed=dest,
                extra=(("source_ip", ip),),
                text=lambda: (
                    f"Forbidden port {pp} from {ip}",
                    f"{ip} connected to {dst} on port {pp}, listed in security.forbidden_ports",
                ),
            )
        fo = r.outbound_fan_out
        if not fo.enabled or port in self._ignore:
            return
        if src.out_hosts_by_port is None:
            src.out_hosts_by_port = {}
        if src.out_ports_by_host is None:
            src.out_ports_by_host = {}
        nh = _distinct(src.out_hosts_by_port, port, dst, ts, fo.window_s, 2 * fo.hosts)
        np_ = _distinct(src.out_ports_by_host, dst, port, ts, fo.window_s, 2 * fo.ports)
        by_hosts = nh >= fo.hosts
        hit = by_hosts or np_ >= fo.ports
        if not hit and not (src.active and ("outbound_fan_out", "") in src.active):
            return
        hosts_of = src.out_hosts_by_port.get(port)
        ports_of = src.out_ports_by_host.get(dst)

        def seed(ep: _Episode) -> None:
            if by_hosts:
                _seed_set(ep, "hosts", hosts_of)
                ep.count("ports", pp, nh)
            else:
                for v in ports_of.exact_values() if ports_of is not None else ():
                    ep.count("ports", f"{v}/{proto}")
                ep.count("hosts", dst, np_)

        def evidence(ep: _Episode) -> None:
            ep.count("hosts", dst)
            ep.count("ports", pp)

        self._fire(
            src,
            out,
            kind="outbound_fan_out",
            hit=hit,
            entity=ip,
            rule=fo,
            n=nh if by_hosts else np_,
            threshold=fo.hosts if by_hosts else fo.ports,
            seed=seed,
            evidence=evidence,
            extra=(("source_ip", ip), ("fan_out", "hosts" if by_hosts else "ports")),
            text=lambda: (
                (
                    f"Outbound fan-out from {ip} to {nh} hosts on {pp}"
                    if by_hosts
                    else f"Outbound fan-out from {ip} to {np_} ports of {dst}"
                ),
                (
                    f"protected address {ip} connected to {nh} distinct outside hosts on "
                    f"port {pp} within {_fmt_n(fo.window_s)} s (threshold {fo.hosts})"
                    if by_hosts
                    else f"protected address {ip} connected to {np_} distinct ports of "
                    f"{dst} within {_fmt_n(fo.window_s)} s (threshold {fo.ports})"
                ),
            ),
        )
