"""The composition root: the only place where configuration becomes real I/O.

``python -m bytewax.run "vigil.flows.main:flow('vigil.yaml')"`` runs the security flow with
bytewax's own runner; the ``vigil`` CLI calls :func:`build_security` directly.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from prometheus_client import REGISTRY, CollectorRegistry
from vigil.flows import security
from vigil.flows.config import (
    FileInput,
    KafkaInput,
    RedisStreamInput,
    ReplayInput,
    SecurityConfig,
    SyslogInput,
    VigilConfig,
    load_config,
)
from vigil.flows.errors import ConfigError
from vigil.flows.parsers import LineParser
from vigil.sinks.jsonl import open_append
from vigil.sinks.prometheus import FlowMetrics, MetricsSink
from vigil.sources.files import FileTailSource
from vigil.sources.redis_streams import RedisStreamSource, stream_names
from vigil.sources.replay import ReplaySource
from vigil.sources.syslog import SyslogSource

from vigil.records import DeadLetter, Detection, RawLine, Watermark

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
        elif isinstance(inp, RedisStreamInput):
            out.append(redis_stream_source(inp))
        elif isinstance(inp, KafkaInput):
            from vigil.sources.kafka import KafkaLineSource

            try:
                out.append(
                    KafkaLineSource(
                        inp.brokers,
                        inp.topics,
                        fmt=inp.format,
                        batch_size=inp.batch_size,
                        poll_interval_s=inp.poll_interval_s,
                        add_config=inp.add_config,
                        max_line_bytes=inp.max_line_bytes,
                    )
                )
            except ImportError as ex:
                raise ConfigError(str(ex)) from ex
    return out


def redis_stream_source(
    inp: RedisStreamInput, environ: Mapping[str, str] | None = None
) -> RedisStreamSource:
    """The bus source for one ``redis_stream`` input (any flow can call this)."""
    url = inp.url
    if inp.password_env:
        from vigil.flows.bus import with_password

        url = with_password(url, (environ or os.environ).get(inp.password_env))
    return RedisStreamSource(
        url,
        stream_names(inp.stream, inp.shards),
        group=inp.group,
        fmt=inp.format,
        batch_size=inp.batch_size,
        poll_interval_s=inp.poll_interval_s,
        ack_lag=inp.ack_lag,
        trim=inp.trim,
        start=inp.start,
        max_line_bytes=inp.max_line_bytes,
    )


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
            self._fh = open_append(path)  # closed in close()

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


@dataclass
class FlowIO:
    """What the composition root hands every flow's ``attach``.

    Flows add their own inputs (from their config section) and send their telemetry to
    ``metrics_sink(flow_name)``; they return detections and dead letters, which the root
    merges across flows into one alert path and one dead-letter file.
    """

    cfg: VigilConfig
    registry: CollectorRegistry
    metrics: dict[str, FlowMetrics] = field(default_factory=dict)
    speed_override: float | str | None = "config"
    on_syslog_bound: Callable[[int], None] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def metrics_sink(self, flow_name: str) -> MetricsSink:
        m = self.metrics.get(flow_name)
        if m is None:
            m = self.metrics[flow_name] = FlowMetrics(flow_name, registry=self.registry)
        return MetricsSink(m)


class Attached(Protocol):
    @property
    def detections(self) -> Stream[Detection | Watermark]: ...
    @property
    def dead(self) -> Stream[DeadLetter]: ...


def _attach_security(flow: Dataflow, io: FlowIO) -> Attached:
    cfg = io.cfg.security
    srcs = make_sources(cfg, speed_override=io.speed_override, on_syslog_bound=io.on_syslog_bound)
    return security.attach(flow, cfg, srcs, io.metrics_sink("security"))


#: Flow name -> "module:function" of its attach(flow, io) -> Attached. A module that is not
#: there yet makes its flow unavailable, not the CLI.
FLOWS: dict[str, str] = {
    "security": "vigil.flows.main:_attach_security",
    "indicators": "vigil.flows.indicators:attach",
    "service_queues": "vigil.flows.service_queues:attach",
    "media": "vigil.flows.media:attach",
    "health": "vigil.flows.health:attach",
}


def available_flows() -> list[str]:
    out = []
    for name, target in FLOWS.items():
        mod = target.split(":")[0]
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def input_liveness(cfg: VigilConfig, names: Sequence[str]) -> tuple[bool, bool]:
    """(live, finite) of the inputs of the named flows.

    ``live``: some input delivers data as it happens (a followed file, syslog, the bus,
    Kafka, RSS or HTTP polling), so alert timers follow the wall clock too; ``finite``:
    every input ends (replays, files read once), so the end of the run ends every episode.
    """
    live = False
    finite = True
    for name in names:
        section = getattr(cfg, name, None)
        for inp in getattr(section, "inputs", ()) or ():
            kind = getattr(inp, "kind", "")
            if kind == "replay" or (kind == "file" and not getattr(inp, "follow", False)):
                continue
            live, finite = True, False
    return live, finite


def make_alert_sink(
    cfg: VigilConfig,
    *,
    registry: CollectorRegistry,
    on_alert: Callable[[dict[str, Any]], None] | None,
    environ: Mapping[str, str],
    live: bool = False,
    finite: bool = False,
) -> Sink[Detection | Watermark]:
    """The sink every flow's detections go to: the alerting pipeline (sinks/alerting).

    Detections become alerts (lifecycle, grouping, routing, silences, inhibition), each
    alert that starts firing is appended to ``alerts.file`` and passed to ``on_alert``,
    and notifications go through the outbox to the configured receivers
    (``alerting.receivers``, or ``alerts.webhook`` as the receiver ``default``).
    """
    from vigil.flows.alerting_wiring import make_alerting_sink

    return make_alerting_sink(
        cfg, registry=registry, on_alert=on_alert, environ=environ, live=live, finite=finite
    )


def build_flows(
    names: Sequence[str],
    cfg: VigilConfig,
    *,
    registry: CollectorRegistry = REGISTRY,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    environ: Mapping[str, str] | None = None,
    speed_override: float | str | None = "config",
    on_syslog_bound: Callable[[int], None] | None = None,
) -> tuple[Dataflow, FlowIO]:
    """One dataflow running the named flows, wired to the sinks the configuration names."""
    env = dict(os.environ if environ is None else environ)
    io = FlowIO(
        cfg,
        registry,
        speed_override=speed_override,
        on_syslog_bound=on_syslog_bound,
        environ=env,
    )
    flow = Dataflow("vigil")
    dets: list[Stream[Detection | Watermark]] = []
    dead: list[Stream[DeadLetter]] = []
    for name in names:
        target = FLOWS.get(name)
        if target is None:
            msg = f"unknown flow {name!r}; available: {available_flows()}"
            raise ConfigError(msg)
        mod_name, fn_name = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as ex:
            msg = f"flow {name!r} is not available in this version"
            raise ConfigError(msg) from ex
        out = getattr(mod, fn_name)(flow, io)
        dets.append(out.detections)
        dead.append(out.dead)
    if cfg.dead_letters.file and cfg.dead_letters.file != "-":
        Path(cfg.dead_letters.file).parent.mkdir(parents=True, exist_ok=True)
    all_dets = dets[0] if len(dets) == 1 else op.merge("all_detections", *dets)
    all_dead = dead[0] if len(dead) == 1 else op.merge("all_dead", *dead)
    live, finite = input_liveness(cfg, names)
    op.output(
        "alerts_out",
        all_dets,
        make_alert_sink(
            cfg, registry=registry, on_alert=on_alert, environ=env, live=live, finite=finite
        ),
    )
    op.output("dead_out", all_dead, DeadLetterSink(cfg.dead_letters.file))
    return flow, io


def flow(config_path: str, flows: str = "security") -> Dataflow:
    """Entry point for ``python -m bytewax.run "vigil.flows.main:flow('vigil.yaml')"``.

    ``flows`` is a comma-separated list of flow names.
    """
    cfg = load_config(config_path)
    f, _ = build_flows(flows.split(","), cfg)
    if cfg.metrics.enabled:
        from vigil.sinks.prometheus import serve

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
