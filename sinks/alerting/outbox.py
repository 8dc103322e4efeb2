"""The outbox: every notification is persisted before it is sent, and sent until delivered.

Items move ``pending -> in flight -> delivered (deleted)`` or ``-> dead``:

- :meth:`Outbox.put` stores items (idempotent by id: deciding the same notification
  twice stores it once).
- :meth:`Outbox.claim` hands out due items with a *lease*: an item claimed by a process
  that then dies becomes due again when the lease ends, and is sent again with the same
  idempotency key, so the receiver keeps exactly one.
- Items with the same ``order_key`` (one group at one receiver, one alert at
  Alertmanager or Grafana) are delivered in creation order: only the oldest undelivered
  one can be claimed, so a resolve never overtakes its firing notification.
- :class:`~vigil.sinks.alerting.dispatcher.Dispatcher` retries network errors, timeouts,
  ``429`` and ``5xx`` with exponential backoff and jitter, never other ``4xx``, and moves
  an item to the dead set after ``max_attempts`` attempts or ``max_age_s``.

Two implementations: :class:`RedisOutbox` (shared by processes; claims are atomic Lua
scripts) and :class:`FileOutbox` (one JSON file per item under a folder, written with
fsync and an atomic rename; one process at a time), used when Redis is not configured.

Redis keys: ``{prefix}:outbox:items`` (hash id -> item JSON), ``{prefix}:outbox:due``
(sorted set id -> next attempt, wall seconds), ``{prefix}:outbox:okey`` (hash id -> order
key), ``{prefix}:outbox:order:{order key}`` (sorted set id -> creation time),
``{prefix}:outbox:dead`` (hash id -> item JSON with its last reason) and
``{prefix}:outbox:dead_at`` (sorted set id -> time of death).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One delivery to one integration.

    Parameters
    ----------
    id
        Idempotency key (sent as ``Idempotency-Key`` by webhooks).
    target
        Integration that delivers it (``"<receiver>/<index>"`` or a side channel name).
    kind
        ``webhook``, ``pagerduty``, ``slack``, ``alertmanager`` or ``grafana``.
    payload
        What the integration sends (never a secret: those are added at send time).
    order_key
        Items with the same key are delivered in creation order.
    created_wall, detected_wall
        Wall times of creation and of the first detection it is about (for latency).
    attempts, last_reason, last_status
        Delivery history so far.
    """

    id: str
    target: str
    kind: str
    payload: Any
    order_key: str
    created_wall: float
    detected_wall: float = 0.0
    attempts: int = 0
    last_reason: str = ""
    last_status: int | None = None

    @property
    def receiver(self) -> str:
        """Receiver name (the metric label)."""
        return self.target.split("/", 1)[0]

    def dumps(self) -> bytes:
        # orjson serializes a dataclass itself, field by field (dataclasses.asdict deep-copies
        # the payload first: half the cost of a burst of alerts).
        return orjson.dumps(self)

    @classmethod
    def loads(cls, raw: bytes | str) -> OutboxItem:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and age.

    Examples
    --------
    >>> p = RetryPolicy(base_s=1.0, max_s=60.0, jitter=0.0)
    >>> [p.delay(n, random.Random(0)) for n in (1, 2, 3, 10)]
    [1.0, 2.0, 4.0, 60.0]
    """

    max_attempts: int = 12
    base_s: float = 1.0
    max_s: float = 300.0
    jitter: float = 0.5
    max_age_s: float = 7 * 86400.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Wait after the ``attempts``-th failed attempt: ``min(max, base*2**(n-1))``, of
        which a random fraction up to ``jitter`` is taken off (so clients spread out)."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(attempts - 1, 64))
        return ceiling * (1.0 - self.jitter * rng.random())


class Outbox(Protocol):
    def put(self, items: Iterable[OutboxItem], now: float) -> int: ...
    def claim(self, now: float, limit: int, lease_s: float) -> list[OutboxItem]: ...
    def delivered(self, item: OutboxItem, now: float) -> None: ...
    def retry(self, item: OutboxItem, next_at: float) -> None: ...
    def dead(self, item: OutboxItem, now: float) -> None: ...
    def depth(self) -> tuple[int, int]: ...
    def dead_items(self) -> list[OutboxItem]: ...
    def requeue_dead(self, now: float) -> int: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------- redis
_CLAIM = """
-- KEYS: items, due, okey ; ARGV: now, lease_until, limit, order_prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]) * 4)
local out = {}
for _, id in ipairs(ids) do
  if #out >= tonumber(ARGV[3]) then break end
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then
    redis.call('ZREM', KEYS[2], id)
  else
    local okey = redis.call('HGET', KEYS[3], id)
    local head = nil
    if okey then head = redis.call('ZRANGE', ARGV[4] .. okey, 0, 0)[1] end
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    if head == nil or head == id then table.insert(out, raw) end
  end
