"""Read :class:`~vigil.records.RawLine` records from Redis Streams, one stream per partition.

The bus layout
--------------
A *bus* is ``shards`` streams named ``<stream>:0`` ... ``<stream>:<shards-1>``. Each entry
holds the fields of a ``RawLine``: ``fmt``, ``origin``, ``text`` and optionally ``ref_ts``
(float seconds) and ``oversize`` (``"1"``). Producers (``vigil ingest``, ``vigil replay
--to``, see :mod:`vigil.sinks.bus`) write them; every flow can read them through the input kind
``redis_stream``.

Records of the other feeds travel the same way, one record per entry: ``text`` is one JSON
object (a JSON line as it was, or a CSV row as ``{column: value}``) and ``fmt`` says which
(``json`` or ``csv_row``); see :func:`vigil.records.record_line`. A flow turns the lines of a
batch into its own records with the ``convert`` it passes in; positions, rewinding,
trimming and back-pressure are the same for every feed.

Positions, snapshots and rewinding
----------------------------------
Each stream is one bytewax partition, read by one worker as consumer ``<group>`` of the
consumer group ``<group>`` (one group per flow). The *position* of a partition is the id of
the last entry it emitted, and that id is the partition's bytewax snapshot
(:class:`StreamPosition`). On every (re)connection the partition runs ``XGROUP SETID`` to
its own position, so after a resume from a snapshot the entries after the snapshot are read
again even though the crashed run had already had them delivered: nothing after the last
snapshot is lost, and the dataflow's state (restored from the same snapshot) sees each entry
once. Entries are read with ``XREADGROUP ... NOACK``: the snapshot, not Redis' pending-entries
list, is the record of what was processed, so the PEL stays empty and costs nothing.

Never blocking a worker
-----------------------
``XREADGROUP`` is sent without ``BLOCK`` (or with the small ``block_ms`` given). An empty
read returns ``[]`` and sets ``next_awake`` a poll interval ahead; a lost connection is
logged, counted, and retried with exponential backoff (up to 2 s) through ``next_awake``,
never by sleeping. The client does no retries of its own, and its socket timeouts are short.

Trimming
--------
Streams are trimmed by the consumers, never by producers (producers bound the length with
back-pressure instead, see :mod:`vigil.sinks.bus`). A resume restarts from the *last committed*
bytewax snapshot, which may be older than the last one taken: bytewax commits an epoch once
every worker has finished it. So a partition publishes as *committed* the position of the
snapshot ``ack_lag`` snapshots back (default 2: with bytewax's one-epoch-in-flight input
this is at least one epoch behind the oldest snapshot a resume may use), in the hash
``<stream>:committed`` (field = group). It then trims with ``XTRIM <stream> MINID ~ <bound>``
where ``bound`` is the smallest of: the committed position of every group in that hash, and,
for any other consumer group on the stream (not Vigil's), its oldest pending entry or its
last delivered id. ``MINID`` removes only entries *older* than the bound and ``~`` lets Redis
remove fewer, never more. A group that no longer runs keeps its field in the hash and so
holds the stream back: delete the field (``HDEL <stream>:committed <group>``) when you
retire a flow.

Reconnecting
------------
After a Redis restart (run Redis with ``appendonly yes`` so streams and groups survive) the
partition reconnects, re-creates the group if it is missing (``MKSTREAM`` at its position)
and sets it to its own position, then carries on. Nothing emitted is read twice and nothing
after the position is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override
from vigil.sources.files import oversize_line

from vigil.records import RawLine

__all__ = [
    "RedisStreamSource",
    "StreamPosition",
    "committed_key",
    "id_key",
]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 2.0


def committed_key(stream: str) -> str:
    """The hash holding each group's committed position on ``stream``.

    >>> committed_key("vigil:lines:0")
    'vigil:lines:0:committed'
    """
    return f"{stream}:committed"


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair.

    Examples
    --------
    >>> id_key("1700000000000-3") < id_key("1700000000001-0")
    True
    >>> id_key("0")
    (0, 0)
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _decode(b: Any) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def _to_line(
    fields: dict[bytes, bytes], default_fmt: str, default_origin: str, max_line_bytes: int
) -> RawLine:
    """One entry's fields as a ``RawLine``. Missing fields take defaults; bad ones never raise."""
    fmt = fields.get(b"fmt")
    origin = fields.get(b"origin")
    text = fields.get(b"text", b"")
    ref_ts = 0.0
    raw_ts = fields.get(b"ref_ts")
    if raw_ts is not None:
        try:
            ref_ts = float(raw_ts)
        except ValueError:
            ref_ts = 0.0
        if not math.isfinite(ref_ts):
            ref_ts = 0.0
    f = _decode(fmt) if fmt is not None else default_fmt
    o = _decode(origin) if origin is not None else default_origin
    if len(text) > max_line_bytes:
        return oversize_line(f, o, text, ref_ts)
    return RawLine(f, o, _decode(text), ref_ts, fields.get(b"oversize") == b"1")


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Resume position of one stream: the id of the last entry emitted.

    Parameters
    ----------
    last_id
        ``"0-0"`` when nothing was emitted yet and the partition starts at the beginning.
    """

    last_id: str = "0-0"


def _default_client(url: str) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries inside the client: a retry loop there would block the worker. Reconnection
    # is driven by next_awake instead. Short timeouts for the same reason.
    return redis.Redis.from_url(
        url, socket_timeout=2.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


class _StreamPartition(StatefulSourcePartition[Any, StreamPosition | None]):
    def __init__(
        self,
        client_factory: Callable[[], Any],
        stream: str,
        *,
        group: str,
        fmt: str,
        batch_size: int,
        poll_interval_s: float,
        block_ms: int | None,
        ack_lag: int,
        trim: bool,
        start: str,
        max_line_bytes: int,
        resume_state: StreamPosition | None,
        on_error: Callable[[str], None] | None,
        convert: Callable[[list[RawLine]], list[Any]] | None = None,
    ) -> None:
        self._factory = client_factory
        self._stream = stream
        self._group = group
        self._fmt = fmt
        self._origin = f"redis:{stream}"
        self._batch_size = batch_size
        self._poll = timedelta(seconds=poll_interval_s)
        self._block_ms = block_ms
        self._ack_lag = ack_lag
        self._trim = trim
        self._start = start
        self._max = max_line_bytes
        self._on_error = on_error
        self._convert = convert
        self._client: Any = None
        self._ready = False
        self._backoff = 0.05
        self._next_awake: datetime | None = None
        self._resumed = resume_state is not None
        self._pos = resume_state.last_id if resume_state is not None else None
        # Positions of the last snapshots, newest last; the oldest one becomes committed.
        self._snaps: deque[str] = deque()
        self._connect()

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> bool:
        """(Re)connect and point the group at our position. False if Redis is unreachable."""
        import redis

        try:
            if self._client is None:
                self._client = self._factory()
            c = self._client
            if self._pos is None:
                # A new partition: continue from the group's committed position if the
                # group existed already (a restart without a recovery directory), else
                # from the configured start.
                prev = c.hget(committed_key(self._stream), self._group)
                if prev is not None:
                    self._pos = _decode(prev)
                elif self._start == "$":
                    info = self._last_generated(c)
                    self._pos = info
                else:
                    self._pos = "0-0"
                c.hset(committed_key(self._stream), self._group, self._pos)
            try:
                c.xgroup_create(self._stream, self._group, id=self._pos, mkstream=True)
            except redis.ResponseError as ex:
                if "BUSYGROUP" not in str(ex):
                    raise
                c.xgroup_setid(self._stream, self._group, id=self._pos)
            if self._resumed:
                # From now on protect everything after the position we resume from.
                prev = c.hget(committed_key(self._stream), self._group)
                if prev is None or id_key(_decode(prev)) > id_key(self._pos):
                    if prev is not None and self._first_id(c) > id_key(self._pos):
                        # Committed ran ahead of the snapshot we resume from: entries in
                        # between may have been trimmed. Say so loudly.
                        log.error(
                            "redis stream %s: resuming at %s but %s was committed and "
                            "trimmed up to; raise ack_lag",
                            self._stream,
                            self._pos,
                            _decode(prev),
                        )
                    c.hset(committed_key(self._stream), self._group, self._pos)
                self._resumed = False
        except (redis.ConnectionError, redis.TimeoutError, OSError) as ex:
            self._lost(ex)
            return False
        self._ready = True
        self._backoff = 0.05
        return True

    def _first_id(self, c: Any) -> tuple[int, int]:
        first = c.xrange(self._stream, count=1)
        return id_key(_decode(first[0][0])) if first else (0, 0)

    def _last_generated(self, c: Any) -> str:
        try:
            info = c.xinfo_stream(self._stream)
        except Exception:  # no such stream yet: everything will be new
            return "0-0"
        return _decode(info.get("last-generated-id", b"0-0"))

    def _lost(self, ex: BaseException) -> None:
        if self._ready or self._backoff <= 0.05:
            log.warning(
                "redis stream %s: connection lost (%s); retrying", self._stream, type(ex).__name__
            )
        if self._on_error is not None:
            self._on_error(type(ex).__name__)
        self._ready = False
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None
        self._next_awake = datetime.now(UTC) + timedelta(seconds=self._backoff)
        self._backoff = min(_MAX_BACKOFF_S, self._backoff * 2)

    # -- bytewax API --------------------------------------------------------------------

    @override
    def next_batch(self) -> list[Any]:
        import redis

        if not self._ready and not self._connect():
            return []
        try:
            resp = self._client.xreadgroup(
                self._group,
                self._group,
                {self._stream: ">"},
                count=self._batch_size,
                block=self._block_ms,
                noack=True,
            )
        except redis.ResponseError as ex:
            if "NOGROUP" in str(ex):  # Redis lost the group (restarted without AOF)
                self._ready = False
                self._next_awake = None
                return []
            raise
        except (redis.ConnectionError, redis.TimeoutError, OSError) as ex:
            self._lost(ex)
            return []
        if not resp:
            self._next_awake = datetime.now(UTC) + self._poll
            return []
        entries = resp[0][1] if isinstance(resp, list) else next(iter(resp.values()))[0]
        if not entries:
            self._next_awake = datetime.now(UTC) + self._poll
            return []
        fmt, origin, mx = self._fmt, self._origin, self._max
        out = [_to_line(fields, fmt, origin, mx) for _, fields in entries]
        self._pos = _decode(entries[-1][0])
        # A full batch means more is probably waiting: read again at once.
        self._next_awake = (
            None if len(entries) >= self._batch_size else datetime.now(UTC) + self._poll
        )
        if self._convert is not None:
            return self._convert(out)
        return out

    @override
    def next_awake(self) -> datetime | None:
        return self._next_awake

    @override
    def snapshot(self) -> StreamPosition | None:
        pos = self._pos
        if pos is None:
            # Never connected yet: no position of our own. A resume then starts like a
            # fresh partition, from the group's committed position.
            return None
        self._snaps.append(pos)
        if len(self._snaps) > self._ack_lag:
            self._commit(self._snaps.popleft())
        return StreamPosition(pos)

    def _commit(self, pos: str) -> None:
        """Publish ``pos`` as committed and trim what no group needs any more."""
        import redis

        if not self._ready:
            return
        c = self._client
        try:
            c.hset(committed_key(self._stream), self._group, pos)
            if self._trim:
                bound = self._trim_bound(c)
                if bound is not None and bound != (0, 0):
                    c.xtrim(self._stream, minid=f"{bound[0]}-{bound[1]}", approximate=True)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as ex:
            self._lost(ex)

    def _trim_bound(self, c: Any) -> tuple[int, int] | None:
        committed = c.hgetall(committed_key(self._stream))
        ours = {_decode(k) for k in committed}
        bounds = [id_key(_decode(v)) for v in committed.values()]
        for g in c.xinfo_groups(self._stream):
            name = _decode(g["name"])
            if name in ours:
                continue
            # A consumer group that is not Vigil's: keep what it has not read or acked.
            if g.get("pending", 0):
                summary = c.xpending(self._stream, name)
                bounds.append(id_key(_decode(summary["min"])))
            else:
                bounds.append(id_key(_decode(g["last-delivered-id"])))
        return min(bounds) if bounds else None

    @override
    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


class RedisStreamSource(FixedPartitionedSource[Any, StreamPosition | None]):
    """Read raw lines from Redis Streams through a consumer group (see the module docstring).

    One partition per stream; bytewax spreads partitions over the workers of all processes,
    so ``shards`` is the most workers that can read in parallel.

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db``.
    streams
        Stream names (see :func:`vigil.records.stream_names`).
    group
        Consumer group; one per flow reading the bus.
    fmt
        Format of entries that carry no ``fmt`` field.
    batch_size
        Most entries read per ``next_batch`` (``COUNT``).
    poll_interval_s
        Wait after an empty read before reading again.
    block_ms
        ``BLOCK`` for ``XREADGROUP``; ``None`` (default) sends none. Never use 0 (forever).
    ack_lag
        How many snapshots back the committed position lags (see Trimming).
    trim
        Trim streams below the smallest committed position of all groups.
    start
        Where a new group starts when there is no resume state and no committed position:
        ``"0"`` the beginning of the stream, ``"$"`` only entries added from now on.
    max_line_bytes
        A longer ``text`` becomes one ``RawLine(oversize=True)`` with its first 512
        characters.
    client_factory
        Makes the ``redis.Redis`` client of a partition (tests inject their own).
    on_error
        Called with the exception's class name whenever the connection is lost.
    convert
        Maps the lines of each batch to the flow's records (a feed's mapping or parser,
        built by the flow); it must not raise (wrap it in :func:`vigil.flows.guard.guard_batch`).
        ``None``: emit the ``RawLine`` records themselves.

    Examples
    --------
    >>> from vigil.records import stream_names
    >>> RedisStreamSource("redis://127.0.0.1:6379/0", stream_names("bus", 2)).list_parts()
    ['bus:0', 'bus:1']
    """

    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        *,
        group: str = "vigil",
        fmt: str = "ssh",
        batch_size: int = 1000,
        poll_interval_s: float = 0.1,
        block_ms: int | None = None,
        ack_lag: int = 2,
        trim: bool = True,
        start: str = "0",
        max_line_bytes: int = 65536,
        client_factory: Callable[[], Any] | None = None,
        on_error: Callable[[str], None] | None = None,
        convert: Callable[[list[RawLine]], list[Any]] | None = None,
    ) -> None:
        if isinstance(streams, str):
            msg = f"streams must be a sequence of names, not the string {streams!r}"
            raise TypeError(msg)
        if block_ms is not None and block_ms <= 0:
            msg = f"block_ms must be None or > 0 (0 blocks forever), got {block_ms!r}"
            raise ValueError(msg)
        if start not in ("0", "$"):
            msg = f"start must be '0' or '$', got {start!r}"
            raise ValueError(msg)
        self.url = url
        self.streams = tuple(streams)
        self.group = group
        self.fmt = fmt
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.block_ms = block_ms
        self.ack_lag = ack_lag
        self.trim = trim
        self.start = start
        self.max_line_bytes = max_line_bytes
        self.client_factory = client_factory
        self.on_error = on_error
        self.convert = convert

    @override
    def list_parts(self) -> list[str]:
        return list(self.streams)

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: StreamPosition | None
    ) -> _StreamPartition:
        url = self.url
        factory = self.client_factory or (lambda: _default_client(url))
        return _StreamPartition(
            factory,
            for_part,
            group=self.group,
            fmt=self.fmt,
            batch_size=self.batch_size,
            poll_interval_s=self.poll_interval_s,
            block_ms=self.block_ms,
            ack_lag=self.ack_lag,
            trim=self.trim,
            start=self.start,
            max_line_bytes=self.max_line_bytes,
            resume_state=resume_state,
            on_error=self.on_error,
            convert=self.convert,
        )
