"""What the security rules remember per source, and the episodes they report.

``_Source`` and ``_Episode`` are pickled inside :class:`~vigil.flows.security.rules.RulesSnapshot`
(bytewax recovery), so they live apart from the rules that fill them; with them, the
evidence helpers shared by every rule and the formatting shared with the volume baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from vigil.flows.security.windows import SlidingCount, SlidingDistinct

from vigil.records import SecurityEvent

FEED = "security"


class _RuleLike(Protocol):
    @property
    def severity(self) -> str: ...
    @property
    def window_s(self) -> float: ...


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

    # Not sorted: slots added later go last, so older snapshots (fewer values) restore.
    __slots__ = (  # noqa: RUF023
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
        # Added later: appended so that snapshots written before them still restore.
        "out_hosts_by_port",
        "out_ports_by_host",
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
        # Outbound from a protected address: outside hosts per port, ports per outside host.
        self.out_hosts_by_port: dict[int, SlidingDistinct] | None = None
        self.out_ports_by_host: dict[str, SlidingDistinct] | None = None

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        # A snapshot from before the newest slots has fewer values: those start empty.
        for s in self.__slots__[len(st) :]:
            setattr(self, s, None)
        for s, v in zip(self.__slots__, st, strict=False):
            setattr(self, s, v)


class _Crowd:
    """What the rules over many sources remember about one key: a source prefix (its
    distributed scans), a host (many sources on one of its ports) or a user name (logins
    from many sources). ``sets`` holds the distinct values per target, ``hits`` the events
    per source address (bounded), ``active`` the episodes as in :class:`_Source`."""

    __slots__ = ("active", "hits", "last", "sets")

    def __init__(self, ts: float) -> None:
        self.last = ts
        self.sets: dict[tuple[str, str], SlidingDistinct] = {}
        self.hits: dict[str, int] = {}
        self.active: dict[tuple[str, str], _Episode] | None = None

    def hit(self, who: str) -> None:
        h = self.hits
        if who in h or len(h) < _EVIDENCE_ITEMS:
            h[who] = h.get(who, 0) + 1

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

    #: What a snapshot holds (``_names`` is a cache, rebuilt after a restore).
    _STATE = (
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
    __slots__ = (*_STATE, "_names")

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
        # Per evidence list, its items sorted by name: count() only ever adds items, so a
        # list of the same length holds the same items and the sort is not redone.
        self._names: dict[str, list[str]] | None = None

    def count(self, name: str, item: str, n: int = 1) -> None:
        c = self.evidence.get(name)
        if c is None:
            c = self.evidence[name] = {}
        if item in c or len(c) < _EVIDENCE_ITEMS:
            c[item] = c.get(item, 0) + n
        else:
            c["other"] = c.get("other", 0) + n

    def top(self) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
        # Most counted first, then by name: names sorted (cached), then (stable, and reverse
        # keeps the order of ties) by count; two sorts in C beat one with a Python key.
        names = self._names
        if names is None:
            names = self._names = {}
        out: list[tuple[str, tuple[tuple[str, int], ...]]] = []
        for name, c in self.evidence.items():
            ks = names.get(name)
            if ks is None or len(ks) != len(c):
                ks = names[name] = sorted(c)
            ks = sorted(ks, key=c.__getitem__, reverse=True)[:_EVIDENCE_TOP]
            out.append((name, tuple(zip(ks, map(c.__getitem__, ks), strict=True))))
        if self.scans:
            out.append(("scans", tuple((k, int(v)) for k, v in self.scans.items())))
        return tuple(out)

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for s in self._STATE)

    def __setstate__(self, st: tuple[Any, ...]) -> None:
        for s, v in zip(self._STATE, st, strict=True):
            setattr(self, s, v)
        self._names = None


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