end
return out
"""

_DONE = """
-- KEYS: items, due, okey, dead, dead_at
-- ARGV: now, order_prefix, then (id, dead_json) per item ('' = delivered)
for i = 3, #ARGV, 2 do
  local id, dead = ARGV[i], ARGV[i + 1]
  local okey = redis.call('HGET', KEYS[3], id)
  if dead ~= '' then
    redis.call('HSET', KEYS[4], id, dead)
    redis.call('ZADD', KEYS[5], ARGV[1], id)
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
  if okey then
    local oz = ARGV[2] .. okey
    redis.call('ZREM', oz, id)
    local nxt = redis.call('ZRANGE', oz, 0, 0)[1]
    if nxt then redis.call('ZADD', KEYS[2], 'LT', ARGV[1], nxt) end
  end
end
return 1
"""

# Sent with EVAL, never EVALSHA: it runs inside the step's MULTI (see queue_put).
_PUT = """
-- KEYS: items, due, okey ; ARGV: now, order_prefix, then (id, json, order key, created)
local n = 0
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  n = n + redis.call('HSETNX', KEYS[1], id, ARGV[i + 1])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[1], id)
  redis.call('HSET', KEYS[3], id, ARGV[i + 2])
  redis.call('ZADD', ARGV[2] .. ARGV[i + 2], 'NX', ARGV[i + 3], id)
