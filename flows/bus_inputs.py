"""The bus input every feed shares: where a flow reads Redis Streams, and the source it builds.

A feed's ``redis_stream`` input subclasses :class:`BusSettings` with its own parsing settings
(log lines: :class:`vigil.flows.inputs.RedisStreamInput`; queue rows:
:class:`vigil.flows.queues.config.QueueStreamInput`; indicator records:
:class:`vigil.flows.indicators.config.IndicatorStreamInput`; media items:
:class:`vigil.flows.media.config.MediaStreamInput`). Its own module, importing no
feed, so that every feed can use it (feeds never import each other).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field
from vigil.flows.config.base import Frozen
from vigil.sources.redis_streams import RedisStreamSource

from vigil.records import RawLine, stream_names

__all__ = ["BusSettings", "redis_stream_source"]


class BusSettings(Frozen):
    """Where and how a flow reads the bus: streams ``<stream>:0`` ... ``<stream>:<shards-1>``.

    Shared by every feed's ``redis_stream`` input (see the module docstring).
    See ``sources/redis_streams.py`` for positions, rewinding and trimming. Each flow needs
    its own ``group``. The password, if any, comes from the environment variable
    ``password_env``.
    """

    url: str = "redis://127.0.0.1:6379/0"
    password_env: str | None = None
    stream: str = "vigil:lines"
    shards: int = Field(default=1, ge=1, le=1024)
    group: str = "vigil"
    batch_size: int = Field(default=1000, ge=1)
    poll_interval_s: float = Field(default=0.1, gt=0)
    ack_lag: int = Field(default=2, ge=1, description="snapshots the committed position lags")
    trim: bool = True
    start: Literal["0", "$"] = "0"
    max_line_bytes: int = Field(default=65536, ge=512)


def redis_stream_source(
    inp: BusSettings,
    environ: Mapping[str, str] | None = None,
    *,
    fmt: str | None = None,
    convert: Callable[[list[RawLine]], list[Any]] | None = None,
) -> RedisStreamSource:
    """The bus source for one ``redis_stream`` input (any flow can call this).

    ``fmt`` is the format of entries without a ``fmt`` field (default: the input's
    ``format``); ``convert`` maps each batch of lines to the flow's records (see
    :class:`~vigil.sources.redis_streams.RedisStreamSource`).
    """
    url = inp.url
    if inp.password_env:
        from vigil.sinks.bus import with_password

        url = with_password(url, (environ or os.environ).get(inp.password_env))
    return RedisStreamSource(
        url,
        stream_names(inp.stream, inp.shards),
        group=inp.group,
        fmt=fmt if fmt is not None else str(getattr(inp, "format", "json")),
        batch_size=inp.batch_size,
        poll_interval_s=inp.poll_interval_s,
        ack_lag=inp.ack_lag,
        trim=inp.trim,
        start=inp.start,
        max_line_bytes=inp.max_line_bytes,
        convert=convert,
    )
