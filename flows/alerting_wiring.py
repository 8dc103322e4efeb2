"""Composition of the alerting pipeline: configuration in, running objects out.

Used by :func:`vigil.flows.main.make_alert_sink` (the flows' alert path) and by the operator
CLI (:mod:`vigil.flows.cli.alerts`), so both open the same state store. Secrets are read from
the environment here, at the edge, and never logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from vigil.flows.config import VigilConfig
from vigil.flows.config.alerting import AlertingConfig, RouteConfig, effective_alerting
from vigil.flows.errors import ConfigError
from vigil.sinks.alerting.delivery import Integration, WebhookIntegration
from vigil.sinks.alerting.engine import AlertEngine, Clock, ReceiverOptions
from vigil.sinks.alerting.incidents import Correlator, IncidentSettings, Link
from vigil.sinks.alerting.model import InhibitRule, MaintenanceWindow, Silence, parse_matchers
from vigil.sinks.alerting.outbox import FileOutbox, Outbox, RedisOutbox, RetryPolicy
from vigil.sinks.alerting.routing import Route
from vigil.sinks.alerting.service import AlertingService, AlertingSink, SideChannel
from vigil.sinks.alerting.store import MemoryStore, RedisStore, StateStore, free_slots
from vigil.sinks.alerting.templates import Templates

log = logging.getLogger(__name__)


def alerting_of(cfg: VigilConfig) -> AlertingConfig:
    """The alerting section with the ``alerts.webhook`` simple case folded in."""
    return effective_alerting(cfg.alerting, cfg.alerts.webhook)


def state_dir(cfg: VigilConfig) -> Path:
    """Folder of the file-backed state: ``alerting.state.dir``, else ``alerting/`` beside
    the alerts file, else ``vigil-out/alerting``."""
    st = cfg.alerting.state
    if st.dir:
        return Path(st.dir)
    f = cfg.alerts.file
    if f and f != "-":
        return Path(f).parent / "alerting"
    return Path("vigil-out") / "alerting"


def redis_url(cfg: VigilConfig, environ: Mapping[str, str]) -> str | None:
    st = cfg.alerting.state
    if st.redis_url_env:
        url = environ.get(st.redis_url_env)
        if url:
            return url
        if not st.redis_url:
            msg = f"alerting.state.redis_url_env names ${st.redis_url_env}, which is not set"
            raise ConfigError(msg)
    return st.redis_url


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def make_store(cfg: VigilConfig, environ: Mapping[str, str] | None = None) -> StateStore:
    """The state store the configuration names (Redis, else the state folder)."""
    env = os.environ if environ is None else environ
    url = redis_url(cfg, env)
    if url:
        return RedisStore(
            _redis_client(url),
            prefix=cfg.alerting.state.prefix,
            audit_maxlen=cfg.alerting.audit.stream_maxlen,
        )
    return MemoryStore(state_dir(cfg))


def make_process_store(cfg: VigilConfig, environ: Mapping[str, str]) -> StateStore:
    """The store of a running pipeline: Redis, else this process's slot of the folder."""
    if redis_url(cfg, environ):
        return make_store(cfg, environ)
    return MemoryStore(state_dir(cfg), slot=True)


def make_outbox(
    cfg: VigilConfig, environ: Mapping[str, str] | None = None, *, store: StateStore | None = None
) -> Outbox:
    """The outbox: in Redis beside the state (sharing ``store``'s client when given),
    else files under ``<state dir>/outbox``."""
    env = os.environ if environ is None else environ
    url = redis_url(cfg, env)
    if url:
        if isinstance(store, RedisStore):
            return RedisOutbox(store.r, prefix=cfg.alerting.state.prefix)
        return RedisOutbox(_redis_client(url), prefix=cfg.alerting.state.prefix, owns_client=True)
    ob = cfg.alerting.outbox
    if ob.dir:
        return FileOutbox(ob.dir)
    if isinstance(store, MemoryStore) and store.slot_dir is not None:
        outbox = FileOutbox(store.slot_dir / "outbox")
        # Items left by a process that is gone (e.g. a larger cluster before) are ours now.
        for slot in free_slots(state_dir(cfg)):
            if slot != store.slot_dir and (slot / "outbox").exists():
                outbox.adopt(slot / "outbox", time.time())
        return outbox
    return FileOutbox(state_dir(cfg) / "slots" / "0" / "outbox")


def make_route(a: AlertingConfig) -> Route:
    """The routing tree, with the timing defaults applied at the root."""
    route = a.route or RouteConfig(receiver="null")
    spec = route.model_dump(by_alias=True, exclude_none=True)
    t = a.timing
    spec.setdefault("group_wait", t.group_wait)
    spec.setdefault("group_interval", t.group_interval)
    spec.setdefault("repeat_interval", t.repeat_interval)
    return Route.build(spec)


