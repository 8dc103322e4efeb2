"""One failure policy for every feed: a callback that raises dead-letters its input.

A raise in any bytewax callback stops the whole dataflow, and every feed runs in one
dataflow: a bug in the queue feed would stop the security feed too. Each feed wraps its
batch callbacks with :func:`guard_batch` and its stateful logics with :func:`guard_logic`.
What raised is dead-lettered, one :class:`~vigil.records.DeadLetter` per input item, with
the step id and the exception's type as the (stable, low-cardinality) reason; the feed
keeps running and its keyed state is kept (``RETAIN``); the first failure of each kind is
logged with its traceback. The items go to the feed's dead-letter stream, so the
dead-letter file and ``vigil_dead_letters_total{flow,step,reason}`` show them.

Examples
--------
>>> def parse(items):
...     return [1 / x for x in items]
>>> safe = guard_batch("parse", "demo", parse)
>>> safe([2, 4])
[0.5, 0.25]
>>> [(d.step, d.reason, d.payload) for d in safe([1, 0])]
[('parse', 'ZeroDivisionError', '1'), ('parse', 'ZeroDivisionError', '0')]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from bytewax.operators import StatefulBatchLogic
from typing_extensions import override

from vigil.records import DeadLetter

log = logging.getLogger(__name__)

V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S")

_PAYLOAD_CHARS = 512
_logged: set[tuple[str, str]] = set()


def _dead(step: str, feed: str, ex: BaseException, items: list[Any]) -> list[DeadLetter]:
    reason = type(ex).__name__
    if (step, reason) not in _logged:  # once per kind: a bug, not a flood of tracebacks
        _logged.add((step, reason))
        log.error(
            "%s: step %s raised %s; its input is dead-lettered", feed, step, reason, exc_info=ex
        )
    return [DeadLetter(step, reason, repr(x)[:_PAYLOAD_CHARS], feed) for x in items]


def guard_batch(
    step: str, feed: str, fn: Callable[[list[V]], list[W]]
) -> Callable[[list[V]], list[W | DeadLetter]]:
    """``fn`` over a batch; if it raises, every item of the batch is dead-lettered."""

    def guarded(items: list[V]) -> list[W | DeadLetter]:
        try:
            return list(fn(items))
        except Exception as ex:
            return list(_dead(step, feed, ex, items))

    return guarded


class Guarded(StatefulBatchLogic[V, "W | DeadLetter", S], Generic[V, W, S]):
    """A stateful logic whose raises become dead letters (see the module docstring)."""

    def __init__(self, inner: StatefulBatchLogic[V, W, S], step: str, feed: str) -> None:
        self.inner = inner
        self.step = step
        self.feed = feed

    @override
    def on_batch(self, values: list[V]) -> tuple[list[W | DeadLetter], bool]:
        try:
            out, discard = self.inner.on_batch(values)
        except Exception as ex:
            return list(_dead(self.step, self.feed, ex, values)), StatefulBatchLogic.RETAIN
        return list(out), discard

    @override
    def on_notify(self) -> tuple[list[W | DeadLetter], bool]:
        try:
            out, discard = self.inner.on_notify()
        except Exception as ex:
            return list(_dead(self.step, self.feed, ex, ["(timer)"])), StatefulBatchLogic.RETAIN
        return list(out), discard

    @override
    def on_eof(self) -> tuple[list[W | DeadLetter], bool]:
        try:
            out, discard = self.inner.on_eof()
        except Exception as ex:
            return list(_dead(self.step, self.feed, ex, ["(end)"])), StatefulBatchLogic.RETAIN
        return list(out), discard

    @override
    def notify_at(self) -> datetime | None:
        try:
            return self.inner.notify_at()
        except Exception as ex:
            _dead(self.step, self.feed, ex, [])
            return None

    @override
    def snapshot(self) -> S:
        return self.inner.snapshot()


def guard_logic(
    step: str, feed: str, builder: Callable[[S | None], StatefulBatchLogic[V, W, S]]
) -> Callable[[S | None], Guarded[V, W, S]]:
    """``builder`` of a stateful step whose logic's raises become dead letters."""

    def build(resume: S | None) -> Guarded[V, W, S]:
        return Guarded(builder(resume), step, feed)

    return build
