"""The network-security dataflow: logs in, detections and metrics out.

::

    raw lines --parse--> SecurityEvent --key by shard of source.ip--> rules (per source)
        |                                                               |
        +--> dead letters, tallies (lines, events, volume buckets)      +--> detections
                                   |
                                   +--> volume (one global key): EWMA baseline per series

Per-source state lives in :class:`SecurityRules`, a plain Python object (no bytewax), so it
can be tested, benchmarked and reused on its own. The flow keys events by a *shard* of the
source address rather than by the address itself: bytewax keeps one logic object per key,
and a million scanning addresses must not become a million objects and snapshots. Each
shard holds its sources in a dict with least-recently-seen eviction (``max_sources``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from vigil.detectors.base import Detector, Explanation
from vigil.flows.config.base import input_step_ids, shard_of
from vigil.flows.config.detectors import make_detector
from vigil.flows.feed import FeedIO
from vigil.flows.guard import guard_batch, guard_logic
from vigil.flows.inputs import make_sources
from vigil.flows.security.config import SecurityConfig
from vigil.flows.security.config import SecurityRules as RulesConfig
from vigil.flows.security.parsers import LineParser
from vigil.flows.security.windows import SlidingCount, SlidingDistinct

from vigil.records import (
    DeadLetter,
    Detection,
    RawLine,
    SecurityEvent,
    SeriesPoint,
    Tally,
    Watermark,
)

FEED = "security"

# Connection states that count as a failed probe, as in Zeek's own scan detection: no answer
# (S0), rejected (REJ), or aborted before any answer (RSTOS0, RSTRH, SH), plus a firewall's
# "blocked" and a flow that never got past "new". A connection that was answered (SF, S1,
# RSTO after a handshake, OTH midstream traffic ...) never counts towards a scan: ordinary
# clients produce plenty of those.
UNANSWERED = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "blocked", "new"})
_MAX_TARGETS = 256  # per source: hosts tracked for vertical scans, ports for horizontal
_FAIL_CAP = 4096
_MAX_EMPTY_WINDOWS = 10_000


class _RuleLike(Protocol):
    @property
    def severity(self) -> str: ...
    @property
    def window_s(self) -> float: ...


def _decay(value: float, last_ts: float, ts: float, tau: float) -> float:
    if ts <= last_ts or value == 0.0:
        return value
    return value * math.exp((last_ts - ts) / tau)


def _fmt_n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def _auth_evidence(ep: _Episode, ev: SecurityEvent) -> None:
    if ev.user_name is not None:
        ep.count("users", ev.user_name)
    if ev.host_name is not None:
        ep.count("hosts", ev.host_name)


def _seed_auth(ep: _Episode, src: _Source, ev: SecurityEvent, n: float) -> None:
    """What led up to a brute force: the user names tried in the window (counted once
    each, or the failures under this event's name when no names were kept)."""
    if src.users is not None and len(src.users):
        _seed_keys(ep, "users", src.users)
        if ev.host_name is not None:
            ep.count("hosts", ev.host_name, int(n))
    else:
        for _ in range(int(n)):
            _auth_evidence(ep, ev)


def _seed_keys(ep: _Episode, name: str, d: SlidingDistinct) -> None:
    for k in d.exact_values():
        ep.count(name, str(k))


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


def _seed_web(ep: _Episode, src: _Source, ev: SecurityEvent, n404: int) -> None:
    """A web scan's start: the distinct paths of the window, its 404s, this client's agent."""
    if src.paths is not None:
        for path in src.paths.exact_values():
            ep.count("paths", str(path))
    if n404:
        ep.count("status", "404", n404)
    if ev.http_status is not None and ev.http_status != 404:
        ep.count("status", str(ev.http_status))
    if ev.user_agent is not None:
        ep.count("user_agents", ev.user_agent)


def _web_evidence(ep: _Episode, ev: SecurityEvent) -> None:
    if ev.url_path is not None:
        ep.count("paths", ev.url_path)
    if ev.http_status is not None:
        ep.count("status", str(ev.http_status))
    if ev.user_agent is not None:
        ep.count("user_agents", ev.user_agent)


class _Source:
    """What the rules remember about one source address. Sub-structures are created lazily."""

    __slots__ = (
        "active",
        "conn_balance",
        "conn_ts",
        "fails",
        "hosts_by_port",
        "icmp_hosts",
        "last",
        "not_found",
        "paths",
        "pending_pids",
        "ports_by_host",
        "users",
    )

    def __init__(self, ts: float) -> None:
        self.last = ts
        self.conn_balance = 0.0  # decayed (failed - answered) connection count
        self.conn_ts = ts
        self.fails: SlidingCount | None = None
        self.users: SlidingDistinct | None = None
        self.pending_pids: dict[int, int] | None = None
        self.ports_by_host: dict[str, SlidingDistinct] | None = None
        self.hosts_by_port: dict[int, SlidingDistinct] | None = None
        self.icmp_hosts: SlidingDistinct | None = None
        self.not_found: SlidingCount | None = None
        self.paths: SlidingDistinct | None = None
        # (kind, sub-entity) -> the episode in progress (see _Episode).
        self.active: dict[tuple[str, str], _Episode] | None = None

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        for s, v in zip(self.__slots__, st, strict=True):
            setattr(self, s, v)


_EVIDENCE_ITEMS = 64  # distinct items counted per evidence list; the rest count as "other"
_EVIDENCE_TOP = 10  # items an alert shows per list


class _Episode:
    """One attack episode of one source: from the moment a rule's condition was first met
    while evidence keeps coming within the rule's window (its *hold*).

    ``last_emit`` is the event time of the last detection emitted for it: alerting ends
    the episode ``hold`` after that, so the rules end it there too (an episode's evidence is
    reported at most every ``refresh_s``; its end can be that much early, never late).
    """

    __slots__ = (
        "evidence",
        "first_seen",
        "hold",
        "last_emit",
        "peak",
        "peak_ts",
        "scans",
        "start",
        "start_value",
        "targets",
    )

    def __init__(self, ts: float, value: float, first_seen: float, hold: float = 0.0) -> None:
        self.hold = hold
        self.scans: dict[str, float] = {}  # port scans: condition -> largest count
        # port scans: (condition, host or port) met -> when it was last reported
        self.targets: dict[tuple[str, str], float] | None = None
        self.start = ts
        self.start_value = value
        self.peak = value
        self.peak_ts = ts
        self.last_emit = ts
        self.first_seen = first_seen
        self.evidence: dict[str, dict[str, int]] = {}

    def count(self, name: str, item: str, n: int = 1) -> None:
        c = self.evidence.get(name)
        if c is None:
            c = self.evidence[name] = {}
        if item in c or len(c) < _EVIDENCE_ITEMS:
            c[item] = c.get(item, 0) + n
        else:
            c["other"] = c.get("other", 0) + n

    def top(self) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
        out = tuple(
            (name, tuple(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:_EVIDENCE_TOP]))
            for name, c in self.evidence.items()
        )
        if self.scans:
            out += (("scans", tuple((k, int(v)) for k, v in self.scans.items())),)
        return out

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        for s, v in zip(self.__slots__, st, strict=True):
            setattr(self, s, v)


