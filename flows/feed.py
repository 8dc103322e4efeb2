"""The Feed contract, and the registry of feeds.

A *feed* is one kind of field data with its own package under ``flows/`` (security,
service queues, media, indicators, health). Every feed gives the same four things:

- ``name``: its name in ``vigil run NAME``, its section of the configuration file and the
  ``flow`` label of its metrics;
- ``config``: the pydantic model of that section (the whole schema,
  :class:`vigil.flows.config.VigilConfig`, is assembled from the registered feeds);
- ``attach(flow, io)``: adds its steps to the one ``Dataflow`` and returns its detections
  (with their watermarks) and its dead letters; the composition root
  (:func:`vigil.flows.main.build_flows`) sends both, merged across feeds, to the one
  alerting pipeline and the one dead-letter file. Telemetry goes to
  ``io.metrics_sink(name)``. Its inputs come from its own section;
- optionally ``commands(subparsers)``: its own ``vigil`` subcommands, and ``explain``:
  the lines ``vigil check-config`` prints about its section.

Adding a feed: write its package with a module-level ``FEED`` (a :class:`FeedSpec`), and
add one line to :data:`FEEDS`. Feeds never import each other (import-linter checks it).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import Sink
from prometheus_client import CollectorRegistry
from vigil.flows.config.base import Frozen
from vigil.flows.errors import ConfigError
from vigil.sinks.prometheus import FlowMetrics, MetricsSink

from vigil.records import DeadLetter, Detection, Watermark

#: The registered feeds, in the order their sections appear in the configuration.
#: Adding a feed is one line here.
FEEDS: tuple[str, ...] = (
    "vigil.flows.security",
    "vigil.flows.indicators",
    "vigil.flows.queues",
    "vigil.flows.media",
    "vigil.flows.health",
)


class Attached(Protocol):
    """What a feed's ``attach`` returns."""

    @property
    def detections(self) -> Stream[Detection | Watermark]: ...
    @property
    def dead(self) -> Stream[DeadLetter]: ...


@dataclass
class FeedIO:
    """What the composition root hands every feed's ``attach``.

    ``section`` is the feed's own configuration section; ``cfg`` the whole configuration.
    """

    cfg: Any
    registry: CollectorRegistry
    metrics: dict[str, FlowMetrics] = field(default_factory=dict)
    speed_override: float | str | None = "config"
    on_syslog_bound: Callable[[int], None] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def section(self, feed: str) -> Any:
        """The configuration section of ``feed``."""
        return getattr(self.cfg, feed)

    def metrics_sink(self, flow_name: str) -> MetricsSink:
        """The sink of the common telemetry (tallies, detections, dead letters) of a feed."""
        m = self.metrics.get(flow_name)
        if m is None:
            m = self.metrics[flow_name] = FlowMetrics(flow_name, registry=self.registry)
        return MetricsSink(m)


class Routed(Protocol):
    """What :func:`standalone_flow` routes: detections (no watermarks) and dead letters."""

    @property
    def detections(self) -> Stream[Detection]: ...
    @property
    def dead(self) -> Stream[DeadLetter]: ...


def standalone_flow(
    name: str,
    add: Callable[[Dataflow], Routed],
    alert_sink: Sink[Detection],
    dead_sink: Sink[DeadLetter],
) -> Dataflow:
    """One feed's dataflow on its own, for tests and replays (each feed's ``build_flow``).

    A new ``Dataflow(name)``; ``add`` adds the feed's steps (and any outputs of its own)
    and returns its streams; detections go to ``alert_sink`` (step ``alerts_out``) and
    dead letters to ``dead_sink`` (step ``dead_out``).
    """
    flow = Dataflow(name)
    s = add(flow)
    op.output("alerts_out", s.detections, alert_sink)
    op.output("dead_out", s.dead, dead_sink)
    return flow


class Feed(Protocol):
    """The contract every feed meets (see the module docstring)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> type[Frozen]: ...
    @property
    def summary(self) -> str: ...
    def attach(self, flow: Dataflow, io: FeedIO) -> Attached: ...
    def explain(self, section: Any) -> list[str]: ...
    def commands(self, subparsers: Any) -> None: ...


def _no_commands(subparsers: Any) -> None:
    return None


@dataclass(frozen=True)
class FeedSpec:
    """A :class:`Feed` from plain functions: what each feed package exports as ``FEED``."""

    name: str
    config: type[Frozen]
    summary: str
    attach_fn: Callable[[Dataflow, FeedIO], Attached]
    explain_fn: Callable[[Any], list[str]] | None = None
    commands_fn: Callable[[Any], None] = _no_commands

    def attach(self, flow: Dataflow, io: FeedIO) -> Attached:
        return self.attach_fn(flow, io)

    def explain(self, section: Any) -> list[str]:
        if self.explain_fn is not None:
            return self.explain_fn(section)
        n = len(getattr(section, "inputs", ()) or ())
        return [f"{self.name} inputs: {n}"] if n else []

    def commands(self, subparsers: Any) -> None:
        self.commands_fn(subparsers)


def feeds() -> list[Feed]:
    """The registered feeds (importing each package's ``FEED``)."""
    return [importlib.import_module(mod).FEED for mod in FEEDS]


def feed_names() -> list[str]:
    return [f.name for f in feeds()]


def get_feed(name: str) -> Feed:
    """The feed called ``name``; a :class:`ConfigError` naming the known ones otherwise."""
    for f in feeds():
        if f.name == name:
            return f
    msg = f"unknown flow {name!r}; available: {feed_names()}"
    raise ConfigError(msg)
