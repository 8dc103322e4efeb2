"""Delivery threads: claim due outbox items, send them, and retry or dead-letter them.

:class:`Dispatcher` follows Alertmanager's retry rules (see
:mod:`vigil.sinks.alerting.outbox` for the item lifecycle): network errors, timeouts,
``429`` and ``5xx`` are retried with exponential backoff and jitter, other ``4xx`` never;
an item goes to the dead set after ``max_attempts`` attempts or ``max_age_s``. A claimed
batch is acknowledged in one command, and a sender with ``send_many`` (webhooks) gets the
batch's items for it together, so it can have them in flight at once.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Protocol

from vigil.sinks.alerting.outbox import Outbox, OutboxItem, RetryPolicy, SendResult

log = logging.getLogger(__name__)


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
        self._depth_at = -math.inf

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
                self._show_depth(0.0)
            return 0
        with self._cond:
            self._inflight += len(items)
        done: list[OutboxItem] = []
        try:
            for target, batch in _by_target(items).items():
                for it, res in zip(batch, self._send(target, batch), strict=True):
                    if self._settle(it, res):
                        done.append(it)
        finally:
            if done:  # acknowledged together: one round trip for the batch
                self._acknowledge(done)
            with self._cond:
                self._inflight -= len(items)
                self._cond.notify_all()
        if self.metrics is not None:
            self._show_depth(0.25)
        return len(items)

    def _show_depth(self, every_s: float) -> None:
        """Refresh the depth gauge: when the outbox looks empty, and at most every
        ``every_s`` while busy (a burst would pay one more round trip per batch)."""
        t = time.monotonic()
        if t - self._depth_at >= every_s:
            self._depth_at = t
            assert self.metrics is not None
            self.metrics.depth(*self.outbox.depth())

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

    def _send(self, target: str, items: list[OutboxItem]) -> list[SendResult | None]:
        """One attempt for each of ``items`` (all for ``target``): a sender with
        ``send_many`` gets them together. ``None``: the target is unknown."""
        sender = self.senders.get(target)
        if sender is None:
            return [None] * len(items)
        many = getattr(sender, "send_many", None)
        if many is not None and len(items) > 1:
            return _guarded(target, lambda: list(many(items)), len(items))
        return [_guarded(target, partial(_send_one, sender, it), 1)[0] for it in items]

    def _settle(self, item: OutboxItem, res: SendResult | None) -> bool:
        """Act on one attempt's outcome: True when the receiver accepted the item
        (acknowledged by the caller), otherwise it is retried or dead-lettered here."""
        if res is None:
            item = replace(item, last_reason="unknown_target")
            self.outbox.dead(item, self._wall())
            if self.metrics is not None:
                self.metrics.failed(item, "dead_lettered", "unknown_target")
            return False
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


def _by_target(items: Iterable[OutboxItem]) -> dict[str, list[OutboxItem]]:
    """Items by target, in claim order."""
    out: dict[str, list[OutboxItem]] = {}
    for it in items:
        out.setdefault(it.target, []).append(it)
    return out


def _send_one(sender: Sender, item: OutboxItem) -> list[SendResult]:
    return [sender.send(item)]


def _guarded(target: str, send: Callable[[], list[SendResult]], n: int) -> list[SendResult | None]:
    try:
        return list(send())
    except Exception as ex:  # senders should not raise; treat it as permanent
        log.warning("outbox: %s raised %s", target, type(ex).__name__)
        return [SendResult(ok=False, retryable=False, reason="internal_error")] * n
