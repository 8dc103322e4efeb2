"""Per-source detection rules: brute force, user enumeration, compromise, web scans.

:class:`SecurityRules` is plain Python (no bytewax), so it can be tested, benchmarked and
reused on its own; the port-scan rules are its mixin in :mod:`~vigil.flows.security.scans`,
the rules over many sources and the outbound ones in :mod:`~vigil.flows.security.crowds`,
the state it keeps per source in :mod:`~vigil.flows.security.episodes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vigil.flows.security.config import SecurityRules as RulesConfig
from vigil.flows.security.crowds import _Crowds
from vigil.flows.security.episodes import (
    FEED,
    Evidence,
    _auth_evidence,
    _Crowd,
    _Episode,
    _fmt_n,
    _ongoing,
    _RuleLike,
    _seed_auth,
    _seed_keys,
    _seed_web,
    _Source,
    _web_evidence,
)
from vigil.flows.security.scans import _PortScans
from vigil.flows.security.windows import SlidingCount, SlidingDistinct

from vigil.records import DeadLetter, Detection, SecurityEvent

_FAIL_CAP = 4096


@dataclass(frozen=True, slots=True)
class RulesSnapshot:
    """Everything the rules learned: picklable, restored into a fresh :class:`SecurityRules`."""

    sources: tuple[tuple[str, _Source], ...]
    watermark: float
    #: The rules over many sources: prefix, host or user key -> what they remember.
    crowds: tuple[tuple[str, _Crowd], ...] = ()


class SecurityRules(_PortScans, _Crowds):
    """Per-source detection rules over event-time sliding windows.

    Parameters
    ----------
    rules
        The rule settings (thresholds, windows, severities).
    max_sources
        Sources tracked at once; the least recently seen is evicted beyond this.
    refresh_s
        While a condition holds, its detection is repeated at most this often (event time).
    protected_networks, forbidden_ports
        ``security.protected_networks`` (CIDRs) and ``security.forbidden_ports``: the
        outbound rules watch connections from the first to anywhere else.

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
        self,
        rules: RulesConfig,
        *,
        max_sources: int = 200_000,
        refresh_s: float = 60.0,
        protected_networks: Iterable[str] = (),
        forbidden_ports: Iterable[int] = (),
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
        self._init_crowds(protected_networks, forbidden_ports)

    # ------------------------------------------------------------ state
    def snapshot(self) -> RulesSnapshot:
        return RulesSnapshot(
            tuple(self._sources.items()), self._max_ts, tuple(self._crowds.items())
        )

    def restore(self, snap: RulesSnapshot) -> None:
        self._sources = dict(snap.sources)
        self._max_ts = snap.watermark
        self._crowds = dict(getattr(snap, "crowds", ()))  # none in older snapshots

    def __len__(self) -> int:
        return len(self._sources)

    def expire(self, now_ts: float) -> int:
        """Drop sources idle for longer than the longest rule window. Returns how many."""
        horizon = now_ts - self._longest_window()
        old = [k for k, s in self._sources.items() if s.last < horizon]
        for k in old:
            del self._sources[k]
        return len(old) + self.expire_crowds(now_ts, self._longest_window())

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
            r.distributed_scan.window_s,
            r.port_fan_in.window_s,
            r.outbound_fan_out.window_s,
            r.forbidden_port.window_s,
            r.account_many_sources.window_s,
        )

    # ------------------------------------------------------------ processing
    def process_all(self, events: Iterable[SecurityEvent]) -> list[Detection]:
        """Every rule on every event, in order: the per-source rules and those over many
        sources (as one shard that all keys are routed to)."""
        out: list[Detection] = []
        for ev in events:
            out.extend(self.process((ev,)))
            routes = self.crowd_routes(ev)
            if routes:
                out.extend(self.process_crowd([(role, ev) for role, _ in routes]))
        return out

    def process(self, events: Iterable[SecurityEvent]) -> list[Detection]:
        """Apply every event in order to the per-source rules (the outbound ones too);
        return the detections they trigger."""
        out: list[Detection] = []
        outbound = bool(self._nets)
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
                    if outbound:
                        self._outbound(ip, src, ev, out)
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
    ) -> None:
        """Episodes: emit when the condition is first met (``seed`` fills the evidence of
        what led up to it); while the episode lasts, every event that ``is_evidence`` (and
        ``evidence`` counts) extends it, reported at most every ``refresh_s`` of event time.
        The episode ends ``window_s`` after its last report; only then can the condition
        start a new one. ``text`` gives (summary, description) and runs only when a
        detection is emitted, so a start states the value at the start. ``refresh_s``
        overrides the rules' own for this episode."""
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
        if ts - ep.last_emit >= (self.refresh_s if refresh_s is None else refresh_s):
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
        n = users.add_count(ev.user_name, ts)
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
            n_paths = paths.add_count(ev.url_path, ts)
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
