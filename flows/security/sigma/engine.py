"""Sigma rules loaded, selected, compiled and matched.

:func:`load_rules` reads the rule folders once per flow (pySigma parses and validates each
file) and gives a :class:`RuleSet`: the compiled rules and correlations per log source
and, for each rule not used, the reason (stable strings: ``invalid rule: <error>``,
``excluded: status <s>``, ``excluded: level <l>``, ``excluded: tag``, ``no matching log
source: <category>/<product>/<service>``, ``unknown field: <name>``, ``unsupported
modifier: <type>``, ``placeholder``, and the correlation reasons of
:mod:`~vigil.flows.security.sigma.correlations`). A bad rule file never stops a run: it
is skipped with its reason. The rules a correlation counts are loaded whatever the
selection says (they are often ``informational``); the correlation itself is selected.

:meth:`RuleSet.match` runs in the parse step (it needs the raw line: keywords are searched
in it); :class:`~vigil.flows.security.sigma.alerts.SigmaAlerts` runs in the rules step
and turns matches into detections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule, SigmaRuleBase
from vigil.flows.security.sigma.compiler import Needs, Predicate, Unsupported, compile_rule
from vigil.flows.security.sigma.config import SigmaConfig
from vigil.flows.security.sigma.correlations import (
    CompiledCorrelation,
    RuleMeta,
    compile_correlation,
)
from vigil.flows.security.sigma.pipelines import LOG_SOURCES, LogSource, source_for

from vigil.records import SecurityEvent

Hit = tuple[int, SecurityEvent, str]  # (rule index, event, raw line)

log = logging.getLogger(__name__)

#: Sigma level -> Vigil severity.
SEVERITY = {
    "informational": "info",
    "low": "info",
    "medium": "warning",
    "high": "high",
    "critical": "critical",
}

#: Fields whose values appear verbatim in the raw line (their literals can prefilter).
#: Not the method and status: "GET" or "200" is in nearly every line, a useless filter.
_VERBATIM = frozenset(
    {
        "source_ip",
        "destination_ip",
        "source_port",
        "destination_port",
        "user_name",
        "url_path",
        "url_target",
        "http_referer",
        "user_agent",
        "host_name",
        "process_name",
    }
)
_SAMPLE_CHARS = 300


@dataclass(frozen=True)
class CompiledRule(RuleMeta):
    """One usable rule: what alerts say about it, and its predicate."""

    processes: frozenset[str] | None
    predicate: Predicate = field(repr=False, compare=False)
    needs: Needs = field(repr=False, compare=False)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.level, "warning")


@dataclass
class RuleSet:
    """The rules of ``security.sigma``: compiled per dataset, and the ones skipped."""

    rules: list[CompiledRule] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (path, title, reason)
    correlations: list[CompiledCorrelation] = field(default_factory=list)
    silent: set[int] = field(default_factory=set)  # rules that only feed correlations
    problems: list[str] = field(default_factory=list)  # the user's mistakes (missing folder)
    by_dataset: dict[str, list[CompiledRule]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def correlations_of(self, index: int) -> list[CompiledCorrelation]:
        """The correlations that count matches of rule ``index``."""
        return self._corr_of.get(index, [])

    def match(self, ev: SecurityEvent, line: str) -> list[CompiledRule]:
        """The rules ``ev`` (parsed from ``line``) matches. Never raises."""
        idx = self._index.get(ev.dataset)
        if idx is None:
            return []
        low = line.lower()
        proc = ev.process_name
        out: list[CompiledRule] = []
        for r in idx.candidates(low):
            if r.processes is not None and proc not in r.processes:
                continue
            try:
                if r.predicate(ev, line, low):
                    out.append(r)
            except Exception:  # a rule must never stop the flow
                continue
        return out

    def index(self) -> None:
        """Group the rules per dataset and build each dataset's prefilter."""
        self.by_dataset = {}
        for r in self.rules:
            self.by_dataset.setdefault(r.dataset, []).append(r)
        self._index = {ds: _Prefilter(rules) for ds, rules in self.by_dataset.items()}
        self._corr_of = {}
        for c in self.correlations:
            for i in c.rules:
                self._corr_of.setdefault(i, []).append(c)

    _index: dict[str, _Prefilter] = field(default_factory=dict)
    _corr_of: dict[int, list[CompiledCorrelation]] = field(default_factory=dict)


_RE2_META = frozenset("\\.+*?()|[]{}^$")


def _re2_escape(lit: str) -> str:
    return "".join("\\" + c if c in _RE2_META else c for c in lit)