Evidence = Callable[[_Episode], None]


def _ongoing(
    act: dict[tuple[str, str], _Episode] | None, key: tuple[str, str], ts: float
) -> _Episode | None:
    """The episode of ``key`` still holding at ``ts``; one whose hold ran out is dropped."""
    ep = act.get(key) if act is not None else None
    if ep is not None and act is not None and ts > ep.last_emit + ep.hold:
        del act[key]
        return None
    return ep


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


@dataclass(frozen=True, slots=True)
class RulesSnapshot:
    """Everything the rules learned: picklable, restored into a fresh :class:`SecurityRules`."""

    sources: tuple[tuple[str, _Source], ...]
    watermark: float


class SecurityRules:
    """Per-source detection rules over event-time sliding windows.

    Parameters
    ----------
    rules
        The rule settings (thresholds, windows, severities).
    max_sources
        Sources tracked at once; the least recently seen is evicted beyond this.
    refresh_s
        While a condition holds, its detection is repeated at most this often (event time).

    Examples
    --------
    >>> from vigil.flows.security.config import SecurityRules as Cfg
    >>> rules = SecurityRules(Cfg())
    >>> ev = [SecurityEvent(ts=float(t), dataset="ssh", action="authentication",
    ...       outcome="failure", reason="password", source_ip="203.0.113.9", user_name="root")
    ...       for t in range(5)]
    >>> [d.kind for d in rules.process(ev)]
    ['ssh_brute_force']
    """

    def __init__(
        self, rules: RulesConfig, *, max_sources: int = 200_000, refresh_s: float = 60.0
    ) -> None:
        self.rules = rules
        self.refresh_s = refresh_s
        self._ts = 0.0
        self._ds = ""
        self.max_sources = max_sources
        self._sources: dict[str, _Source] = {}
        self._max_ts = -math.inf
        self.evicted = 0
        self.errors: list[DeadLetter] = []  # events a rule failed on; drained by the caller

    # ------------------------------------------------------------ state
    def snapshot(self) -> RulesSnapshot:
        return RulesSnapshot(tuple(self._sources.items()), self._max_ts)

    def restore(self, snap: RulesSnapshot) -> None:
        self._sources = dict(snap.sources)
        self._max_ts = snap.watermark

    def __len__(self) -> int:
        return len(self._sources)

    def expire(self, now_ts: float) -> int:
        """Drop sources idle for longer than the longest rule window. Returns how many."""
        horizon = now_ts - self._longest_window()
        old = [k for k, s in self._sources.items() if s.last < horizon]
        for k in old:
            del self._sources[k]
        return len(old)

    def _longest_window(self) -> float:
        r = self.rules
        return max(
            r.brute_force.window_s,
            r.user_enumeration.window_s,
            r.compromise.window_s,
            r.vertical_scan.window_s,
            r.horizontal_scan.window_s,
            r.ping_sweep.window_s,
            r.web_scan.window_s,
        )

    # ------------------------------------------------------------ processing
    def process(self, events: Iterable[SecurityEvent]) -> list[Detection]:
        """Apply every event in order; return the detections they trigger."""
        out: list[Detection] = []
        sources = self._sources
        max_ts = self._max_ts
        for ev in events:
            ip = ev.source_ip
            if ip is None:
                continue
            ts = self._ts = ev.ts
            self._ds = ev.dataset
            if ts > max_ts:
                max_ts = ts
            src = sources.get(ip)
            if src is None:
                if len(sources) >= self.max_sources:
                    del sources[next(iter(sources))]  # least recently seen
                    self.evicted += 1
                src = sources[ip] = _Source(ts)
            else:
                # Re-insert so dict order is least-recently-seen first.
                del sources[ip]
                sources[ip] = src
                if ts > src.last:
                    src.last = ts
            action = ev.action
            try:
                if action == "authentication":
                    self._auth(ip, src, ev, out)
                elif action == "connection":
                    self._conn(ip, src, ev, out)
                elif action == "http_request":
                    self._http(ip, src, ev, out)
            except Exception as ex:  # a rule bug must not stop the flow: dead-letter the event
                self.errors.append(
                    DeadLetter("rules", type(ex).__name__, repr(ev)[:512], ev.dataset, "")
                )
        self._max_ts = max_ts
        return out

    def _fire(
        self,
        src: _Source,
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
    ) -> None:
        """Episodes: emit when the condition is first met (``seed`` fills the evidence of
        what led up to it); while the episode lasts, every event that ``is_evidence`` (and
        ``evidence`` counts) extends it, reported at most every ``refresh_s`` of event time.
        The episode ends ``window_s`` after its last report; only then can the condition
        start a new one. ``text`` gives (summary, description) and runs only when a
        detection is emitted, so a start states the value at the start."""
        act = src.active
        key = (kind, sub)
        ts = self._ts
        ep = _ongoing(act, key, ts)
        if ep is None:
            if not hit:
                return
            if act is None:
                act = src.active = {}
            ep = act[key] = _Episode(
                ts, n, ts if first_seen is None else min(first_seen, ts), rule.window_s
            )
            if seed is not None:
                seed(ep)
            self._emit(out, kind, entity, rule, n, threshold, text, extra, ep)
            return
        if not is_evidence:
            return
        if evidence is not None:
            evidence(ep)
        if n > ep.peak:
            ep.peak, ep.peak_ts = n, ts
        if ts - ep.last_emit >= self.refresh_s:
            ep.last_emit = ts
            self._emit(out, kind, entity, rule, n, threshold, text, extra, ep)

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
    ) -> None:
        summary, description = text()
        ds = self._ds
        out.append(
            Detection(
                kind=kind,
                entity=entity,
                severity=rule.severity,
                ts=self._ts,
                observed=n,
                threshold=threshold,
                window_s=rule.window_s,
                summary=summary,
                description=description,
                extra=extra,
                start=ep.start if ep is not None else None,
                hold_s=ep.hold if ep is not None and ep.hold else rule.window_s,
                start_value=ep.start_value if ep is not None else None,
                peak=ep.peak if ep is not None else None,
                peak_ts=ep.peak_ts if ep is not None else None,
                first_seen=ep.first_seen if ep is not None else None,
                evidence=ep.top() if ep is not None else (),
                clock=f"{FEED}/{ds}" if ds else "",
                log_source=ds,
            )
        )

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
            if len(table) >= _MAX_TARGETS:
                del table[next(iter(table))]
            d = table[target] = SlidingDistinct(window_s, cap)
        d.add(item, ts)
        return d.count(ts)

    def _auth(self, ip: str, src: _Source, ev: SecurityEvent, out: list[Detection]) -> None:
        r = self.rules
        ts = ev.ts
        if ev.outcome == "failure":
            reason = ev.reason
            pid = ev.process_pid
            if reason in ("invalid_user", "pam") and pid is not None:
                # sshd often logs one attempt twice: "Invalid user X" or a pam_unix line,
                # then "Failed password ..." on the same connection (pid). Count the first
                # and let it absorb the second; old sshd(pam_unix) logs only the pam line.
                pending = src.pending_pids
                if pending is None:
                    pending = src.pending_pids = {}
                pending[pid] = pending.get(pid, 0) + 1
                if len(pending) > 64:
                    del pending[next(iter(pending))]
            elif pid is not None and src.pending_pids and pid in src.pending_pids:
                left = src.pending_pids[pid] - 1
                if left:
                    src.pending_pids[pid] = left
                else:
                    del src.pending_pids[pid]
                self._users(ip, src, ev, out)
                return
            fails = src.fails
            if fails is None:
                fails = src.fails = SlidingCount(
                    max(r.brute_force.window_s, r.compromise.window_s), _FAIL_CAP
                )
            fails.add(ts)
            bf = r.brute_force
            if bf.enabled:
                n = self._count_within(fails, ts, bf.window_s)
                if n >= bf.failures or src.active:  # else nothing to fire or clear
                    self._fire(
                        src,
                        out,
                        kind="ssh_brute_force",
                        hit=n >= bf.failures,
                        entity=ip,
                        rule=bf,
                        n=n,
                        threshold=bf.failures,
                        seed=lambda ep: _seed_auth(ep, src, ev, n),
                        evidence=lambda ep: _auth_evidence(ep, ev),
                        first_seen=ts - bf.window_s if n > 1 else ts,
                        text=lambda: (
                            f"SSH brute force from {ip}",
                            f"{n} authentication failures from {ip} within "
                            f"{_fmt_n(bf.window_s)} s (threshold {bf.failures})",
                        ),
                    )
            self._users(ip, src, ev, out)
        elif ev.outcome == "success" and r.compromise.enabled and src.fails is not None:
            cr = r.compromise
            n = self._count_within(src.fails, ts, cr.window_s)
            user = f" as {ev.user_name}" if ev.user_name else ""
            if n >= cr.failures:  # every such login matters: no repeat limit
                ep = _Episode(ts, n, ts)
                _auth_evidence(ep, ev)
                self._emit(
                    out,
                    "ssh_success_after_failures",
                    ip,
                    cr,
                    n,
                    cr.failures,
                    lambda: (
                        f"Possible compromise: login from {ip} after {n} failures",
                        f"successful login{user} from {ip} after {n} authentication failures "
                        f"within {_fmt_n(cr.window_s)} s (threshold {cr.failures})",
                    ),
                    ep=ep,
                )

    @staticmethod
    def _count_within(c: SlidingCount, now: float, window_s: float) -> int:
        if window_s >= c.window_s:
            return c.count(now)
        return c.count_since(now - window_s)

    def _users(self, ip: str, src: _Source, ev: SecurityEvent, out: list[Detection]) -> None:
        ue = self.rules.user_enumeration
        if not ue.enabled or ev.user_name is None:
            return
        users = src.users
        if users is None:
            users = src.users = SlidingDistinct(ue.window_s, max(64, 2 * ue.distinct_users))
        ts = ev.ts
        users.add(ev.user_name, ts)
        n = users.count(ts)
        if n >= ue.distinct_users or src.active:  # else nothing to fire or clear
            self._fire(
                src,
                out,
                kind="ssh_user_enumeration",
                hit=n >= ue.distinct_users,
                entity=ip,
                rule=ue,
                n=n,
                threshold=ue.distinct_users,
                seed=lambda ep: _seed_keys(ep, "users", users),
                evidence=lambda ep: ep.count("users", str(ev.user_name)),
                text=lambda: (
                    f"User enumeration from {ip}",
                    f"{n} distinct user names tried from {ip} within {_fmt_n(ue.window_s)} s "
                    f"(threshold {ue.distinct_users})",
                ),
            )

    def _conn(self, ip: str, src: _Source, ev: SecurityEvent, out: list[Detection]) -> None:
        dst = ev.destination_ip
        if dst is None:
            return
        r = self.rules
        ts = ev.ts
        state = ev.conn_state
        failed = state is None or state in UNANSWERED
        if ev.transport == "icmp":
            ps = r.ping_sweep
            if not ps.enabled:
                return
            hosts = src.icmp_hosts
            if hosts is None:
                hosts = src.icmp_hosts = SlidingDistinct(ps.window_s, 2 * ps.hosts)
            hosts.add(dst, ts)
            n = hosts.count(ts)
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
        # Share of failed connections, exponentially decayed over the scan window: a
        # scanner's probes mostly fail, a busy client's connections mostly succeed.
        src.conn_balance = _decay(src.conn_balance, src.conn_ts, ts, r.horizontal_scan.window_s)
        src.conn_ts = max(ts, src.conn_ts)
        src.conn_balance += 1.0 if failed else -1.0
        port = ev.destination_port
        if not failed or port is None:
            return
        proto = ev.transport or "tcp"
        mostly_failed = src.conn_balance > 0
        hits: list[_Hit] = []
        vs = r.vertical_scan
        if vs.enabled:
            if src.ports_by_host is None:
                src.ports_by_host = {}
            n = self._distinct_in(src.ports_by_host, dst, port, ts, vs.window_s, 2 * vs.ports)
            if n >= vs.ports and mostly_failed:
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
        hs = r.horizontal_scan
        if hs.enabled:
            if src.hosts_by_port is None:
                src.hosts_by_port = {}
            m = self._distinct_in(src.hosts_by_port, port, dst, ts, hs.window_s, 2 * hs.hosts)
            if m >= hs.hosts and mostly_failed:
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

    def _http(self, ip: str, src: _Source, ev: SecurityEvent, out: list[Detection]) -> None:
        ws = self.rules.web_scan
        if not ws.enabled:
            return
        ts = ev.ts
        status = ev.http_status or 0
        if ev.url_path is not None:
            paths = src.paths
            if paths is None:
                paths = src.paths = SlidingDistinct(ws.window_s, 2 * ws.distinct_paths)
            paths.add(ev.url_path, ts)
            n_paths = paths.count(ts)
        else:
            n_paths = 0
        n404 = 0
        if status == 404:
            nf = src.not_found
            if nf is None:
                nf = src.not_found = SlidingCount(ws.window_s, 2 * ws.not_found)
            nf.add(ts)
            n404 = nf.count(ts)
        elif src.not_found is not None:
            n404 = src.not_found.count(ts)
        hit = n404 >= ws.not_found or n_paths >= ws.distinct_paths
        by_404 = n404 >= ws.not_found
        if hit or src.active:  # else nothing to fire or clear
            self._fire(
                src,
                out,
                kind="web_scan",
                hit=hit,
                entity=ip,
                rule=ws,
                n=n404 if by_404 else n_paths,
                threshold=ws.not_found if by_404 else ws.distinct_paths,
                seed=lambda ep: _seed_web(ep, src, ev, n404),
                evidence=lambda ep: _web_evidence(ep, ev),
                is_evidence=status >= 400 or hit,
                text=lambda: (
                    f"Web scanning from {ip}",
                    f"{n404} HTTP 404 responses and {n_paths} distinct paths for {ip} within "
                    f"{_fmt_n(ws.window_s)} s (thresholds {ws.not_found} 404s, "
                    f"{ws.distinct_paths} paths)",
                ),
            )


