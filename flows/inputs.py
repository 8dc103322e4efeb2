"""Line inputs: the input kinds of feeds that read log lines, and the sources built from them.

Every feed whose ``inputs:`` take this union (security, service queues) can read files,
syslog, replays, the bus (Redis Streams) and Kafka. Each input's ``name`` keys its
recovery state (see :func:`vigil.flows.config.base.input_step_ids`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, Protocol

from bytewax.inputs import Source
from pydantic import Field
from vigil.flows.bus_inputs import BusSettings, redis_stream_source
from vigil.flows.config.base import Frozen, InputName
from vigil.flows.errors import ConfigError
from vigil.sources.files import FileTailSource
from vigil.sources.replay import ReplaySource
from vigil.sources.syslog import SyslogSource

from vigil.records import RawLine

__all__ = [
    "BusSettings",
    "FileInput",
    "InputConfig",
    "KafkaInput",
    "RedisStreamInput",
    "ReplayInput",
    "SyslogInput",
    "make_sources",
    "redis_stream_source",
]

Format = Literal[
    "ssh", "syslog", "zeek", "suricata", "iptables", "ufw", "access", "nginx", "apache"
]


# ---------------------------------------------------------------- inputs
class FileInput(Frozen):
    """Read files matching glob patterns; with ``follow`` keep reading like ``tail -F``."""

    kind: Literal["file"] = "file"
    name: str | None = InputName
    paths: tuple[str, ...] = Field(min_length=1)
    format: Format
    follow: bool = False
    start_at_end: bool = False
    max_line_bytes: int = Field(default=65536, ge=512)


class SyslogInput(Frozen):
    """Listen for syslog (RFC 3164 / RFC 5424) on UDP and/or TCP."""

    kind: Literal["syslog"] = "syslog"
    name: str | None = InputName
    host: str = "127.0.0.1"
    port: int = Field(default=5514, ge=0, le=65535)
    udp: bool = True
    tcp: bool = True
    format: Format = "ssh"
    max_line_bytes: int = Field(default=65536, ge=512)


class ReplayInput(Frozen):
    """Replay recorded files as a live feed, in event-time order, at ``speed`` x real time."""

    kind: Literal["replay"] = "replay"
    name: str | None = InputName
    paths: tuple[str, ...] = Field(min_length=1)
    format: Format
    speed: float | None = Field(default=None, gt=0)
    max_line_bytes: int = Field(default=65536, ge=512)


class RedisStreamInput(BusSettings):
    """Read log lines from the bus (see :class:`BusSettings`)."""

    kind: Literal["redis_stream"] = "redis_stream"
    name: str | None = InputName
    format: Format = Field(default="ssh", description="for entries without a fmt field")


class KafkaInput(Frozen):
    """Read Kafka topics, one line per message (needs the ``kafka`` extra; untested here)."""

    kind: Literal["kafka"] = "kafka"
    name: str | None = InputName
    brokers: tuple[str, ...] = Field(min_length=1)
    topics: tuple[str, ...] = Field(min_length=1)
    format: Format = "ssh"
    batch_size: int = Field(default=1000, ge=1)
    poll_interval_s: float = Field(default=0.1, gt=0)
    add_config: dict[str, str] = Field(default_factory=dict, description="consumer settings")
    max_line_bytes: int = Field(default=65536, ge=512)


InputConfig = Annotated[
    FileInput | SyslogInput | ReplayInput | RedisStreamInput | KafkaInput,
    Field(discriminator="kind"),
]


class LineInputs(Protocol):
    """A configuration section with line ``inputs`` (and the year of syslog lines)."""

    @property
    def inputs(self) -> tuple[InputConfig, ...]: ...
    @property
    def year(self) -> int | None: ...


def make_sources(
    cfg: LineInputs,
    *,
    speed_override: float | str | None = "config",
    on_syslog_bound: Callable[[int], None] | None = None,
) -> list[Source[RawLine]]:
    """One bytewax source per configured input."""
    # The line parsers give a replay its event times; imported here because the security
    # feed's config imports this module's input models.
    from vigil.flows.security.parsers import LineParser

    time_parser = LineParser(year=cfg.year, timezone=getattr(cfg, "timezone", "UTC"))
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
