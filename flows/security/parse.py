"""The parse step and the rules' bytewax glue: lines to per-shard event batches, and
the stateful logic that runs :class:`~vigil.flows.security.rules.SecurityRules` on them.

Both ends of the ``(events, newest, shard)`` batch (:data:`ShardBatch`) live here, so the
shape the parse step produces and the one the rules consume are defined once.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, cast

from bytewax.operators import StatefulBatchLogic
from vigil.flows.config.base import shard_of
from vigil.flows.config.shards import shard_index, shard_names
from vigil.flows.security.crowds import Memo
from vigil.flows.security.episodes import FEED
from vigil.flows.security.parsers import LineParser
from vigil.flows.security.rules import RulesSnapshot, SecurityRules

from vigil.records import DeadLetter, Detection, RawLine, SecurityEvent, Tally, Watermark

if TYPE_CHECKING:  # pySigma is loaded only when rules are configured
    from vigil.flows.security.sigma.alerts import SigmaAlerts
    from vigil.flows.security.sigma.engine import Hit, RuleSet

#: (events, newest event time per log source, shard, Sigma matches of the shard's entities)
#: and the events routed here for the rules over many sources, as ``(role, event)``
#: (:class:`~vigil.flows.security.crowds.CrowdRouter`)
ShardBatch = tuple[
    list[SecurityEvent], dict[str, float], str, list["Hit"], list[tuple[str, SecurityEvent]]
]
Router = Callable[[SecurityEvent], list[tuple[str, str]]]
RulesOut = Detection | DeadLetter | Tally | Watermark
_FMT = attrgetter("fmt")
_DATASET_ACTION = attrgetter("dataset", "action")


class RulesLogic(StatefulBatchLogic[ShardBatch, RulesOut, RulesSnapshot]):
    """One shard of sources. Takes (events, newest event time per log source, shard) per
    parse batch; emits detections, dead letters, a timing tally per batch, and then, for
    each log source, a :class:`~vigil.records.Watermark`: every event of the parse batches
    seen so far is processed, so this shard's later detections are not older than the
    newest event time of those batches (the input's own disorder aside)."""

    def __init__(
        self, rules: SecurityRules, producers: int = 0, sigma: SigmaAlerts | None = None
    ) -> None:
        self.rules = rules
        self.sigma = sigma  # Sigma matches to detections (see vigil.flows.security.sigma)
        self.producers = producers  # of a log source's clock: every shard and the baseline
        self._promised: dict[str, float] = {}

    def on_batch(self, values: list[ShardBatch]) -> tuple[list[RulesOut], bool]:
        rules = self.rules
        out: list[RulesOut] = []
        t0 = time.perf_counter()
        marks: dict[str, float] = {}
        shard = ""
        sigma = self.sigma
        for events, newest, key, hits, crowd in values:
            if events:
                out.extend(rules.process(events))
            if crowd:
                out.extend(rules.process_crowd(crowd))
            if hits and sigma is not None:
                out.extend(sigma.process(hits))
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
                # Named by the shard's index: a producer keeps its name when labels change.
                producer = f"rules/{shard_index(shard)}"
                out.append(Watermark(f"{FEED}/{ds}", producer, ts, self.producers))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[RulesOut], bool]:
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> RulesSnapshot:
        return self.rules.snapshot()


Parsed = tuple[str, "ShardBatch"] | DeadLetter | Tally