# ====================================================================== volume baseline
#: A volume episode holds this many windows after its last anomalous one: one normal
#: window inside a surge does not end it (which would page twice for one surge).
_VOLUME_HOLD_WINDOWS = 3
_TOP_SOURCES = 50  # contributors kept per open window


@dataclass(frozen=True, slots=True)
class VolumeSnapshot:
    open_buckets: tuple[tuple[float, tuple[tuple[str, int], ...]], ...]
    next_bucket: float | None
    detectors: tuple[tuple[str, Any], ...]  # (series, detector snapshot)
    #: (series, start, value at start, peak, peak time, last anomalous window end)
    active: tuple[tuple[str, float, float, float, float, float], ...]
    dataset: str = ""
    tops: tuple[tuple[float, tuple[tuple[str, int], ...]], ...] = ()


class VolumeBaseline:
    """Overall event rates per tumbling window against an EWMA z-score baseline per series.

    Tallies from any number of workers are summed per window; a window is closed once the
    newest window seen is ``allowed_lateness_s`` past its end. Windows with no events count
    as zero, so a feed that drops is noticed too. An anomaly is an episode: it starts at
    the first anomalous window, holds ``_VOLUME_HOLD_WINDOWS`` windows past the last one,
    and names the window's top contributing sources. Series that measure the same thing in
    a log source (every Zeek event is a connection) raise one alert, naming both.
    """

    def __init__(
        self,
        cfg: SecurityConfig,
        *,
        detector_factory: Callable[[], Detector[Any]] | None = None,
    ) -> None:
        vr = cfg.rules.volume
        self.rule = vr
        self.tumbling_s = cfg.tumbling_s
        self.lateness = cfg.allowed_lateness_s
        self.hold_s = _VOLUME_HOLD_WINDOWS * cfg.tumbling_s
        d = vr.detector
        self._factory = detector_factory or (lambda: make_detector(d))
        self._open: dict[float, dict[str, int]] = {}
        self._tops: dict[float, dict[str, int]] = {}
        self._next: float | None = None  # start of the first window not yet closed
        self._dets: dict[str, Detector[Any]] = {}
        self._episodes: dict[str, list[float]] = {}  # series -> start, v0, peak, peak_ts, last
        self.dataset = ""  # series are named "<dataset>.<series>"

    def snapshot(self) -> VolumeSnapshot:
        return VolumeSnapshot(
            tuple((b, tuple(c.items())) for b, c in self._open.items()),
            self._next,
            tuple((k, d.snapshot()) for k, d in self._dets.items()),
            tuple((k, *v) for k, v in sorted(self._episodes.items())),  # type: ignore[misc]
            self.dataset,
            tuple((b, tuple(c.items())) for b, c in self._tops.items()),
        )

    def restore(self, s: VolumeSnapshot) -> None:
        self._open = {b: dict(c) for b, c in s.open_buckets}
        self._next = s.next_bucket
        for k, st in s.detectors:
            det = self._factory()
            det.restore(st)
            self._dets[k] = det
        self._episodes = {a[0]: list(a[1:]) for a in s.active}
        self.dataset = s.dataset
        self._tops = {b: dict(c) for b, c in s.tops}

    def promise(self) -> float | None:
        """No detection from now on ends before this (the end of the first open window)."""
        return None if self._next is None else self._next + self.tumbling_s

    def add_sources(self, tops: dict[float, dict[str, int]]) -> None:
        """Count events per source address per window (for an anomaly's contributors)."""
        for b, c in tops.items():
            if self._next is not None and b < self._next:
                continue
            tgt = self._tops.setdefault(b, {})
            for k, v in c.items():
                tgt[k] = tgt.get(k, 0) + v
            if len(tgt) > 4 * _TOP_SOURCES:
                keep = sorted(tgt.items(), key=lambda kv: -kv[1])[:_TOP_SOURCES]
                self._tops[b] = dict(keep)

    def add(
        self, buckets: dict[float, dict[str, int]], dataset: str = ""
    ) -> list[SeriesPoint | Detection]:
        if dataset:
            self.dataset = dataset
        for b, counts in buckets.items():
            if self._next is not None and b < self._next:
                continue  # too late for its window: already closed (counted as late upstream)
            tgt = self._open.setdefault(b, {})
            for k, v in counts.items():
                tgt[k] = tgt.get(k, 0) + v
        if not self._open:
            return []
        newest = max(self._open)
        return self._close_until(newest - self.lateness)

    def flush(self) -> list[SeriesPoint | Detection]:
        if not self._open:
            return []
        return self._close_until(max(self._open) + self.tumbling_s)

    def _close_until(self, limit: float) -> list[SeriesPoint | Detection]:
        """Close, in order, every window that ends at or before ``limit``, empty ones too.

        Every window is scored and learned; only the newest point of each series is
        returned (gauges show the latest value), plus any detections.
        """
        out: list[SeriesPoint | Detection] = []
        latest: dict[str, tuple[float, float, Explanation]] = {}
        step = self.tumbling_s
        if self._next is None:
            self._next = min(self._open)
        upcoming = min(self._open) if self._open else math.inf
        while self._next + step <= limit:
            b = self._next
            counts = self._open.pop(b, None)
            if counts is not None:
                upcoming = min(self._open) if self._open else math.inf
            elif upcoming - b > _MAX_EMPTY_WINDOWS * step and upcoming != math.inf:
                # A jump in event time (clock error, a gap of weeks): do not score
                # thousands of empty windows; resume at the next window with data.
                self._next = upcoming
                continue
            self._score(b, counts or {}, self._tops.pop(b, {}), out, latest)
            self._next = b + step
        for b in [b for b in self._tops if b < self._next]:
            del self._tops[b]
        prefix = self.dataset
        for series, (end, x, e) in latest.items():
            name = f"{prefix}.{series}" if prefix else series
            out.append(SeriesPoint(FEED, name, end, x, e.expected, e.lower, e.upper, e.score))
        return out

    def _score(
        self,
        b: float,
        counts: dict[str, int],
        tops: dict[str, int],
        out: list[SeriesPoint | Detection],
        latest: dict[str, tuple[float, float, Explanation]],
    ) -> None:
        vr = self.rule
        end = b + self.tumbling_s
        hits: dict[tuple[float, float], list[tuple[str, float, Explanation]]] = {}
        series: str
        for series in vr.series:
            x = float(counts.get(series, 0))
            det = self._dets.get(series)
            if det is None:
                if not x:
                    # A series this log source has never produced (HTTP errors in an SSH
                    # log): no baseline, no gauge, until its first event.
                    continue
                det = self._dets[series] = self._factory()
            e = det.explain_one(x, end)
            det.learn_one(x, end)
            latest[series] = (end, x, e)
            if vr.enabled and e.score >= vr.threshold and max(x, e.expected) >= vr.min_count:
                # Identical series (same count, same baseline) are one finding.
                hits.setdefault((x, round(e.expected, 6)), []).append((series, x, e))
        for same in hits.values():
            series, x, e = same[0]
            self._detect(series, [s for s, _, _ in same[1:]], x, e, end, tops, out)

    def _detect(
        self,
        series: str,
        also: list[str],
        x: float,
        e: Explanation,
        end: float,
        tops: dict[str, int],
        out: list[SeriesPoint | Detection],
    ) -> None:
        vr = self.rule
        prefix = self.dataset
        ep = self._episodes.get(series)
        if ep is not None and end > ep[4] + self.hold_s:
            ep = None
        if ep is None:
            ep = self._episodes[series] = [end, x, x, end, end]
        else:
            ep[4] = end
            if abs(x - e.expected) > abs(ep[2] - e.expected):
                ep[2], ep[3] = x, end
        name = f"{prefix}.{series}" if prefix else series
        direction = "above" if x > e.expected else "below"
        same = f" (same as {', '.join(f'{prefix}.{a}' if prefix else a for a in also)})"
        top = sorted(tops.items(), key=lambda kv: (-kv[1], kv[0]))[:_EVIDENCE_TOP]
        out.append(
            Detection(
                kind="volume_anomaly",
                entity=name,
                severity=vr.severity,
                ts=end,
                observed=x,
                threshold=vr.threshold,
                window_s=self.tumbling_s,
                summary=f"{name} rate {direction} baseline",
                description=(
                    f"{_fmt_n(x)} {series} in {_fmt_n(self.tumbling_s)} s{same if also else ''}, "
                    f"expected {e.expected:.1f} (band {max(e.lower, 0):.1f} to {e.upper:.1f}); "
                    f"score {e.score:.1f} >= {_fmt_n(vr.threshold)}"
                ),
                expected=e.expected,
                lower=e.lower,
                upper=e.upper,
                start=ep[0],
                hold_s=self.hold_s,
                start_value=ep[1],
                peak=ep[2],
                peak_ts=ep[3],
                first_seen=ep[0] - self.tumbling_s,
                evidence=(("sources", tuple(top)),) if top else (),
                # The rules' clock: volume alerts are muted by attack alerts of their log
                # source (inhibition), which is only the same at any speed on one clock.
                clock=f"{FEED}/{prefix}" if prefix else FEED,
                log_source=prefix,
            )
        )


