"""Sigma matches to :class:`~vigil.records.Detection` episodes, in the rules step.

Like the built-in rules: a detection when a rule first matches for an entity (its source
address, else its host name), then at most one per ``refresh_s`` of event time while
matches keep coming within ``hold_s``; after that the episode ends and the next match
starts a new one. A correlation's episode is per group (its ``group-by`` values) and holds
for its timespan. Alerts carry the rule's id, title, level, status, ATT&CK tags,
false-positive notes and author (the Detection Rule License asks for credit) as
annotations, and a bounded sample of the matching lines as evidence.

State is bounded: at most ``max_entities`` episodes and as many correlation groups (the
least recently matched are dropped). It is not part of the recovery snapshot: after a
restart an ongoing episode is reported again as new, which alerting folds into the
alert still firing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vigil.flows.security.sigma.config import SigmaConfig
from vigil.flows.security.sigma.correlations import CompiledCorrelation, CorrelationGroup
from vigil.flows.security.sigma.engine import SEVERITY, CompiledRule, Hit, RuleSet

from vigil.records import Detection, SecurityEvent

_SAMPLE_CHARS = 300


class _Ep:
    __slots__ = ("count", "last_emit", "samples", "start")

    def __init__(self, ts: float) -> None:
        self.start = ts
        self.last_emit = ts
        self.count = 0
        self.samples: dict[str, int] = {}


def _bound(d: dict[Any, Any], cap: int) -> None:
    if len(d) > cap:
        for k in list(d)[: max(1, len(d) // 10)]:
            del d[k]


class SigmaAlerts:
    """Turns one shard's Sigma matches into detections (see the module docstring)."""

    def __init__(self, rules: RuleSet, cfg: SigmaConfig, refresh_s: float = 60.0) -> None:
        self.ruleset = rules
        self.rules = rules.rules
        self.silent = rules.silent
        self.cfg = cfg
        self.refresh_s = refresh_s
        self._eps: dict[tuple[str, int, str], _Ep] = {}
        self._groups: dict[tuple[int, str], CorrelationGroup] = {}
        self._seq = 0

    def process(self, hits: Iterable[Hit]) -> list[Detection]:
        out: list[Detection] = []
        hold = self.cfg.hold_s
        for idx, ev, line in hits:
            if idx not in self.silent:
                rule = self.rules[idx]
                entity = ev.source_ip or ev.host_name or ev.dataset
                self._episode(out, ("r", idx, entity), rule, entity, ev, line, hold, None)
            for c in self.ruleset.correlations_of(idx):
                self._correlate(out, c, idx, ev, line)
        return out

    def _correlate(
        self, out: list[Detection], c: CompiledCorrelation, idx: int, ev: SecurityEvent, line: str
    ) -> None:
        key = c.key(ev, line)
        if key is None:
            return
        groups = self._groups
        g = groups.pop((c.index, key), None)
        if g is None:
            g = CorrelationGroup()
        groups[(c.index, key)] = g  # re-inserted last: the dict is in recency order
        _bound(groups, self.cfg.max_entities)
        if c.type == "temporal":
            item: Any = self.rules[idx].title  # which of its rules matched
        elif c.value is None:
            self._seq += 1
            item = self._seq
        else:
            item = c.value(ev, line)
            if item is None:
                return
        n = g.add(c, ev.ts, item)
        ep_key = ("c", c.index, key)
        if c.met(n) or ep_key in self._eps:
            self._episode(out, ep_key, c, key, ev, line, c.span_s, (n, g), fire=c.met(n))

    def _episode(
        self,
        out: list[Detection],
        key: tuple[str, int, str],
        rule: CompiledRule | CompiledCorrelation,
        entity: str,
        ev: SecurityEvent,
        line: str,
        hold: float,
        corr: tuple[int, CorrelationGroup] | None,
        *,
        fire: bool = True,
    ) -> None:
        eps = self._eps
        ts = ev.ts
        ep = eps.pop(key, None)
        new = ep is None or ts > ep.last_emit + hold
        if new:
            if not fire:
                return
            ep = _Ep(ts)
        assert ep is not None
        eps[key] = ep
        _bound(eps, self.cfg.max_entities)
        ep.count += 1
        sample = line[:_SAMPLE_CHARS]
        if sample in ep.samples or len(ep.samples) < self.cfg.samples:
            ep.samples[sample] = ep.samples.get(sample, 0) + 1
        if new or ts - ep.last_emit >= self.refresh_s:
            ep.last_emit = max(ts, ep.last_emit)
            out.append(_detection(rule, entity, ep, ev, new, hold, corr))


def _detection(
    rule: CompiledRule | CompiledCorrelation,
    entity: str,
    ep: _Ep,
    ev: SecurityEvent,
    new: bool,
    hold: float,
    corr: tuple[int, CorrelationGroup] | None,
) -> Detection:
    extra = (
        ("sigma_id", rule.id),
        ("sigma_title", rule.title),
        ("sigma_level", rule.level),
        ("sigma_status", rule.status),
        ("sigma_tags", ", ".join(rule.tags)),
        ("sigma_falsepositives", "; ".join(rule.falsepositives)),
        ("sigma_author", rule.author),
    )
    evidence: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
        ("lines", tuple(sorted(ep.samples.items(), key=lambda kv: -kv[1]))),
    )
    credit = f"level {rule.level}; by {rule.author}"
    if corr is None or not isinstance(rule, CompiledCorrelation):
        observed, threshold = float(ep.count), 1.0
        text = f"{ep.count} line(s) from {entity} matched Sigma rule {rule.id} '{rule.title}'"
    else:
        n, group = corr
        observed, threshold = float(n), float(rule.threshold)
        what = {"value_count": f"distinct {rule.value_field}", "temporal": "of its rules"}.get(
            rule.type, "matches"
        )
        text = (
            f"{n} {what} for {entity} within {rule.span_s:g} s: Sigma correlation {rule.id}"
            f" '{rule.title}' (threshold {'>' if rule.strict else '>='} {rule.threshold})"
        )
        if rule.value_field:
            evidence += ((rule.value_field, group.top()),)
        elif rule.type == "temporal":
            evidence += (("rules", group.top()),)
    return Detection(
        kind=f"sigma_{rule.id}",
        entity=entity,
        severity=SEVERITY.get(rule.level, "warning"),
        ts=ev.ts,
        observed=observed,
        threshold=threshold,
        summary=f"Sigma: {rule.title} ({entity})",
        description=f"{text} ({credit})",
        window_s=hold,
        extra=extra,
        start=None if new else ep.start,
        hold_s=hold,
        first_seen=ep.start,
        evidence=evidence,
        clock=f"security/{ev.dataset}",
        log_source=ev.dataset,
    )