def _ts(dt: datetime) -> float:
    return dt.astimezone(UTC).timestamp()


def static_silences(a: AlertingConfig) -> list[Silence]:
    return [
        Silence(
            id=f"config-{i}",
            matchers=parse_matchers(s.matchers),
            starts_at=_ts(s.starts_at),
            ends_at=_ts(s.ends_at),
            created_by=s.created_by,
            comment=s.comment,
        )
        for i, s in enumerate(a.silences)
    ]


def is_live(a: AlertingConfig, live_inputs: bool) -> bool:
    """Whether alert timers follow the wall clock (see ``alerting.clock``)."""
    if a.clock == "wall":
        return True
    if a.clock == "event":
        return False
    return live_inputs


def make_engine(
    a: AlertingConfig, *, clock: Clock | None = None, live: bool = False
) -> AlertEngine:
    t = a.timing
    return AlertEngine(
        make_route(a),
        receivers={
            r.name: ReceiverOptions(language=r.language, send_resolved=r.send_resolved)
            for r in a.receivers
        },
        inhibit_rules=[
            InhibitRule(
                parse_matchers(r.source_matchers), parse_matchers(r.target_matchers), tuple(r.equal)
            )
            for r in a.inhibit_rules
        ],
        maintenance_windows=[
            MaintenanceWindow(
                w.name, parse_matchers(w.matchers), tuple(w.weekdays), w.start, w.end, w.timezone
            )
            for w in a.maintenance_windows
        ],
        for_s=t.for_,
        keep_firing_for_s=t.keep_firing_for,
        resolved_retention_s=t.resolved_retention,
        templates=Templates(a.templates),
        clock=clock,
        lateness_s=t.lateness,
        live=live,
        external_url=a.external_url,
    )


_WARNED: set[str] = set()


def _warn_unsigned(receiver: str, variable: str | None) -> None:
    if receiver not in _WARNED:  # once per receiver and process
        _WARNED.add(receiver)
        log.warning(
            "insecure_unsigned: webhooks will be sent unsigned",
            extra={"receiver": receiver, "variable": variable},
        )


def _secret(environ: Mapping[str, str], name: str | None) -> str | None:
    if name is None:
        return None
    value = environ.get(name)
    return value or None


def make_integrations(
    a: AlertingConfig, environ: Mapping[str, str]
) -> dict[str, list[Integration]]:
    """Integrations per receiver; a missing required secret is a configuration error."""
    from vigil.sinks.pagerduty import PagerDutyIntegration
    from vigil.sinks.slack import SlackIntegration

    out: dict[str, list[Integration]] = {}
    for r in a.receivers:
        ints: list[Integration] = []
        if r.webhook is not None:
            secret = _secret(environ, r.webhook.secret_env)
            if secret is None and not r.webhook.insecure_unsigned:
                var = r.webhook.secret_env
                msg = (
                    f"receiver {r.name!r}: webhooks are signed, but "
                    + (f"${var} is not set: export {var}=<secret>" if var else "no secret_env")
                    + " (or set insecure_unsigned: true to send them unsigned)"
                )
                raise ConfigError(msg)
            if secret is None:
                _warn_unsigned(r.name, r.webhook.secret_env)
            ints.append(
                WebhookIntegration(
                    r.webhook.url,
                    secret=secret.encode() if secret else None,
                    timeout_s=r.webhook.timeout_s,
                    language=r.language,
                    external_url=a.external_url,
                )
            )
        if r.pagerduty is not None:
            key = _secret(environ, r.pagerduty.routing_key_env)
            if key is None:
                msg = (
                    f"receiver {r.name!r}: PagerDuty routing key variable "
                    f"${r.pagerduty.routing_key_env} is not set"
                )
                raise ConfigError(msg)
            ints.append(
                PagerDutyIntegration(
                    key,
                    url=r.pagerduty.url,
                    timeout_s=r.pagerduty.timeout_s,
                    client_url=a.external_url,
                )
            )
        if r.slack is not None:
            url = _secret(environ, r.slack.url_env)
            if url is None:
                msg = f"receiver {r.name!r}: Slack URL variable ${r.slack.url_env} is not set"
                raise ConfigError(msg)
            ints.append(
                SlackIntegration(
                    url, language=r.language, channel=r.slack.channel, timeout_s=r.slack.timeout_s
                )
            )
        out[r.name] = ints
    return out