# ====================================================================== bytewax glue
ShardBatch = tuple[list[SecurityEvent], dict[str, float], str]
RulesOut = Detection | DeadLetter | Tally | Watermark


class RulesLogic(StatefulBatchLogic[ShardBatch, RulesOut, RulesSnapshot]):
    """One shard of sources. Takes (events, newest event time per log source, shard) per
    parse batch; emits detections, dead letters, a timing tally per batch, and then, for
    each log source, a :class:`~vigil.records.Watermark`: every event of the parse batches
    seen so far is processed, so this shard's later detections are not older than the
    newest event time of those batches (the input's own disorder aside)."""

    def __init__(self, rules: SecurityRules, producers: int = 0) -> None:
        self.rules = rules
        self.producers = producers  # of a log source's clock: every shard and the baseline
        self._promised: dict[str, float] = {}

    def on_batch(self, values: list[ShardBatch]) -> tuple[list[RulesOut], bool]:
        rules = self.rules
        out: list[RulesOut] = []
        t0 = time.perf_counter()
        marks: dict[str, float] = {}
        shard = ""
        for events, newest, key in values:
            if events:
                out.extend(rules.process(events))
            marks, shard = newest, key
        # Detector latency: wall time this shard's rules spent on the batch.
        out.append(Tally("rules", gauges={"seconds": time.perf_counter() - t0}))
        if rules.errors:
            out.extend(rules.errors)
            rules.errors.clear()
        promised = self._promised
        for ds, ts in marks.items():
            if ts > promised.get(ds, -math.inf):
                promised[ds] = ts
                out.append(Watermark(f"{FEED}/{ds}", f"rules/{shard}", ts, self.producers))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[RulesOut], bool]:
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> RulesSnapshot:
        return self.rules.snapshot()