class _Prefilter:
    """Which rules can match a line: those whose literals (one of each rule's set) occur in
    it, found in one pass over the line by an RE2 set of all the literals of a dataset's
    rules (linear in the line, whatever the number of rules), plus the rules without any."""

    def __init__(self, rules: list[CompiledRule]) -> None:
        self.rules = rules
        self.always = [i for i, r in enumerate(rules) if r.needs is None]
        lits: dict[str, list[int]] = {}
        for i, r in enumerate(rules):
            for lit in r.needs or ():
                lits.setdefault(lit, []).append(i)
        self.lits = list(lits)
        self.owners = [lits[x] for x in self.lits]
        self._set: Any = None
        if self.lits:
            try:
                import re2

                st = re2.Set.SearchSet()
                for lit in self.lits:
                    st.Add(_re2_escape(lit))
                st.Compile()
                self._set = st
            except Exception:  # no RE2: test each literal
                self._set = None

    def candidates(self, low: str) -> list[CompiledRule]:
        rules = self.rules
        if self._set is not None:
            found = self._set.Match(low)
            if not found:
                return [rules[i] for i in self.always]
            owners = self.owners
            hit = set(self.always)
            for j in found:
                hit.update(owners[j])
            return [rules[i] for i in sorted(hit)]
        out = []
        for r in rules:
            needs = r.needs
            if needs is None or any(lit in low for lit in needs):
                out.append(r)
        return out


def _status(rule: SigmaRule) -> str:
    return str(rule.status.name).lower() if rule.status is not None else "experimental"


def _level(rule: SigmaRule) -> str:
    return str(rule.level.name).lower() if rule.level is not None else "medium"


def _tags(rule: SigmaRule) -> tuple[str, ...]:
    return tuple(f"{t.namespace}.{t.name}" for t in rule.tags)


def load_rules(cfg: SigmaConfig) -> RuleSet:
    """Read, select and compile the rules of ``cfg.paths``. Never raises for a bad rule;
    a missing folder is reported in ``problems``."""
    rs = RuleSet()
    files: list[Path] = []
    for p in cfg.paths:
        path = Path(p)
        if path.is_dir():
            files.extend(sorted(path.rglob("*.yml")) + sorted(path.rglob("*.yaml")))
        elif path.is_file():
            files.append(path)
        else:
            rs.problems.append(f"security.sigma.paths: no such file or folder: {p}")
    pipelines = {s.dataset: s.pipeline() for s in LOG_SOURCES}
    refs: dict[str, tuple[int, LogSource]] = {}
    correlations: list[tuple[SigmaCorrelationRule, str]] = []
    base: list[tuple[object, str]] = []
    for f in files:
        try:
            # References are resolved here, across files (a correlation and its rules
            # may live apart), once every file is read.
            coll = SigmaCollection.from_yaml(
                f.read_text(encoding="utf-8"), collect_errors=True, resolve_references=False
            )
        except Exception as ex:  # YAML and pySigma errors: never stop loading
            rs.skipped.append((str(f), f.name, f"invalid rule: {type(ex).__name__}"))
            continue
        for rule in coll.rules:
            if isinstance(rule, SigmaCorrelationRule) and not rule.errors:
                correlations.append((rule, str(f)))
            else:
                base.append((rule, str(f)))
    # The rules a correlation counts are loaded whatever their level or status (they are
    # often "informational": they say nothing alone); the correlation itself is selected.
    # Only the selected correlations' rules: a rule of an excluded one would alert alone.
    counted = {
        str(r.reference)
        for c, where in correlations
        if _excluded(cfg, _meta(c, where)) is None
        for r in c.rules or ()
    }
    for one, where in base:
        _add(rs, cfg, one, where, pipelines, refs, counted)
    for corr, where in correlations:
        _add_correlation(rs, cfg, corr, where, refs)
    rs.index()
    return rs


def _meta(rule: SigmaRuleBase, path: str) -> dict[str, Any]:
    title = str(rule.title or Path(path).name)
    return {
        "id": str(rule.id or title),
        "title": title,
        "level": str(rule.level.name).lower() if rule.level is not None else "medium",
        "status": str(rule.status.name).lower() if rule.status is not None else "experimental",
        "tags": tuple(f"{t.namespace}.{t.name}" for t in rule.tags),
        "falsepositives": tuple(str(x) for x in (rule.falsepositives or ())),
        "author": str(rule.author or "unknown"),
        "path": path,
    }