end
return n
"""


class RedisOutbox:
    """Outbox in Redis (see the module docstring for keys). Safe across processes."""

    def __init__(self, client: Any, *, prefix: str = "vigil:alerting", owns_client: bool = False):
        self.r = client
        self.owns_client = owns_client
        self.prefix = f"{prefix}:outbox"
        self._claim = client.register_script(_CLAIM)
        self._done = client.register_script(_DONE)
        k = self.prefix
        self._keys3 = [f"{k}:items", f"{k}:due", f"{k}:okey"]
        self._keys5 = [*self._keys3, f"{k}:dead", f"{k}:dead_at"]
        self._order = f"{k}:order:"

    def put(self, items: Iterable[OutboxItem], now: float) -> int:
        p = self.r.pipeline(transaction=True)
        if not self.queue_put(p, items, now):
            return 0
        return int(p.execute()[0])

    def queue_put(self, pipe: Any, items: Iterable[OutboxItem], now: float) -> int:
        """Queue the command that stores ``items`` on ``pipe`` (a ``MULTI`` pipeline), so a
        caller can store them in the same transaction as its own writes; returns how many
        items were queued. One ``EVAL`` whose result is the number of new items: per item an
        ``HSETNX`` (idempotent by id: a re-decision is a no-op), a ``ZADD NX`` of the due
        set (never moves a claimed lease), its order key and a ``ZADD NX`` of its order.
        ``EVAL`` with the script's text, not ``EVALSHA``: a script queued by hash in
        ``MULTI`` fails with ``NOSCRIPT`` when Redis restarted in between, and the rest of
        the transaction would still run. One command instead of two per item: packing and
        parsing commands was a fifth of a burst's CPU."""
        args: list[Any] = [repr(now), self._order]
        for it in items:
            args += (it.id, it.dumps(), it.order_key, repr(it.created_wall))
        if len(args) == 2:
            return 0
        pipe.eval(_PUT, 3, *self._keys3, *args)
        return (len(args) - 2) // 4

    def claim(self, now: float, limit: int, lease_s: float) -> list[OutboxItem]:
        raws = self._claim(
            keys=self._keys3, args=[repr(now), repr(now + lease_s), limit, self._order]
        )
        return [OutboxItem.loads(r) for r in raws]

    def delivered(self, item: OutboxItem, now: float) -> None:
        self.delivered_many([item], now)

    def delivered_many(self, items: Sequence[OutboxItem], now: float) -> None:
        """:meth:`delivered` for several items in one command (a claimed batch)."""
        args = [repr(now), self._order]
        for it in items:
            args += (it.id, "")
        self._done(keys=self._keys5, args=args)

    def retry(self, item: OutboxItem, next_at: float) -> None:
        p = self.r.pipeline(transaction=True)
        p.hset(self._keys3[0], item.id, item.dumps())
        p.zadd(self._keys3[1], {item.id: next_at})
        p.execute()

    def dead(self, item: OutboxItem, now: float) -> None:
        self._done(keys=self._keys5, args=[repr(now), self._order, item.id, item.dumps()])

    def depth(self) -> tuple[int, int]:
        p = self.r.pipeline(transaction=False)
        p.hlen(self._keys3[0])
        p.hlen(self._keys5[3])
        pending, dead = p.execute()
        return int(pending), int(dead)

    def dead_items(self) -> list[OutboxItem]:
        return [OutboxItem.loads(v) for v in self.r.hvals(self._keys5[3])]

    def requeue_dead(self, now: float) -> int:
        items = self.dead_items()
        self.r.delete(self._keys5[3], self._keys5[4])
        return self.put((replace(i, attempts=0) for i in items), now)

    def reset(self) -> None:
        keys = list(self.r.scan_iter(match=f"{self.prefix}:*"))
        if keys:
            self.r.delete(*keys)

    def close(self) -> None:
        if self.owns_client:
            with contextlib.suppress(Exception):
                self.r.close()