Buckets = dict[float, dict[str, int]]
Tops = dict[float, dict[str, int]]  # window start -> source address -> events


class VolumeLogic(
    StatefulBatchLogic[
        tuple[str, Buckets, Tops], "SeriesPoint | Detection | Watermark", VolumeSnapshot
    ]
):
    """The volume baseline of one dataset (each log source has its own rates and clock).

    After each batch it promises (:class:`~vigil.records.Watermark`) that its next
    detection ends no earlier than the first window not yet closed. It is a producer of
    the log source's clock like the rules' shards, so in a replay that clock waits for
    windows to close (``allowed_lateness_s``); a live clock follows the wall clock."""

    def __init__(self, vb: VolumeBaseline, producers: int = 0) -> None:
        self.vb = vb
        self.producers = producers

    def on_batch(
        self, values: list[tuple[str, Buckets, Tops]]
    ) -> tuple[list[SeriesPoint | Detection | Watermark], bool]:
        merged: dict[float, dict[str, int]] = {}
        dataset = values[0][0] if values else ""
        for _ds, bs, tops in values:
            for b, c in bs.items():
                tgt = merged.setdefault(b, {})
                for k, v in c.items():
                    tgt[k] = tgt.get(k, 0) + v
            self.vb.add_sources(tops)
        out: list[SeriesPoint | Detection | Watermark] = []
        out.extend(self.vb.add(merged, dataset))
        promise = self.vb.promise()
        if promise is not None:
            out.append(Watermark(f"{FEED}/{self.vb.dataset}", "volume", promise, self.producers))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[SeriesPoint | Detection | Watermark], bool]:
        return list(self.vb.flush()), StatefulBatchLogic.RETAIN

    def snapshot(self) -> VolumeSnapshot:
        return self.vb.snapshot()


