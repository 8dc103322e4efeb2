"""The producer side of the bus: write raw lines into Redis Streams, with back-pressure.

``vigil ingest`` (files or syslog on a collector host) and ``vigil replay --to redis://...``
run a small bytewax dataflow whose input is one of Vigil's sources (file follower, syslog
receiver, replay) and whose output is :class:`BusSink`. The consumer side is
:mod:`vigil.sources.redis_streams` (input kind ``redis_stream``).
``vigil ingest --feed indicators|service_queues`` writes records of those feeds through a
:class:`BusWriter` directly, one record per entry (a ``RawLine`` whose text is one JSON
object, :func:`vigil.records.record_line`): the same sharding, back-pressure and metrics.

Sharding: a line goes to stream ``<stream>:<crc32(key) % shards>``, the key being its
``origin`` (default: the lines of one file or one syslog transport stay in order) or its
text (``shard_by="line"``: spreads a single file over all shards, without order across
shards).

Back-pressure: a stream never holds more than ``max_len`` entries because of a producer.
Producers never trim (trimming is the consumers' job, below what a resume may need, see
:mod:`vigil.sources.redis_streams`). When a stream is full, ``on_full="block"`` waits until the
consumers have trimmed enough (the file follower then simply reads later; the syslog
receiver's queue grows in memory), and ``on_full="drop"`` drops the lines that do not fit
and counts them in ``vigil_bus_dropped_total``. Lost connections are retried with backoff
until Redis is back; a batch whose reply was lost is written again, so delivery to the bus
is at-least-once (a line may rarely appear twice after a Redis failure).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from typing_extensions import override
from vigil.sinks.prometheus import get_or_create

from vigil.records import RawLine, entry_fields, stream_names

__all__ = [
    "BUS_BLOCKED",
    "BUS_DROPPED",
    "BUS_ERRORS",
    "BUS_LENGTH",
    "BUS_WRITTEN",
    "BusSink",
    "BusWriter",
    "with_password",
]

log = logging.getLogger(__name__)

BUS_WRITTEN = "vigil_bus_written_total"
BUS_DROPPED = "vigil_bus_dropped_total"
BUS_BLOCKED = "vigil_bus_blocked_seconds_total"
BUS_ERRORS = "vigil_bus_errors_total"
BUS_LENGTH = "vigil_bus_stream_length"

OnFull = Literal["block", "drop"]
ShardBy = Literal["origin", "line"]


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` set (secrets come from the environment, not the config).

    Examples
    --------
    >>> with_password("redis://h:6379/0", "s/cret")
    'redis://:s%2Fcret@h:6379/0'
    >>> with_password("redis://h:6379/0", None)
    'redis://h:6379/0'
    """
    if not password:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _default_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = get_or_create(
            Counter, BUS_WRITTEN, "Lines written to the bus.", ("stream",), registry
        )
        self.dropped = get_or_create(
            Counter, BUS_DROPPED, "Lines dropped because a stream was full.", ("stream",), registry
        )
        self.blocked = get_or_create(
            Counter,
            BUS_BLOCKED,
            "Time producers waited for room in a full stream.",
            ("stream",),
            registry,
        )
        self.errors = get_or_create(
            Counter, BUS_ERRORS, "Bus write errors, by reason.", ("reason",), registry
        )
        self.length = get_or_create(
            Gauge, BUS_LENGTH, "Entries in a stream when last checked.", ("stream",), registry
        )