def _excluded(cfg: SigmaConfig, meta: dict[str, Any]) -> str | None:
    tags = set(meta["tags"])
    if meta["status"] not in cfg.status:
        return f"excluded: status {meta['status']}"
    if meta["level"] not in cfg.levels:
        return f"excluded: level {meta['level']}"
    if (cfg.tags and not tags & set(cfg.tags)) or tags & set(cfg.exclude_tags):
        return "excluded: tag"
    return None


def _add(
    rs: RuleSet,
    cfg: SigmaConfig,
    rule: object,
    path: str,
    pipelines: dict[str, Any],
    refs: dict[str, tuple[int, LogSource]],
    counted: frozenset[str] | set[str] = frozenset(),
) -> None:
    title = str(getattr(rule, "title", "") or Path(path).name)
    if not isinstance(rule, SigmaRule):
        errors = getattr(rule, "errors", None)
        why = f"invalid rule: {type(errors[0]).__name__}" if errors else "unsupported rule kind"
        rs.skipped.append((path, title, why))
        return
    if rule.errors:
        rs.skipped.append((path, title, f"invalid rule: {type(rule.errors[0]).__name__}"))
        return
    meta = _meta(rule, path)
    used = meta["id"] in counted or (rule.name is not None and str(rule.name) in counted)
    excluded = None if used else _excluded(cfg, meta)
    if excluded is not None:
        rs.skipped.append((path, title, excluded))
        return
    ls = rule.logsource
    src = source_for(ls.category, ls.product, ls.service)
    if src is None:
        where = "/".join(x or "-" for x in (ls.category, ls.product, ls.service))
        rs.skipped.append((path, title, f"no matching log source: {where}"))
        return
    try:
        pipelines[src.dataset].apply(rule)
        pred, needs = compile_rule(rule, src.fields, _VERBATIM)
    except Unsupported as ex:
        rs.skipped.append((path, title, ex.reason))
        return
    except Exception as ex:  # pySigma's own errors (conditions, modifiers): skip the rule
        rs.skipped.append((path, title, f"invalid rule: {type(ex).__name__}"))
        return
    r = CompiledRule(
        index=len(rs.rules),
        dataset=src.dataset,
        processes=src.services.get(ls.service),
        predicate=pred,
        needs=needs,
        **meta,
    )
    rs.rules.append(r)
    refs[r.id] = (r.index, src)
    if rule.name:
        refs[str(rule.name)] = (r.index, src)


def _add_correlation(
    rs: RuleSet,
    cfg: SigmaConfig,
    corr: SigmaCorrelationRule,
    path: str,
    refs: dict[str, tuple[int, LogSource]],
) -> None:
    meta = _meta(corr, path)
    why = _excluded(cfg, meta)
    if why is None:
        try:
            c = compile_correlation(corr, len(rs.correlations), refs, meta)
        except Unsupported as ex:
            why = ex.reason
        else:
            rs.correlations.append(c)
            if not c.generate:  # the referenced rules count, they do not alert themselves
                rs.silent.update(c.rules)
            return
    rs.skipped.append((path, meta["title"], why))


def explain_rules(cfg: SigmaConfig, rs: RuleSet | None = None) -> list[str]:
    """What ``vigil check-config`` says about Sigma rules: loaded per log source, skipped
    with the reason; ``error:`` lines for the user's mistakes."""
    if not cfg.paths:
        return ["sigma rules: none (security.sigma.paths is empty)"]
    rs = load_rules(cfg) if rs is None else rs
    out = [f"error: {p}" for p in rs.problems]
    out.append(f"sigma rules: {len(rs.rules)} loaded, {len(rs.skipped)} skipped")
    if rs.correlations:
        out[-1] += f" ({len(rs.correlations)} correlation(s))"
    for ds in sorted(rs.by_dataset):
        rules = rs.by_dataset[ds]
        corrs = [c for c in rs.correlations if c.dataset == ds]
        out.append(f"  {ds}: {len(rules)}" + (f" + {len(corrs)} correlation(s)" if corrs else ""))
        out.extend(f"    {r.id} {r.level:13} {r.title}" for r in rules)
        out.extend(
            f"    {c.id} {c.level:13} {c.title} ({c.type} by {', '.join(c.group_by)}"
            f" over {c.span_s:g} s)"
            for c in corrs
        )
    if rs.skipped:
        counts: dict[str, int] = {}
        for _, _, reason in rs.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        out.append("  skipped:")
        out.extend(f"    {n:4} {reason}" for reason, n in sorted(counts.items()))
        out.extend(f"    skip {Path(p).name}: {reason}" for p, _, reason in rs.skipped)
    return out
