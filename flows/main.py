"""The composition root: the only place where configuration becomes real I/O.

``python -m bytewax.run "vigil.flows.main:flow('vigil.yaml')"`` runs the security feed with
bytewax's own runner; the ``vigil`` CLI calls :func:`build_flows` directly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from prometheus_client import REGISTRY, CollectorRegistry
from vigil.flows.config import VigilConfig, load_config
from vigil.flows.feed import FeedIO, get_feed
from vigil.flows.inputs import make_sources
from vigil.flows.security import flow as security
from vigil.flows.security.config import SecurityConfig
from vigil.sinks.jsonl import open_append
from vigil.sources.stop import stoppable_flow

from vigil.records import DeadLetter, Detection, Watermark

log = logging.getLogger(__name__)


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
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            self._fh.write(
                b"".join(
                    orjson.dumps(
                        {
                            "at": at,  # when it was dead-lettered (wall clock, UTC)
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
) -> tuple[Dataflow, FeedIO]:
    """One dataflow running the named feeds, wired to the sinks the configuration names.

    Each feed's ``attach`` (:mod:`vigil.flows.feed`) adds its steps; their detections and
    dead letters are merged into one alerting sink and one dead-letter file.
    """
    env = dict(os.environ if environ is None else environ)
    io = FeedIO(
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
        out = get_feed(name).attach(flow, io)
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
    stoppable_flow(flow)  # Ctrl-C/SIGTERM end the inputs: sinks flush (sources/stop.py)
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