Parsed = tuple[str, "ShardBatch"] | DeadLetter | Tally


def make_parse_batch(
    parser: LineParser, tumbling_s: float, allowed_lateness_s: float = 300.0, shards: int = 16
) -> Callable[[list[RawLine]], list[Parsed]]:
    """The parse step: lines to events and dead letters, plus one tally per batch.

    Events come out grouped per shard of their source address, as ``(shard, (events,
    newest, shard))``: one item per shard and batch instead of one per line, which keeps
    bytewax's per-item cost off the hot path. Every shard gets an item whenever the newest
    event time of a log source moved, even with no events of its own, so each shard can
    promise alerting that its later detections are not older (see :class:`RulesLogic`).
    The tally also counts late events: older than the newest event this worker has seen
    minus ``allowed_lateness_s``, per dataset. They are still processed, never dropped.
    """
    newest: dict[str, float] = {}
    shard_cache: dict[str, str] = {}
    names = [str(i) for i in range(shards)]

    def parse_batch(raws: list[RawLine]) -> list[Parsed]:
        out: list[Parsed] = []
        groups: dict[str, list[SecurityEvent]] = {}
        late = 0
        lines: dict[tuple[str, str], int] = {}
        events: dict[tuple[str, str], int] = {}
        buckets: dict[str, dict[float, dict[str, int]]] = {}
        sources: dict[str, dict[float, dict[str, int]]] = {}
        moved = False
        parse = parser.parse
        read: dict[str, int] = {}  # lines per format; parsed = read - dead, at the end
        for raw in raws:
            fmt = raw.fmt
            read[fmt] = read.get(fmt, 0) + 1
            r = parse(raw)
            if r is None:  # a header line, consumed by the parser
                continue
            if type(r) is SecurityEvent:
                action = r.action
                ds = r.dataset
                ek = (ds, action)
                events[ek] = events.get(ek, 0) + 1
                ts = r.ts
                b = ts - ts % tumbling_s
                top = newest.get(ds)
                closed = False
                if top is None or ts > top:
                    newest[ds] = ts
                    moved = True
                elif ts < top - allowed_lateness_s:
                    late += 1
                    # The baseline closes a window once the newest window is
                    # allowed_lateness_s past its end. Decided here, per event in stream
                    # order, a window's count does not depend on how lines were batched.
                    closed = b + tumbling_s <= top - top % tumbling_s - allowed_lateness_s
                if closed:
                    c = {"events": 0}  # counted as late only: its window has closed
                else:
                    per_ds = buckets.get(ds)
                    if per_ds is None:
                        per_ds = buckets[ds] = {}
                    got = per_ds.get(b)
                    c = per_ds[b] = {"events": 0} if got is None else got
                c["events"] += 1
                if action == "authentication":
                    if r.outcome == "failure":
                        c["auth_failures"] = c.get("auth_failures", 0) + 1
                    elif r.outcome == "success":
                        c["auth_successes"] = c.get("auth_successes", 0) + 1
                elif action == "connection":
                    c["connections"] = c.get("connections", 0) + 1
                elif action == "http_request":
                    if (r.http_status or 0) >= 400:
                        c["http_errors"] = c.get("http_errors", 0) + 1
                elif action == "ids_alert":
                    c["ids_alerts"] = c.get("ids_alerts", 0) + 1
                    if (r.severity or 9) <= 2:
                        c["ids_alerts_high"] = c.get("ids_alerts_high", 0) + 1
                if r.bytes:
                    c["bytes"] = c.get("bytes", 0) + r.bytes
                ip = r.source_ip
                if ip is not None and not closed:
                    # Events per source and window: an anomaly's top contributors.
                    per_src = sources.get(ds)
                    if per_src is None:
                        per_src = sources[ds] = {}
                    sb = per_src.get(b)
                    if sb is None:
                        sb = per_src[b] = {}
                    sb[ip] = sb.get(ip, 0) + 1
                if ip is not None and action != "other":
                    key = shard_cache.get(ip)
                    if key is None:
                        if len(shard_cache) > 100_000:
                            shard_cache.clear()
                        key = shard_cache[ip] = shard_of(ip, shards)
                    g = groups.get(key)
                    if g is None:
                        groups[key] = [r]
                    else:
                        g.append(r)
            else:
                k = (fmt, "dead_lettered")
                lines[k] = lines.get(k, 0) + 1
                out.append(cast(DeadLetter, r))
        for fmt, n in read.items():
            parsed = n - lines.get((fmt, "dead_lettered"), 0)
            if parsed:
                lines[(fmt, "parsed")] = parsed
        if moved or groups:
            marks = dict(newest)
            empty: list[SecurityEvent] = []
            out.extend((k, (groups.get(k, empty), marks, k)) for k in names)
        out.append(
            Tally("parse", lines=lines, events=events, late=late, buckets=buckets, sources=sources)
        )
        return out

    return parse_batch


