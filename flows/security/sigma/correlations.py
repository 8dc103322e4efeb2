"""Sigma correlation rules (``event_count``, ``value_count``, ``temporal``) as keyed state
in event time.

A correlation counts the matches of the rules it references per ``group-by`` key within its
``timespan`` and fires when the count (or the number of distinct values of ``field``) is
``gt``/``gte`` its threshold; a ``temporal`` one fires when every rule it references has
matched for the group within the timespan, in any order. Matches reach the rules step
keyed by the shard of their source address, so the group-by must include the source
address (``id.orig_h``, ``src_ip``, ``c-ip``...): otherwise one group's matches would be
split over shards. Memory per group is bounded: at most ``max(2 * threshold, 64)``
timestamps or distinct values are kept (the oldest go first), and groups are bounded with
the rules' episodes.

Skipped with a reason: other types (``temporal_ordered``, ``value_sum``...),
conditions that can only be decided when a window closes (``lt``, ``lte``, ``eq``,
``neq``), references to rules that are not loaded, a group-by without the source address,
fields the log source does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sigma.correlations import SigmaCorrelationRule
from vigil.flows.security.sigma.compiler import Unsupported
from vigil.flows.security.sigma.pipelines import Getter, LogSource

from vigil.records import SecurityEvent


@dataclass(frozen=True)
class RuleMeta:
    """What an alert says about a Sigma rule or correlation (and where it was read)."""

    index: int
    id: str
    title: str
    level: str
    status: str
    tags: tuple[str, ...]
    falsepositives: tuple[str, ...]
    author: str
    path: str
    dataset: str


@dataclass(frozen=True)
class CompiledCorrelation(RuleMeta):
    """One usable correlation rule."""

    type: str  # "event_count", "value_count" or "temporal"
    rules: tuple[int, ...]  # indices of the referenced rules
    group_by: tuple[str, ...]  # Sigma field names, for the alert text
    threshold: int
    strict: bool  # gt (True) or gte
    span_s: float
    value_field: str | None
    generate: bool
    group: tuple[Getter, ...] = field(repr=False, compare=False)
    value: Getter | None = field(repr=False, compare=False)

    @property
    def cap(self) -> int:
        return max(2 * (self.threshold + 1), 64)

    def key(self, ev: SecurityEvent, line: str) -> str | None:
        """The group of ``ev``: its group-by values; ``None`` if one is missing."""
        parts = []
        for g in self.group:
            v = g(ev, line)
            if v is None:
                return None
            parts.append(str(v))
        return " ".join(parts)

    def met(self, n: int) -> bool:
        return n > self.threshold if self.strict else n >= self.threshold


_SOURCE_FIELDS = frozenset({"source_ip"})


def compile_correlation(
    corr: SigmaCorrelationRule,
    index: int,
    refs: Mapping[str, tuple[int, LogSource]],
    meta: dict[str, Any],
) -> CompiledCorrelation:
    """A correlation over already compiled rules; ``refs`` maps a rule's id and name to its
    index and log source.

    Raises
    ------
    Unsupported
        With a stable reason.
    """
    kind = str(corr.type.name).lower()
    if kind not in ("event_count", "value_count", "temporal"):
        msg = f"unsupported correlation type: {kind}"
        raise Unsupported(msg)
    cond = corr.condition
    op = str(getattr(getattr(cond, "op", None), "name", "")).lower()
    if kind == "temporal":
        op = "gte"  # every referenced rule matched within the timespan
    if op not in ("gt", "gte"):
        msg = f"unsupported correlation condition: {op or type(cond).__name__}"
        raise Unsupported(msg)
    idx: list[int] = []
    src: LogSource | None = None
    for ref in corr.rules or ():
        got = refs.get(str(ref.reference))
        if got is None:
            msg = "correlation of a rule not loaded"
            raise Unsupported(msg)
        idx.append(got[0])
        if src is not None and got[1] is not src:
            msg = "correlation across log sources"
            raise Unsupported(msg)
        src = got[1]
    if src is None:
        msg = "correlation of no rule"
        raise Unsupported(msg)
    group_by = tuple(str(g) for g in corr.group_by or ())
    ours = [src.mapping.get(g, g) for g in group_by]
    for g, o in zip(group_by, ours, strict=True):
        if o not in src.fields:
            msg = f"unknown field: {g}"
            raise Unsupported(msg)
    if not _SOURCE_FIELDS & set(ours):
        msg = "correlation group-by without the source address"
        raise Unsupported(msg)
    value: Getter | None = None
    fieldref = getattr(cond, "fieldref", None)
    if kind == "value_count":
        if not isinstance(fieldref, str):
            msg = "value_count without one field"
            raise Unsupported(msg)
        ov = src.mapping.get(fieldref, fieldref)
        value = src.fields.get(ov)
        if value is None:
            msg = f"unknown field: {fieldref}"
            raise Unsupported(msg)
    return CompiledCorrelation(
        index=index,
        type=kind,
        rules=tuple(idx),
        group_by=group_by,
        threshold=len(set(idx)) if kind == "temporal" else int(getattr(cond, "count", 0)),
        strict=op == "gt",
        span_s=float(corr.timespan.seconds),
        value_field=fieldref if kind == "value_count" else None,
        generate=bool(corr.generate),
        dataset=src.dataset,
        group=tuple(src.fields[o] for o in ours),
        value=value,
        **meta,
    )


class CorrelationGroup:
    """What one correlation remembers of one group: the matches' times (event_count) or
    each distinct value's latest time (value_count), oldest first, within the timespan."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: dict[Any, float] = {}

    def add(self, c: CompiledCorrelation, ts: float, item: Any) -> int:
        """Count ``item`` at ``ts``; return the count within the timespan ending at ``ts``."""
        seen = self.seen
        seen.pop(item, None)
        seen[item] = ts
        horizon = ts - c.span_s
        while seen:
            first = next(iter(seen))
            if seen[first] >= horizon and len(seen) <= c.cap:
                break
            del seen[first]
        return len(seen)

    def top(self, n: int = 10) -> tuple[tuple[str, int], ...]:
        return tuple((str(k), 1) for k in list(self.seen)[-n:])
