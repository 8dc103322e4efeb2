"""Records of the public-service queue flow (flows/queues/flow.py).

Plain, frozen, slotted dataclasses, so they pickle cheaply between workers. Times are float
epoch seconds (UTC). A request id is never carried in clear: :attr:`QueueEvent.rid` is a
salted hash, and no record here holds personal fields.
"""

from __future__ import annotations

from dataclasses import dataclass

RECEIVED = "received"
STATUS = "status"
CLOSED = "closed"

#: Step of the dead-letter-like records of rows set aside for their data quality, and the
#: stable reasons (see :meth:`vigil.flows.queues.mapping.CaseMapper.convert`).
DATA_QUALITY = "data_quality"
CLOSE_BEFORE_OPEN = "close_before_open"
UNPARSABLE_CLOSE_TIME = "unparsable_close_time"
CLOSED_WITHOUT_CLOSE_TIME = "closed_without_close_time"
CLOSE_TIME_WITH_OPEN_STATUS = "close_time_with_open_status"
QUALITY_REASONS = (
    CLOSE_BEFORE_OPEN,
    UNPARSABLE_CLOSE_TIME,
    CLOSED_WITHOUT_CLOSE_TIME,
    CLOSE_TIME_WITH_OPEN_STATUS,
)


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """One lifecycle event of a request: received, a status change, or closed.

    Parameters
    ----------
    ts
        Event time (epoch seconds, UTC).
    kind
        ``"received"``, ``"status"`` or ``"closed"``.
    rid
        Salted hash of the request id (never the id itself).
    agency, service, channel
        Labels, already folded to the configured top-N (``"other"`` beyond it).
    due
        On ``received``: the deadline, if the request has one.
    received
        On ``closed`` from a case table: when it was received, so the processing time is
        known even if the request's state was lost or expired.
    on_time
        On ``closed``: the publisher's own verdict (an on-time flag) when the mapping names
        one; ``None`` means "decide from ``due``".
    status
        On ``status``: ``"hold"`` (the deadline clock stops), ``"resume"`` or ``"other"``.
    due_source
        Where ``due`` came from: ``"data"`` (the record's own due date), ``"table"`` (the
        configured service-level table) or ``""`` (no deadline).
    """

    ts: float
    kind: str
    rid: str
    agency: str
    service: str = "other"
    channel: str = "other"
    due: float | None = None
    received: float | None = None
    on_time: bool | None = None
    status: str = ""
    due_source: str = ""