@dataclass(frozen=True)
class SecurityStreams:
    """Detections with the rules' and baselines' watermarks in order among them (alerting
    needs both, in that order), dead letters, and telemetry."""

    detections: Stream[Detection | Watermark]
    dead: Stream[DeadLetter]
    telemetry: Stream[Tally | SeriesPoint | Detection]


@operator
def security_pipeline(step_id: str, raw: Stream[RawLine], cfg: SecurityConfig) -> SecurityStreams:
    """Parse, detect and baseline a stream of raw lines (see the module docstring)."""
    parser = LineParser(year=cfg.year)
    parsed = op.flat_map_batch(
        "parse",
        raw,
        guard_batch(
            "parse",
            FEED,
            make_parse_batch(parser, cfg.tumbling_s, cfg.allowed_lateness_s, cfg.shards),
        ),
    )
    b = op.branch("is_event", parsed, lambda x: type(x) is tuple)
    keyed = cast(Stream[tuple[str, ShardBatch]], b.trues)
    rest = op.branch("is_dead", b.falses, lambda x: type(x) is DeadLetter)
    dead = cast(Stream[DeadLetter], rest.trues)
    tallies = cast(Stream[Tally], rest.falses)

    def rules_builder(resume: RulesSnapshot | None) -> RulesLogic:
        rules = SecurityRules(cfg.rules, max_sources=cfg.max_sources, refresh_s=cfg.refresh_s)
        if resume is not None:
            rules.restore(resume)
        return RulesLogic(rules, cfg.shards + 1)

    detected = op.key_rm(
        "unkey", op.stateful_batch("rules", keyed, guard_logic("rules", FEED, rules_builder))
    )
    db = op.branch("is_detection", detected, lambda x: type(x) is Detection or type(x) is Watermark)
    rule_dets = cast(Stream[Detection | Watermark], db.trues)
    rb = op.branch("is_rule_dead", db.falses, lambda x: type(x) is DeadLetter)
    rule_dead = cast(Stream[DeadLetter], rb.trues)
    rule_timing = cast(Stream[Tally], rb.falses)

    def volume_builder(resume: VolumeSnapshot | None) -> VolumeLogic:
        vb = VolumeBaseline(cfg)
        if resume is not None:
            vb.restore(resume)
        return VolumeLogic(vb, cfg.shards + 1)

    per_dataset = op.flat_map(
        "vol_split",
        tallies,
        lambda t: [(ds, (ds, bs, t.sources.get(ds, {}))) for ds, bs in t.buckets.items()],
    )
    vol_all = op.key_rm(
        "vol_unkey",
        op.stateful_batch("volume", per_dataset, guard_logic("volume", FEED, volume_builder)),
    )
    vd = op.branch("is_vol_dead", vol_all, lambda x: type(x) is DeadLetter)
    vol = vd.falses
    vb_split = op.branch("is_vol_detection", vol, lambda x: type(x) is not SeriesPoint)
    detections = op.merge(
        "detections", rule_dets, cast(Stream[Detection | Watermark], vb_split.trues)
    )
    telemetry = op.merge(
        "telemetry",
        tallies,
        rule_timing,
        cast(Stream[SeriesPoint], vb_split.falses),
        detections,
    )
    all_dead = op.merge("dead", dead, rule_dead, cast(Stream[DeadLetter], vd.trues))
    return SecurityStreams(detections, all_dead, op.merge("telemetry_all", telemetry, all_dead))