class BusWriter:
    """Write ``RawLine`` records into the streams of a bus.

    Parameters
    ----------
    url
        ``redis://host:port/db``.
    stream, shards
        The bus: streams ``<stream>:0`` ... ``<stream>:<shards-1>``.
    max_len
        Most entries a stream may hold before producers wait or drop.
    on_full
        ``"block"``: wait for room; ``"drop"``: drop what does not fit, counted.
    shard_by
        ``"origin"`` keeps each origin's lines in one stream, in order; ``"line"`` spreads
        lines by a hash of their text.
    registry
        Where the ``vigil_bus_*`` metrics live.
    client_factory
        Makes the ``redis.Redis`` client (tests may inject one).
    sleep
        How to wait (tests inject a fake).
    max_wait_s
        Give up waiting for room or for Redis after this long and raise ``TimeoutError``
        (``None``: wait forever, the default for long-running producers).
    """

    def __init__(
        self,
        url: str,
        stream: str = "vigil:lines",
        shards: int = 1,
        *,
        max_len: int = 1_000_000,
        on_full: OnFull = "block",
        shard_by: ShardBy = "origin",
        registry: CollectorRegistry = REGISTRY,
        client_factory: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float | None = None,
    ) -> None:
        if on_full not in ("block", "drop"):
            msg = f"on_full must be 'block' or 'drop', got {on_full!r}"
            raise ValueError(msg)
        self.url = url
        self.stream = stream
        self.shards = shards
        self.max_len = max_len
        self.on_full = on_full
        self.shard_by = shard_by
        self._names = stream_names(stream, shards)
        self._factory = client_factory or (lambda: _default_client(url))
        self._client: Any = None
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._metrics = _Metrics(registry)
        self._lengths: dict[str, int] = {}
        self.written = 0
        self.dropped = 0

    def _shard(self, line: RawLine) -> int:
        key = line.origin if self.shard_by == "origin" else line.text
        return zlib.crc32(key.encode("utf-8", "replace")) % self.shards

    def write(self, lines: Sequence[RawLine]) -> int:
        """Write lines (blocking or dropping when a stream is full); return how many went in."""
        groups: dict[int, list[RawLine]] = {}
        if self.shards == 1:
            groups[0] = list(lines)
        else:
            for line in lines:
                groups.setdefault(self._shard(line), []).append(line)
        n = 0
        for shard, items in groups.items():
            n += self._write_stream(self._names[shard], items)
        return n

    def _write_stream(self, name: str, items: list[RawLine]) -> int:
        done = 0
        while done < len(items):
            room = self._room(name)
            if room <= 0:
                if self.on_full == "drop":
                    lost = len(items) - done
                    self.dropped += lost
                    self._metrics.dropped.labels(stream=name).inc(lost)
                    return done
                t0 = time.monotonic()
                self._wait_for_room(name)
                self._metrics.blocked.labels(stream=name).inc(time.monotonic() - t0)
                continue
            chunk = items[done : done + room]
            self._call(functools.partial(self._xadd, name=name, chunk=chunk))
            self._lengths[name] = self._lengths.get(name, 0) + len(chunk)
            done += len(chunk)
            self.written += len(chunk)
            self._metrics.written.labels(stream=name).inc(len(chunk))
        return done

    @staticmethod
    def _xadd(c: Any, *, name: str, chunk: list[RawLine]) -> None:
        pipe = c.pipeline(transaction=False)
        for line in chunk:
            pipe.xadd(name, entry_fields(line))
        pipe.execute()

    def _room(self, name: str) -> int:
        # The cached length only grows between checks (we add, consumers trim), so it is
        # refreshed when it says the stream is full and every so often otherwise.
        cached = self._lengths.get(name)
        if cached is None or cached >= self.max_len or cached % 64 == 0:
            cached = self._lengths[name] = int(self._call(lambda c: c.xlen(name)))
            self._metrics.length.labels(stream=name).set(cached)
        return self.max_len - cached

    def _wait_for_room(self, name: str) -> None:
        deadline = None if self._max_wait_s is None else time.monotonic() + self._max_wait_s
        delay = 0.01
        while True:
            length = int(self._call(lambda c: c.xlen(name)))
            self._lengths[name] = length
            self._metrics.length.labels(stream=name).set(length)
            if length < self.max_len:
                return
            if deadline is not None and time.monotonic() > deadline:
                msg = f"stream {name!r} stayed full ({length} >= {self.max_len} entries)"
                raise TimeoutError(msg)
            self._sleep(delay)
            delay = min(0.5, delay * 2)

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(client)``, reconnecting and retrying while Redis is unreachable."""
        import redis

        deadline = None if self._max_wait_s is None else time.monotonic() + self._max_wait_s
        delay = 0.05
        while True:
            try:
                if self._client is None:
                    self._client = self._factory()
                return fn(self._client)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as ex:
                self._metrics.errors.labels(reason=type(ex).__name__).inc()
                if delay == 0.05:
                    log.warning("bus: redis unreachable (%s); retrying", type(ex).__name__)
                self._reset()
                if deadline is not None and time.monotonic() > deadline:
                    raise
                self._sleep(delay)
                delay = min(2.0, delay * 2)

    def _reset(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None

    def close(self) -> None:
        """Release the connection."""
        self._reset()


class _BusPartition(StatelessSinkPartition[RawLine]):
    def __init__(self, writer: BusWriter) -> None:
        self._writer = writer

    @override
    def write_batch(self, items: list[RawLine]) -> None:
        self._writer.write(items)

    @override
    def close(self) -> None:
        self._writer.close()


class BusSink(DynamicSink[RawLine]):
    """A bytewax sink that writes every ``RawLine`` into the bus (one writer per worker).

    ``write_batch`` blocks while a stream is full (``on_full="block"``) or while Redis is
    unreachable: that is the back-pressure the upstream source sees.

    Parameters
    ----------
    writer_factory
        Makes the :class:`BusWriter` of a worker.
    """

    def __init__(self, writer_factory: Callable[[], BusWriter]) -> None:
        self.writer_factory = writer_factory

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BusPartition:
        return _BusPartition(self.writer_factory())
