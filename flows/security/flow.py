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

Modules: ``episodes`` (per-source state, evidence), ``rules`` (:class:`SecurityRules`) and
``scans`` (its port-scan rules), ``volume`` (the baseline), ``parse`` (the parse step and
the rules' logic); this one wires them into a dataflow (``attach``, ``build_flow``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.outputs import Sink
from vigil.flows.config.base import input_step_ids
from vigil.flows.errors import ConfigError
from vigil.flows.feed import FeedIO
from vigil.flows.guard import guard_batch, guard_logic
from vigil.flows.inputs import make_sources
from vigil.flows.security.config import SecurityConfig
from vigil.flows.security.crowds import CrowdRouter
from vigil.flows.security.episodes import FEED, Evidence, _Episode, _Source
from vigil.flows.security.parse import (
    Parsed,
    RulesLogic,
    RulesOut,
    ShardBatch,
    make_parse_batch,
)
from vigil.flows.security.parsers import LineParser
from vigil.flows.security.rules import RulesSnapshot, SecurityRules
from vigil.flows.security.scans import UNANSWERED
from vigil.flows.security.volume import (
    Buckets,
    Tops,
    VolumeBaseline,
    VolumeLogic,
    VolumeSnapshot,
)

from vigil.extras import MissingExtra, need
from vigil.records import DeadLetter, Detection, RawLine, SeriesPoint, Tally, Watermark

if TYPE_CHECKING:  # pySigma is loaded only when rules are configured
    from vigil.flows.security.sigma.engine import RuleSet

# Moved names stay importable from here: recovery snapshots pickle ``RulesSnapshot`` (with
# its ``_Source`` and ``_Episode``) and ``VolumeSnapshot`` by this module's path.
__all__ = [
    "FEED",
    "UNANSWERED",
    "Buckets",
    "Evidence",
    "Parsed",
    "RulesLogic",
    "RulesOut",
    "RulesSnapshot",
    "SecurityRules",
    "SecurityStreams",
    "ShardBatch",
    "Tops",
    "VolumeBaseline",
    "VolumeLogic",
    "VolumeSnapshot",
    "_Episode",
    "_Source",
    "attach",
    "attach_sources",
    "build_flow",
    "explain",
    "make_parse_batch",
    "security_pipeline",
]


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
    parser = LineParser(year=cfg.year, timezone=cfg.timezone)
    sigma = _sigma_rules(cfg)
    parsed = op.flat_map_batch(
        "parse",
        raw,
        guard_batch(
            "parse",
            FEED,
            make_parse_batch(
                parser,
                cfg.tumbling_s,
                cfg.allowed_lateness_s,
                cfg.shards,
                sigma,
                CrowdRouter(cfg.rules, cfg.protected_networks).routes,
            ),
        ),
    )
    b = op.branch("is_event", parsed, lambda x: type(x) is tuple)
    keyed = cast(Stream[tuple[str, ShardBatch]], b.trues)
    rest = op.branch("is_dead", b.falses, lambda x: type(x) is DeadLetter)
    dead = cast(Stream[DeadLetter], rest.trues)
    tallies = cast(Stream[Tally], rest.falses)

    def rules_builder(resume: RulesSnapshot | None) -> RulesLogic:
        rules = SecurityRules(
            cfg.rules,
            max_sources=cfg.max_sources,
            refresh_s=cfg.refresh_s,
            protected_networks=cfg.protected_networks,
            forbidden_ports=cfg.forbidden_ports,
        )
        if resume is not None:
            rules.restore(resume)
        alerts = None
        if sigma:
            from vigil.flows.security.sigma.alerts import SigmaAlerts

            alerts = SigmaAlerts(sigma, cfg.sigma, refresh_s=cfg.refresh_s)
        return RulesLogic(rules, cfg.shards + 1, alerts)

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


def _sigma_rules(cfg: SecurityConfig) -> RuleSet | None:
    """The Sigma rules of ``security.sigma``, loaded once per flow (``None``: none set).

    Raises
    ------
    ConfigError
        For a rule folder that does not exist (rules that cannot be used are skipped).
    """
    if not cfg.sigma.paths:
        return None
    need("sigma.collection", "sigma", "security.sigma (Sigma rules)")  # pySigma, an extra
    from vigil.flows.security.sigma.engine import load_rules

    rs = load_rules(cfg.sigma)
    if rs.problems:
        raise ConfigError(rs.problems[0])
    return rs


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
    out.append(f"syslog and firewall times read in {sec.timezone} (they carry no zone)")
    if sec.protected_networks:
        ports = ", ".join(map(str, sec.forbidden_ports)) or "none"
        out.append(
            f"protected networks: {', '.join(sec.protected_networks)}; forbidden ports: {ports}"
        )
    else:
        out.append("protected networks: none (outbound_fan_out and forbidden_port are off)")
    if sec.sigma.paths:
        try:
            need("sigma.collection", "sigma", "security.sigma (Sigma rules)")
        except MissingExtra as ex:
            out.append(f"error: {ex}")
        else:
            from vigil.flows.security.sigma.engine import explain_rules

            out.extend(explain_rules(sec.sigma))
    out.append("rules:")
    for name, rule in sec.rules:
        fields = ", ".join(
            f"{k}={v}" for k, v in rule.model_dump().items() if k not in ("enabled", "detector")
        )
        state = "on " if rule.enabled else "off"
        out.append(f"  {state} {name:17} {fields}")
    return out