def attach(flow: Dataflow, io: FeedIO) -> SecurityStreams:
    """The feed's ``attach`` (:mod:`vigil.flows.feed`): sources from ``security.inputs``."""
    cfg: SecurityConfig = io.section(FEED)
    srcs = make_sources(cfg, speed_override=io.speed_override, on_syslog_bound=io.on_syslog_bound)
    return attach_sources(flow, cfg, srcs, io.metrics_sink(FEED))


def attach_sources(
    flow: Dataflow,
    cfg: SecurityConfig,
    sources: list[Source[RawLine]],
    metrics_sink: Sink[Any],
) -> SecurityStreams:
    """Add the security pipeline to ``flow``; return its detections and dead letters.

    Telemetry (tallies, baselines, detections, dead letters) goes to ``metrics_sink``; the
    caller routes detections to alerting and dead letters to their file, merged with those
    of other flows.
    """
    if not sources:
        msg = "security flow needs at least one input (security.inputs is empty)"
        raise ValueError(msg)
    ids = input_step_ids(FEED, cfg.inputs, len(sources))
    ins = [op.input(i, flow, s) for i, s in zip(ids, sources, strict=True)]
    raw = ins[0] if len(ins) == 1 else op.merge("security_inputs", *ins)
    s = security_pipeline("security", raw, cfg)
    op.output("security_metrics_out", s.telemetry, metrics_sink)
    return s


def build_flow(
    cfg: SecurityConfig,
    sources: list[Source[RawLine]],
    alert_sink: Sink[Detection],
    dead_sink: Sink[DeadLetter],
    metrics_sink: Sink[Any],
    *,
    name: str = "vigil",
) -> Dataflow:
    """The security dataflow on its own. Opens nothing itself: sources and sinks are passed in."""
    flow = Dataflow(name)
    s = attach_sources(flow, cfg, sources, metrics_sink)
    dets = op.filter("only_detections", s.detections, lambda x: type(x) is Detection)
    op.output("alerts_out", cast(Stream[Detection], dets), alert_sink)
    op.output("dead_out", s.dead, dead_sink)
    return flow


def explain(sec: SecurityConfig) -> list[str]:
    """What ``vigil check-config`` says about the security section."""
    out = [f"security inputs: {len(sec.inputs)}"]
    for i, inp in enumerate(sec.inputs):
        where = (
            getattr(inp, "paths", None)
            or getattr(inp, "url", None)
            or getattr(inp, "brokers", None)
            or f"{getattr(inp, 'host', '')}:{getattr(inp, 'port', '')}"
        )
        out.append(f"  [{i}] {inp.kind:7} format={inp.format:9} {where}")
    out.append(
        f"windows: tumbling {sec.tumbling_s:g} s, allowed lateness {sec.allowed_lateness_s:g} s"
    )
    out.append("rules:")
    for name, rule in sec.rules:
        fields = ", ".join(
            f"{k}={v}" for k, v in rule.model_dump().items() if k not in ("enabled", "detector")
        )
        state = "on " if rule.enabled else "off"
        out.append(f"  {state} {name:17} {fields}")
    return out
