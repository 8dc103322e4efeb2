"""The composition root: the only place where configuration becomes real I/O.

``python -m bytewax.run "flows.main:flow('vigil.yaml')"`` runs the security flow with
bytewax's own runner; the ``vigil`` CLI calls :func:`build_security` directly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import REGISTRY, CollectorRegistry

from flows import security
from flows.config import (
    FileInput,
    ReplayInput,
    SecurityConfig,
    SyslogInput,
    VigilConfig,
    load_config,
    webhook_secret,
)
from flows.parsers import LineParser
from flows.records import DeadLetter, Detection, RawLine
from sinks.alerts import AlertSink
from sinks.prometheus import FlowMetrics, MetricsSink
from sinks.webhook import WebhookClient
from sources.files import FileTailSource
from sources.replay import ReplaySource
from sources.syslog import SyslogSource

log = logging.getLogger(__name__)


def make_sources(
    cfg: SecurityConfig,
    *,
    speed_override: float | str | None = "config",
    on_syslog_bound: Callable[[int], None] | None = None,
) -> list[Source[RawLine]]:
    """One bytewax source per configured input."""
    time_parser = LineParser(year=cfg.year)
    out: list[Source[RawLine]] = []
    for inp in cfg.inputs:
        if isinstance(inp, FileInput):
            out.append(
                FileTailSource(
                    inp.paths,
                    inp.format,
                    follow=inp.follow,
                    max_line_bytes=inp.max_line_bytes,
                    start_at_end=inp.start_at_end,
                )
            )
        elif isinstance(inp, SyslogInput):
            out.append(
                SyslogSource(
                    inp.host,
                    inp.port,
                    fmt=inp.format,
                    udp=inp.udp,
                    tcp=inp.tcp,
                    max_line_bytes=inp.max_line_bytes,
                    on_bound=on_syslog_bound,
                )
            )
        elif isinstance(inp, ReplayInput):
            speed = inp.speed if speed_override == "config" else speed_override
            out.append(
                ReplaySource(
                    inp.paths,
                    inp.format,
                    speed=speed if isinstance(speed, float | int) else None,
                    time_of=time_parser.event_time,
                    max_line_bytes=inp.max_line_bytes,
                )
            )
    return out


class DeadLetterSink(DynamicSink[DeadLetter]):
    """Append dead letters as JSON lines to a file (``None``: keep only the metric)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadPartition:
        return _DeadPartition(self.path)


class _DeadPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, path: str | None) -> None:
        self._fh = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "ab")  # noqa: SIM115 - closed in close()

    def write_batch(self, items: list[DeadLetter]) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(
                b"".join(
                    orjson.dumps(
                        {
                            "step": d.step,
                            "reason": d.reason,
                            "format": d.fmt,
                            "origin": d.origin,
                            "payload": d.payload,
                        }
                    )
                    + b"\n"
                    for d in items
                )
            )
            self._fh.flush()
        except OSError:
            log.exception("cannot write dead letters")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def build_security(
    cfg: VigilConfig,
    *,
    registry: CollectorRegistry = REGISTRY,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    environ: Mapping[str, str] | None = None,
    speed_override: float | str | None = "config",
    on_syslog_bound: Callable[[int], None] | None = None,
) -> tuple[Dataflow, FlowMetrics]:
    """Wire the security flow to the sources and sinks its configuration names."""
    env = dict(os.environ if environ is None else environ)
    metrics = FlowMetrics("security", registry=registry)
    wh = cfg.alerts.webhook
    factory: Callable[[], WebhookClient] | None = None
    if wh is not None:
        secret = webhook_secret(wh, env)
        if secret is None:
            log.warning(
                "webhook secret variable is not set: webhooks will be sent unsigned",
                extra={"variable": wh.secret_env},
            )
        url, timeout, attempts = wh.url, wh.timeout_s, wh.max_attempts

        def factory() -> WebhookClient:
            return WebhookClient(url, secret=secret, timeout_s=timeout, max_attempts=attempts)

    for p in (cfg.alerts.file, cfg.dead_letters.file):
        if p and p != "-":
            Path(p).parent.mkdir(parents=True, exist_ok=True)
    flow = security.build_flow(
        cfg.security,
        make_sources(cfg.security, speed_override=speed_override, on_syslog_bound=on_syslog_bound),
        AlertSink(
            jsonl_path=cfg.alerts.file,
            webhook_factory=factory,
            registry=registry,
            on_alert=on_alert,
        ),
        DeadLetterSink(cfg.dead_letters.file),
        MetricsSink(metrics),
    )
    return flow, metrics


def flow(config_path: str) -> Dataflow:
    """Entry point for ``python -m bytewax.run "flows.main:flow('vigil.yaml')"``."""
    cfg = load_config(config_path)
    f, _ = build_security(cfg)
    if cfg.metrics.enabled:
        from sinks.prometheus import serve

        serve(cfg.metrics.host, cfg.metrics.port)
    print(f"vigil: metrics on {cfg.metrics.host}:{cfg.metrics.port}", file=sys.stderr)
    return f


def replay_collect(
    cfg: SecurityConfig,
) -> tuple[list[Detection], list[DeadLetter], list[Any]]:
    """Run the security flow over its (finite) inputs in this thread and collect outputs.

    The same flow as ``vigil run``, with in-memory sinks: used by ``bench/`` and tests.
    """
    from bytewax.testing import TestingSink, run_main

    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    tele: list[Any] = []
    f = security.build_flow(
        cfg, make_sources(cfg), TestingSink(dets), TestingSink(dead), TestingSink(tele)
    )
    run_main(f)
    return dets, dead, tele
