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
- :class:`Dispatcher` retries network errors, timeouts, ``429`` and ``5xx`` with
  exponential backoff and jitter, never other ``4xx``, and moves an item to the dead
  set after ``max_attempts`` attempts or ``max_age_s``.

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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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
-- KEYS: items, due, okey, dead, dead_at ; ARGV: id, now, order_prefix, dead_json ('' = delivered)
local okey = redis.call('HGET', KEYS[3], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if okey then
  local oz = ARGV[3] .. okey
  redis.call('ZREM', oz, ARGV[1])
  local nxt = redis.call('ZRANGE', oz, 0, 0)[1]
  if nxt then redis.call('ZADD', KEYS[2], 'LT', ARGV[2], nxt) end
end
return 1
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
        n = self.queue_put(p, items, now)
        if not n:
            return 0
        return sum(int(x) for x in p.execute()[:n])

    def queue_put(self, pipe: Any, items: Iterable[OutboxItem], now: float) -> int:
        """Queue the commands that store ``items`` on ``pipe`` (a ``MULTI`` pipeline), so a
        caller can store them in the same transaction as its own writes; returns how many
        items were queued. The first ``n`` commands are one ``HSETNX`` per item (1 for a new
        item); then, for the whole batch, one ``ZADD`` of the due set, one ``HSET`` of the
        order keys and one ``ZADD`` per order key. Plain commands, not a script: a script
        queued in ``MULTI`` fails with ``NOSCRIPT`` when Redis restarted in between, and the
        rest of the transaction would still run."""
        k = self._keys3
        batch = list(items)
        if not batch:
            return 0
        order: dict[str, dict[str, float]] = {}
        for it in batch:
            pipe.hsetnx(k[0], it.id, it.dumps())  # idempotent by id: a re-decision is a no-op
            order.setdefault(it.order_key, {})[it.id] = it.created_wall
        pipe.zadd(k[1], {it.id: now for it in batch}, nx=True)  # never moves a claimed lease
        pipe.hset(k[2], mapping={it.id: it.order_key for it in batch})
        for key, members in order.items():
            pipe.zadd(self._order + key, members, nx=True)
        return len(batch)

    def claim(self, now: float, limit: int, lease_s: float) -> list[OutboxItem]:
        raws = self._claim(
            keys=self._keys3, args=[repr(now), repr(now + lease_s), limit, self._order]
        )
        return [OutboxItem.loads(r) for r in raws]

    def delivered(self, item: OutboxItem, now: float) -> None:
        self._done(keys=self._keys5, args=[item.id, repr(now), self._order, ""])

    def delivered_many(self, items: Sequence[OutboxItem], now: float) -> None:
        """:meth:`delivered` for several items in one round trip (a claimed batch)."""
        p = self.r.pipeline(transaction=False)
        for it in items:
            self._done(keys=self._keys5, args=[it.id, repr(now), self._order, ""], client=p)
        p.execute()

    def retry(self, item: OutboxItem, next_at: float) -> None:
        p = self.r.pipeline(transaction=True)
        p.hset(self._keys3[0], item.id, item.dumps())
        p.zadd(self._keys3[1], {item.id: next_at})
        p.execute()

    def dead(self, item: OutboxItem, now: float) -> None:
        self._done(keys=self._keys5, args=[item.id, repr(now), self._order, item.dumps()])

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


class Sender(Protocol):
    def send(self, item: OutboxItem) -> SendResult: ...


class DeliveryMetrics(Protocol):
    def delivered(self, item: OutboxItem, latency_s: float) -> None: ...
    def failed(self, item: OutboxItem, outcome: str, reason: str) -> None: ...
    def depth(self, pending: int, dead: int) -> None: ...


class Dispatcher:
    """Threads that deliver due outbox items through their senders.

    Parameters
    ----------
    outbox
        Where items wait.
    senders
        ``item.target`` -> sender. An item whose target is unknown (the configuration
        changed) goes to the dead set with reason ``"unknown_target"``.
    policy
        Backoff and retry budget.
    concurrency
        Delivery threads.
    lease_s
        How long a claimed item is hidden from other claimers; must exceed the longest
        send (timeouts included).
    poll_s
        Longest sleep between looks at the outbox (a :meth:`wake` ends it early).
    """

    def __init__(
        self,
        outbox: Outbox,
        senders: Mapping[str, Sender],
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 2,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        metrics: DeliveryMetrics | None = None,
        wall: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.outbox = outbox
        self.senders = dict(senders)
        self.policy = policy or RetryPolicy()
        self.concurrency = max(1, concurrency)
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.metrics = metrics
        self._wall = wall
        self._rng = random.Random(seed)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._inflight = 0
        self._cond = threading.Condition()

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._run, name=f"vigil-outbox-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        failing: str | None = None  # the error of the current outage, logged once
        while not self._stop.is_set():
            try:
                n = self.run_once()
            except Exception as ex:  # a broken store must not kill delivery for good
                kind = type(ex).__name__
                if failing != kind:
                    # Once per outage, not every poll: a Redis restart would flood the log.
                    log.warning("outbox: store unavailable, will retry", extra={"error": kind})
                    if failing is None:
                        log.debug("outbox: delivery loop error", exc_info=True)
                    failing = kind
                n = 0
            else:
                if failing is not None:
                    log.info("outbox: store available again", extra={"error": failing})
                    failing = None
            if n == 0:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def run_once(self, limit: int = 16) -> int:
        """Claim and deliver up to ``limit`` due items; return how many were attempted."""
        now = self._wall()
        items = self.outbox.claim(now, limit, self.lease_s)
        if not items:
            if self.metrics is not None:
                self.metrics.depth(*self.outbox.depth())
            return 0
        with self._cond:
            self._inflight += len(items)
        done: list[OutboxItem] = []
        try:
            for it in items:
                if self._deliver(it):
                    done.append(it)
        finally:
            if done:  # acknowledged together: one round trip for the batch
                self._acknowledge(done)
            with self._cond:
                self._inflight -= len(items)
                self._cond.notify_all()
        if self.metrics is not None:
            self.metrics.depth(*self.outbox.depth())
        return len(items)

    def _acknowledge(self, items: list[OutboxItem]) -> None:
        now = self._wall()
        many = getattr(self.outbox, "delivered_many", None)
        if many is not None:
            many(items, now)
        else:
            for it in items:
                self.outbox.delivered(it, now)
        if self.metrics is not None:
            for it in items:
                start = it.detected_wall or it.created_wall
                self.metrics.delivered(it, max(0.0, now - start))

    def _deliver(self, item: OutboxItem) -> bool:
        """Send one item; True when the receiver accepted it (acknowledged by the caller),
        otherwise it is retried or dead-lettered here."""
        sender = self.senders.get(item.target)
        if sender is None:
            item = replace(item, last_reason="unknown_target")
            self.outbox.dead(item, self._wall())
            if self.metrics is not None:
                self.metrics.failed(item, "dead_lettered", "unknown_target")
            return False
        try:
            res = sender.send(item)
        except Exception as ex:  # senders should not raise; treat it as permanent
            log.warning("outbox: %s raised %s", item.target, type(ex).__name__)
            res = SendResult(ok=False, retryable=False, reason="internal_error")
        if res.ok:
            return True
        now = self._wall()
        item = replace(
            item, attempts=item.attempts + 1, last_reason=res.reason, last_status=res.status
        )
        p = self.policy
        if (
            res.retryable
            and item.attempts < p.max_attempts
            and now - item.created_wall < p.max_age_s
        ):
            self.outbox.retry(item, now + p.delay(item.attempts, self._rng))
            if self.metrics is not None:
                self.metrics.failed(item, "retried", res.reason)
        else:
            log.warning(
                "outbox: %s gave up on %s after %d attempt(s): %s",
                item.target,
                item.id,
                item.attempts,
                res.reason,
            )
            self.outbox.dead(item, now)
            if self.metrics is not None:
                self.metrics.failed(item, "dead_lettered", res.reason)
        return False

    def drain(self, timeout_s: float) -> bool:
        """Deliver until the outbox is empty or ``timeout_s`` passed; True if empty."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending, _ = self.outbox.depth()
            with self._cond:
                idle = self._inflight == 0
            if pending == 0 and idle:
                return True
            if time.monotonic() >= deadline:
                return False
            if not self._threads:
                if self.run_once() == 0:
                    time.sleep(0.02)
            else:
                self.wake()
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []
