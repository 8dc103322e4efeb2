"""A graceful stop: on Ctrl-C or SIGTERM every input ends as if its data had ended.

Bytewax turns a ``KeyboardInterrupt`` into a ``BytewaxRuntimeError`` (and a Rust panic)
that skips the sinks' ``close``: pending alerts are not flushed, the summary is lost. A
stop request instead makes every input partition wrapped by :func:`stoppable` raise
``StopIteration`` at its next poll, so the dataflow ends the way a finite run does:
windows close, sinks flush, the outbox drains, and recovery snapshots stay consistent
(an input's state is its position after the last batch it emitted).

::

    with graceful_stop():          # SIGINT/SIGTERM -> request_stop(); a second one aborts
        run_main(flow)             # flow built with op.input(step, flow, stoppable(src))
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, TypeVar

from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    Source,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from typing_extensions import override

X = TypeVar("X")
S = TypeVar("S")

#: How long a partition may sleep before it looks at the stop flag again.
POLL = timedelta(milliseconds=250)

_STOP = threading.Event()
_SIGNAL: list[int] = []


def request_stop(signum: int | None = None) -> None:
    """Ask every stoppable input to end at its next poll."""
    if signum is not None:
        _SIGNAL.append(signum)
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def stop_signal() -> int | None:
    """The signal that asked for the stop, if one did."""
    return _SIGNAL[0] if _SIGNAL else None


def wait_for_stop(timeout: float | None = None) -> bool:
    return _STOP.wait(timeout)


def reset() -> None:
    _STOP.clear()
    _SIGNAL.clear()


@contextlib.contextmanager
def graceful_stop(notice: str = "stopping: finishing inputs, flushing alerts") -> Iterator[None]:
    """SIGINT and SIGTERM request a stop (printing ``notice``); a second one aborts at once.

    Only the main thread can set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()

    def handler(signum: int, frame: FrameType | None) -> None:
        if _STOP.is_set():  # the second signal: the user does not want to wait
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        print(f"\n{notice} (again to abort)", file=sys.stderr, flush=True)
        request_stop(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _now() -> datetime:
    return datetime.now(UTC)


class _Pacer:
    """Caps a partition's sleep at :data:`POLL` and keeps its own awake time honest."""

    def __init__(self) -> None:
        self._awake: datetime | None = None

    def ready(self) -> bool:
        if _STOP.is_set():
            raise StopIteration
        return self._awake is None or _now() >= self._awake

    def awake(self, inner: datetime | None) -> datetime | None:
        self._awake = inner
        if inner is None or _STOP.is_set():
            return None
        return min(inner, _now() + POLL)


class _Stopping:
    """What both partition kinds share: the inner partition, paced by a :class:`_Pacer`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._pace = _Pacer()

    def next_batch(self) -> Iterable[Any]:
        return self._inner.next_batch() if self._pace.ready() else []

    def next_awake(self) -> datetime | None:
        return self._pace.awake(self._inner.next_awake())

    def close(self) -> None:
        self._inner.close()


class _StatefulPart(_Stopping, StatefulSourcePartition[X, S]):
    @override
    def snapshot(self) -> S:
        return self._inner.snapshot()  # type: ignore[no-any-return]


class _StatelessPart(_Stopping, StatelessSourcePartition[X]):
    pass


class _Fixed(FixedPartitionedSource[X, S]):
    def __init__(self, inner: FixedPartitionedSource[X, S]) -> None:
        self.inner = inner

    @override
    def list_parts(self) -> list[str]:
        return list(self.inner.list_parts())

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: S | None
    ) -> StatefulSourcePartition[X, S]:
        return _StatefulPart(self.inner.build_part(step_id, for_part, resume_state))


class _Dynamic(DynamicSource[X]):
    def __init__(self, inner: DynamicSource[X]) -> None:
        self.inner = inner

    @override
    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSourcePartition[X]:
        return _StatelessPart(self.inner.build(step_id, worker_index, worker_count))


def stoppable(source: Source[Any]) -> Source[Any]:
    """``source`` whose partitions end when a stop is requested (idempotent)."""
    if isinstance(source, (_Fixed, _Dynamic)):
        return source
    if isinstance(source, FixedPartitionedSource):
        return _Fixed(source)
    if isinstance(source, DynamicSource):
        return _Dynamic(source)
    return source


def stoppable_flow(flow: Any) -> int:
    """Make every input of a built ``Dataflow`` stoppable; returns how many were wrapped.

    Done once by the composition root, so no feed can forget it. Bytewax 0.21 (pinned)
    keeps each input's source in the frozen ``source`` field of its core ``input``
    operator, read when the dataflow starts.
    """
    n = 0
    todo = list(flow.substeps)
    while todo:
        step = todo.pop()
        if isinstance(getattr(step, "source", None), FixedPartitionedSource | DynamicSource):
            wrapped = stoppable(step.source)
            if wrapped is not step.source:
                object.__setattr__(step, "source", wrapped)
                n += 1
        todo.extend(getattr(step, "substeps", ()))
    return n