def make_parse_batch(
    parser: LineParser,
    tumbling_s: float,
    allowed_lateness_s: float = 300.0,
    shards: int = 16,
    sigma: RuleSet | None = None,
    routes: Router | None = None,
) -> Callable[[list[RawLine]], list[Parsed]]:
    """The parse step: lines to events and dead letters, plus one tally per batch.

    Events come out grouped per shard of their source address, as ``(shard, (events,
    newest, shard))``: one item per shard and batch instead of one per line, which keeps
    bytewax's per-item cost off the hot path. Every shard gets an item whenever the newest
    event time of a log source moved, even with no events of its own, so each shard can
    promise alerting that its later detections are not older (see :class:`RulesLogic`).
    The tally also counts late events: older than the newest event this worker has seen
    minus ``allowed_lateness_s``, per dataset. They are still processed, never dropped.
    With ``sigma`` rules, each event is matched here (keywords need the raw line) and its
    matches travel to the shard of its entity (source address, else host name).
    ``routes`` (:meth:`~vigil.flows.security.crowds.CrowdRouter.routes`) names the keys
    (prefix, host, user) of the rules over many sources an event counts towards; the event
    also goes, with its role, to the shard of each key, so all events of a key meet.
    """
    match = sigma.match if sigma else None
    newest: dict[str, float] = {}
    shard = Memo(lambda key: shard_of(key, shards))  # key -> its shard, in C once cached
    names = shard_names(shards)

    def parse_batch(raws: list[RawLine]) -> list[Parsed]:
        out: list[Parsed] = []
        groups: dict[str, list[SecurityEvent]] = {}
        hits: dict[str, list[Hit]] = {}
        crowds: dict[str, list[tuple[str, SecurityEvent]]] = {}
        late = 0
        lines: dict[tuple[str, str], int] = {}
        evs: list[SecurityEvent] = []  # counted per (dataset, action) at the end, in C
        buckets: dict[str, dict[float, dict[str, int]]] = {}
        sources: dict[str, dict[float, dict[str, int]]] = {}
        moved = False
        parse = parser.parse
        # lines per format (parsed = read - dead, at the end), counted in C
        read: dict[str, int] = Counter(map(_FMT, raws))
        # The bucket counters of the previous event's (dataset, window), and its sources
        cur_ds = ""
        cur_b = -math.inf
        cur_c: dict[str, int] = {}
        cur_sb: dict[str, int] | None = None
        for raw in raws:
            r = parse(raw)
            if r is None:  # a header line, consumed by the parser
                continue
            if type(r) is SecurityEvent:
                action = r.action
                ds = r.dataset
                evs.append(r)
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
                elif b == cur_b and ds == cur_ds:  # the common case: as the previous event
                    c = cur_c
                else:
                    per_ds = buckets.get(ds)
                    if per_ds is None:
                        per_ds = buckets[ds] = {}
                    got = per_ds.get(b)
                    c = per_ds[b] = {"events": 0} if got is None else got
                    cur_ds, cur_b, cur_c, cur_sb = ds, b, c, None
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
                if match is not None:
                    for rule in match(r, raw.text):
                        key = shard[ip or r.host_name or ds]
                        hits.setdefault(key, []).append((rule.index, r, raw.text))
                if ip is not None and not closed:
                    # Events per source and window: an anomaly's top contributors.
                    sb = cur_sb  # that of (cur_ds, cur_b), this event's window
                    if sb is None:
                        per_src = sources.get(ds)
                        if per_src is None:
                            per_src = sources[ds] = {}
                        sb = per_src.get(b)
                        if sb is None:
                            sb = per_src[b] = {}
                        cur_sb = sb
                    sb[ip] = sb.get(ip, 0) + 1
                if ip is not None and action != "other":
                    key = shard[ip]
                    g = groups.get(key)
                    if g is None:
                        groups[key] = [r]
                    else:
                        g.append(r)
                    # Only probes and logins count towards the rules over many sources.
                    if routes is not None and (
                        action == "connection" or action == "authentication"
                    ):
                        for route in routes(r):
                            key = shard[route[1]]
                            cg = crowds.get(key)
                            if cg is None:
                                crowds[key] = [(route[0], r)]
                            else:
                                cg.append((route[0], r))
            else:
                k = (raw.fmt, "dead_lettered")
                lines[k] = lines.get(k, 0) + 1
                out.append(cast(DeadLetter, r))
        for fmt, n in read.items():
            parsed = n - lines.get((fmt, "dead_lettered"), 0)
            if parsed:
                lines[(fmt, "parsed")] = parsed
        if moved or groups or hits:
            marks = dict(newest)
            empty: list[SecurityEvent] = []
            none: list[Hit] = []
            nobody: list[tuple[str, SecurityEvent]] = []
            out.extend(
                (k, (groups.get(k, empty), marks, k, hits.get(k, none), crowds.get(k, nobody)))
                for k in names
            )
        out.append(
            Tally(
                "parse",
                lines=lines,
                events=dict(Counter(map(_DATASET_ACTION, evs))),
                late=late,
                buckets=buckets,
                sources=sources,
            )
        )
        return out

    return parse_batch