def make_side_channels(
    a: AlertingConfig, environ: Mapping[str, str], store: StateStore
) -> list[SideChannel]:
    out: list[SideChannel] = []
    if a.alertmanager is not None:
        from vigil.sinks.alertmanager_push import AlertmanagerPush

        out.append(
            AlertmanagerPush(
                a.alertmanager.url,
                resend_s=a.alertmanager.resend,
                timeout_s=a.alertmanager.timeout_s,
            )
        )
    if a.grafana is not None:
        from vigil.sinks.grafana_annotations import GrafanaAnnotations

        g = a.grafana
        out.append(
            GrafanaAnnotations(
                g.url,
                token=_secret(environ, g.token_env),
                get_id=store.annotation_id,
                set_id=store.set_annotation_id,
                dashboard_uid=g.dashboard_uid,
                panel_id=g.panel_id,
                tags=g.tags,
                timeout_s=g.timeout_s,
            )
        )
    return out


def make_enrich(a: AlertingConfig) -> Callable[[dict[str, str], dict[str, str], float], None]:
    runbooks = dict(a.runbooks)
    dash = a.dashboard_url

    def enrich(labels: dict[str, str], ann: dict[str, str], ts: float) -> None:
        rb = runbooks.get(labels.get("alertname", ""))
        if rb:
            ann["runbook_url"] = rb
        if dash:
            values = {**labels, "from_ms": int((ts - 3600) * 1000), "to_ms": int((ts + 900) * 1000)}
            with contextlib.suppress(KeyError, ValueError, IndexError):
                ann["dashboard_url"] = dash.format_map(values)

    return enrich


def make_incidents(a: AlertingConfig) -> IncidentSettings | None:
    """The correlation stage ``alerting.incidents`` asks for (``None`` when disabled)."""
    ic = a.incidents
    if not ic.enabled:
        return None
    correlator = Correlator(
        window_s=ic.window_s,
        links=[Link.parse(ln.name, ln.match) for ln in ic.links],
        agency_label=ic.agency_label,
        retention_s=ic.retention,
    )
    receiver = ic.receiver or (a.route.receiver if a.route and a.route.receiver else "null")
    return IncidentSettings(correlator, receiver, ic.suppress_members)


def make_service(
    cfg: VigilConfig,
    *,
    registry: CollectorRegistry = REGISTRY,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
    live: bool = False,
    finite: bool = False,
) -> AlertingService:
    """The whole pipeline for ``cfg`` (not started).

    ``live``: some input is live (a followed file, syslog, the bus), so alert timers never
    fall behind the wall clock; ``finite``: every input ends, and the end of the run lets
    every episode end and be notified.
    """
    env = dict(os.environ if environ is None else environ)
    a = alerting_of(cfg)
    store = make_process_store(cfg, env)
    outbox = make_outbox(cfg, env, store=store)
    ob = a.outbox
    audit_file = a.audit.file or str(state_dir(cfg) / "audit.jsonl")
    return AlertingService(
        make_engine(a, clock=clock, live=is_live(a, live)),
        store,
        outbox,
        integrations=make_integrations(a, env),
        side_channels=make_side_channels(a, env, store),
        static_silences=static_silences(a),
        label_keys=a.labels,
        enrich=make_enrich(a),
        alerts_file=cfg.alerts.file,
        on_alert=on_alert,
        audit_file=audit_file,
        registry=registry,
        policy=RetryPolicy(
            max_attempts=ob.max_attempts,
            base_s=ob.backoff_base,
            max_s=ob.backoff_max,
            jitter=ob.jitter,
            max_age_s=ob.max_age,
        ),
        concurrency=ob.concurrency,
        lease_s=ob.lease,
        tick_s=a.timing.tick,
        drain_timeout_s=ob.drain_timeout,
        am_resend_s=a.alertmanager.resend if a.alertmanager else 60.0,
        reset=a.state.reset,
        finite=finite,
        incidents=make_incidents(a),
    )


def make_alerting_sink(
    cfg: VigilConfig,
    *,
    registry: CollectorRegistry = REGISTRY,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    environ: Mapping[str, str] | None = None,
    live: bool = False,
    finite: bool = False,
) -> AlertingSink:
    """The bytewax sink every flow's detections go to. Configuration errors (a missing
    required secret, an unreachable folder) surface here, before the flow runs."""
    env = dict(os.environ if environ is None else environ)
    a = alerting_of(cfg)
    for ints in make_integrations(a, env).values():  # fail early on missing secrets
        for integ in ints:
            integ.close()
    redis_url(cfg, env)

    def factory() -> AlertingService:
        return make_service(
            cfg, registry=registry, on_alert=on_alert, environ=env, live=live, finite=finite
        )

    return AlertingSink(factory)
