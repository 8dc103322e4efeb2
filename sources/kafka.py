"""Read :class:`~vigil.records.RawLine` records from Kafka through bytewax's Kafka connector.

Optional: needs the ``kafka`` extra (``pip install 'vigil[kafka]'``, which installs
``bytewax[kafka]``: ``confluent-kafka``). One bytewax partition per Kafka topic partition;
the snapshot is bytewax's own (the next offset), so a resume re-reads from the last
snapshot, as for the Redis Streams bus.

Each message's value is one line. Headers ``fmt`` and ``origin``, when present, override the
input's format and the default origin ``kafka:<topic>``. Consumer errors are logged and
counted, not emitted; the wrapper adds the ``next_awake`` that bytewax's connector lacks, so
an idle topic does not spin a core.

What is tested here: the message-to-line conversion and the import guard. What is not:
anything against a Kafka broker (none runs on the test machine).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override
from vigil.sources.files import oversize_line

from vigil.records import RawLine

__all__ = ["KafkaLineSource", "message_line"]

log = logging.getLogger(__name__)

INSTALL_HINT = "the kafka input needs the kafka extra: pip install 'vigil[kafka]'"


def message_line(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    topic: str | None,
    fmt: str,
    max_line_bytes: int = 65536,
) -> RawLine:
    """The ``RawLine`` a Kafka message carries.

    Examples
    --------
    >>> message_line(b"Jan  1 00:00:00 h sshd[1]: x\\n", [("fmt", b"ssh")], "auth", "zeek")
    RawLine(fmt='ssh', origin='kafka:auth', text='Jan  1 00:00:00 h sshd[1]: x', ref_ts=0.0,
            oversize=False)
    """
    h = dict(headers or ())
    f = h["fmt"].decode("utf-8", "replace") if "fmt" in h else fmt
    origin = h["origin"].decode("utf-8", "replace") if "origin" in h else f"kafka:{topic}"
    data = value or b""
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    if len(data) > max_line_bytes:
        return oversize_line(f, origin, data, 0.0)
    return RawLine(f, origin, data.decode("utf-8", "replace"))


class _KafkaLinePartition(StatefulSourcePartition[RawLine, Any]):
    def __init__(self, inner: Any, fmt: str, max_line_bytes: int, poll_interval_s: float) -> None:
        self._inner = inner
        self._fmt = fmt
        self._max = max_line_bytes
        self._poll = timedelta(seconds=poll_interval_s)
        self._next_awake: datetime | None = None
        self.errors = 0

    @override
    def next_batch(self) -> list[RawLine]:
        out: list[RawLine] = []
        for m in self._inner.next_batch():
            if hasattr(m, "err"):  # bytewax's KafkaError
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    log.warning("kafka: consumer error %s (%d so far)", m.err, self.errors)
                continue
            out.append(message_line(m.value, m.headers, m.topic, self._fmt, self._max))
        self._next_awake = None if out else datetime.now(UTC) + self._poll
        return out

    @override
    def next_awake(self) -> datetime | None:
        return self._next_awake

    @override
    def snapshot(self) -> Any:
        return self._inner.snapshot()

    @override
    def close(self) -> None:
        self._inner.close()


class KafkaLineSource(FixedPartitionedSource[RawLine, Any]):
    """Kafka topics as raw lines (bytewax's ``KafkaSource`` underneath).

    Parameters
    ----------
    brokers
        ``host:port`` of the bootstrap brokers.
    topics
        Topics to read; every partition of each is one bytewax partition.
    fmt
        Format of messages without a ``fmt`` header.
    batch_size
        Most messages per ``next_batch``.
    poll_interval_s
        Wait after an empty poll.
    add_config
        Extra ``confluent-kafka`` consumer settings (``security.protocol`` ...).
    max_line_bytes
        A longer value becomes one ``RawLine(oversize=True)``.

    Raises
    ------
    ImportError
        If the ``kafka`` extra is not installed (the message says what to install).
    """

    def __init__(
        self,
        brokers: Sequence[str],
        topics: Sequence[str],
        *,
        fmt: str = "ssh",
        batch_size: int = 1000,
        poll_interval_s: float = 0.1,
        add_config: Mapping[str, str] | None = None,
        max_line_bytes: int = 65536,
    ) -> None:
        try:
            from bytewax.connectors.kafka import KafkaSource
        except ImportError as ex:
            raise ImportError(INSTALL_HINT) from ex
        self.fmt = fmt
        self.poll_interval_s = poll_interval_s
        self.max_line_bytes = max_line_bytes
        self._inner = KafkaSource(
            list(brokers),
            list(topics),
            tail=True,
            add_config=dict(add_config or {}),
            batch_size=batch_size,
            raise_on_errors=False,
        )

    @override
    def list_parts(self) -> list[str]:
        return list(self._inner.list_parts())

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _KafkaLinePartition:
        inner = self._inner.build_part(step_id, for_part, resume_state)
        return _KafkaLinePartition(inner, self.fmt, self.max_line_bytes, self.poll_interval_s)