# ---------------------------------------------------------------------------- files
class FileOutbox:
    """Outbox as one JSON file per item under ``path`` (``pending/`` and ``dead/``).

    Every write is fsynced and renamed into place, so a crash leaves either the old or
    the new version of an item. Claims live in memory: after a restart every pending item
    is due again at once. Only one process may use a folder at a time (an exclusive lock
    file enforces it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pending = self.path / "pending"
        self._dead = self.path / "dead"
        self._pending.mkdir(parents=True, exist_ok=True)
        self._dead.mkdir(parents=True, exist_ok=True)
        self._lockfh = open(self.path / ".lock", "a+b")  # noqa: SIM115 - closed in close()
        import fcntl

        try:
            fcntl.flock(self._lockfh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as ex:
            self._lockfh.close()
            msg = f"outbox folder {str(self.path)!r} is in use by another process"
            raise RuntimeError(msg) from ex
        self._lock = threading.Lock()
        self._items: dict[str, OutboxItem] = {}
        self._due: dict[str, float] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        loaded = []
        for f in self._pending.glob("*.json"):
            try:
                loaded.append((f.stat().st_mtime_ns, OutboxItem.loads(f.read_bytes())))
            except (OSError, orjson.JSONDecodeError, TypeError):
                log.warning("outbox: unreadable item %s", f.name)
        for _, it in sorted(loaded, key=lambda x: (x[1].created_wall, x[0])):
            self._index(it, 0.0)

    def _index(self, it: OutboxItem, due: float) -> None:
        self._items[it.id] = it
        self._due[it.id] = due
        self._seq[it.id] = self._next_seq
        self._next_seq += 1

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _fsync_dir(self, d: Path) -> None:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, items: Iterable[OutboxItem], now: float) -> int:
        n = 0
        with self._lock:
            for it in items:
                if it.id in self._items:
                    continue
                self._write(self._pending / f"{it.id}.json", it.dumps())
                self._index(it, now)
                n += 1
            if n:
                self._fsync_dir(self._pending)
        return n

    def claim(self, now: float, limit: int, lease_s: float) -> list[OutboxItem]:
        out: list[OutboxItem] = []
        with self._lock:
            heads: dict[str, str] = {}
            for iid in sorted(self._items, key=self._seq.__getitem__):
                heads.setdefault(self._items[iid].order_key, iid)
            for iid, due in sorted(self._due.items(), key=lambda x: (x[1], self._seq[x[0]])):
                if due > now or len(out) >= limit:
                    break
                it = self._items[iid]
                self._due[iid] = now + lease_s
                if heads.get(it.order_key) == iid:
                    out.append(it)
        return out

    def _remove(self, item: OutboxItem, now: float) -> None:
        self._items.pop(item.id, None)
        self._due.pop(item.id, None)
        self._seq.pop(item.id, None)
        with contextlib.suppress(FileNotFoundError):
            (self._pending / f"{item.id}.json").unlink()
        nxt = [i for i in self._items.values() if i.order_key == item.order_key]
        if nxt:
            first = min(nxt, key=lambda i: self._seq[i.id])
            self._due[first.id] = min(self._due[first.id], now)

    def delivered(self, item: OutboxItem, now: float) -> None:
        with self._lock:
            self._remove(item, now)

    def retry(self, item: OutboxItem, next_at: float) -> None:
        with self._lock:
            if item.id not in self._items:
                return
            self._write(self._pending / f"{item.id}.json", item.dumps())
            self._items[item.id] = item
            self._due[item.id] = next_at

    def dead(self, item: OutboxItem, now: float) -> None:
        with self._lock:
            self._write(self._dead / f"{item.id}.json", item.dumps())
            self._remove(item, now)

    def depth(self) -> tuple[int, int]:
        with self._lock:
            return len(self._items), sum(1 for _ in self._dead.glob("*.json"))

    def dead_items(self) -> list[OutboxItem]:
        return [OutboxItem.loads(f.read_bytes()) for f in sorted(self._dead.glob("*.json"))]

    def requeue_dead(self, now: float) -> int:
        items = self.dead_items()
        for f in self._dead.glob("*.json"):
            f.unlink()
        return self.put((replace(i, attempts=0) for i in items), now)

    def adopt(self, other: Path, now: float) -> int:
        """Take over the pending and dead items of another (unused) outbox folder."""
        try:
            src = FileOutbox(other)
        except RuntimeError:
            return 0  # in use after all
        try:
            items = [src._items[i] for i in sorted(src._items, key=src._seq.__getitem__)]
            n = self.put(items, now)
            for it in src.dead_items():
                self._write(self._dead / f"{it.id}.json", it.dumps())
            src.reset()
        finally:
            src.close()
        return n

    def reset(self) -> None:
        with self._lock:
            for d in (self._pending, self._dead):
                for f in d.glob("*.json"):
                    f.unlink()
            self._items.clear()
            self._due.clear()
            self._seq.clear()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._lockfh.close()


# ---------------------------------------------------------------------------- dispatcher
@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of one delivery attempt; ``reason`` is a bounded string (a metric label)."""

    ok: bool
    retryable: bool
    reason: str
    status: int | None = None


def __getattr__(name: str) -> object:
    """:class:`Dispatcher` lives in :mod:`vigil.sinks.alerting.dispatcher` (older imports
    name this module)."""
    if name == "Dispatcher":
        from vigil.sinks.alerting.dispatcher import Dispatcher

        return Dispatcher
    raise AttributeError(name)
