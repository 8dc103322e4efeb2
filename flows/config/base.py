"""Base pieces of the configuration schema, shared by every section's module.

The schema is one tree (:class:`vigil.flows.config.VigilConfig`); each flow's section lives in its
own module (``flows/config_<area>.py``) so flows can grow without editing one large file.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from vigil.flows.config.shards import shard_label
from vigil.flows.errors import ConfigError

Severity = Literal["info", "warning", "high", "critical"]


class Frozen(BaseModel):
    """Frozen, and unknown keys are errors (reported with their path)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


#: ``name`` of an input: names its recovery state (the bytewax step id), so it must stay
#: the same across restarts; default: derived from the input's kind and where it reads.
InputName = Field(
    default=None,
    pattern=r"^[A-Za-z0-9_]{1,60}$",
    description="stable id of this input's recovery state (default: from kind and paths)",
)

_SLUG = re.compile(r"[^a-z0-9]+")


def known_zone(v: str | None) -> str | None:
    """A field validator: ``v`` names an IANA time zone (``None`` passes)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if v is not None:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as ex:
            msg = f"unknown time zone {v!r}"
            raise ValueError(msg) from ex
    return v


def _derived_name(inp: Any) -> str:
    """``<kind>_<what it reads>``: the first path's file name, a stream, a host and port."""
    kind = str(getattr(inp, "kind", "input"))
    paths = getattr(inp, "paths", None)
    if paths:
        what = PurePath(str(paths[0])).name
    elif getattr(inp, "stream", None):
        what = str(inp.stream)
    elif getattr(inp, "topics", None):
        what = str(inp.topics[0])
    elif getattr(inp, "url", None):
        what = str(inp.url).split("//", 1)[-1]
    elif getattr(inp, "port", None) is not None:
        what = f"{getattr(inp, 'host', '')}_{inp.port}"
    else:
        what = ""
    slug = _SLUG.sub("_", what.lower()).strip("_")[:48]
    return f"{kind}_{slug}" if slug else kind


def input_step_ids(feed: str, inputs: Sequence[Any], n: int) -> list[str]:
    """Step ids of a feed's ``n`` inputs, ``<feed>_in_<name>``, from each input's ``name``.

    Recovery state (file offsets, stream positions) is stored under the step id, so it
    must not depend on the order of ``inputs``: reordering them keeps every input's state.
    An input without a ``name`` gets one from its kind and what it reads; two inputs with
    the same derived name get ``_2``, ``_3`` ... in order (name them to be safe). When the
    sources do not come from ``inputs`` (tests), ids fall back to positions.

    >>> from types import SimpleNamespace as NS
    >>> a = NS(kind="file", paths=("/var/log/auth.log",), name=None)
    >>> b = NS(kind="syslog", host="0.0.0.0", port=5514, name="edge")
    >>> input_step_ids("security", [a, b], 2)
    ['security_in_file_auth_log', 'security_in_edge']
    >>> input_step_ids("security", [b, a], 2)
    ['security_in_edge', 'security_in_file_auth_log']
    """
    if len(inputs) != n:
        return [f"{feed}_in_{i}" for i in range(n)]
    explicit = [getattr(inp, "name", None) for inp in inputs]
    dupes = {x for x in explicit if x is not None and explicit.count(x) > 1}
    if dupes:
        msg = f"{feed}.inputs: two inputs have the name {sorted(dupes)[0]!r}; names must differ"
        raise ConfigError(msg)
    taken = {x for x in explicit if x is not None}
    out = []
    for inp, name in zip(inputs, explicit, strict=True):
        if name is None:
            base = name = _derived_name(inp)
            k = 2
            while name in taken:
                name = f"{base}_{k}"
                k += 1
        taken.add(name)
        out.append(f"{feed}_in_{name}")
    return out


def shard_of(key: str, shards: int) -> str:
    """The shard of a key (a source address, an agency, a series), as the feeds key their
    stateful steps: stable across processes (unlike ``hash``), so every worker routes alike,
    and labelled so that bytewax gives every worker an equal share of the shards
    (:mod:`vigil.flows.config.shards`).

    >>> shard_of("203.0.113.7", 16) == shard_of("203.0.113.7", 16)
    True
    """
    return shard_label(zlib.crc32(key.encode()) % shards, shards)


def kind_or(default: str) -> Callable[[Any], str]:
    """A pydantic discriminator: an input's ``kind``, or ``default`` when it has none (a
    configuration written before the feed could read the bus).

    >>> kind_or("replay")({"paths": ["a.csv"]}), kind_or("replay")({"kind": "redis_stream"})
    ('replay', 'redis_stream')
    """

    def kind(v: Any) -> str:
        if isinstance(v, dict):
            return str(v.get("kind", default))
        return str(getattr(v, "kind", default))

    return kind
