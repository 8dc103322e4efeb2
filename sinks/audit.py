"""The audit log: one record per alert transition (pending, firing, resolved, inactive).

With Redis the records go to the stream ``{prefix}:audit`` in the same transaction as
the state change (see :mod:`vigil.sinks.alerting.store`); without it, to a JSON-lines file.

Examples
--------
>>> from vigil.sinks.alerting.model import Transition
>>> t = Transition("fp1", "pending", "firing", 1700000000.0, {"alertname": "x"}, {}, {})
>>> audit_record(t, wall=1700000001.0)["transition"]
'pending->firing'
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from vigil.sinks.alerting.model import Transition


def audit_record(t: Transition, *, wall: float) -> dict[str, Any]:
    """A flat, JSON-able record of one transition."""
    return {
        "fingerprint": t.fingerprint,
        "transition": f"{t.old}->{t.new}",
        "from": t.old,
        "to": t.new,
        "engine_time": t.clock,
        "wall_time": wall,
        "labels": dict(t.labels),
        "startsAt": t.alert.get("startsAt"),
        "endsAt": t.alert.get("endsAt"),
        "summary": t.annotations.get("summary", ""),
    }


class JsonlAuditLog:
    """Append audit records to a JSON-lines file (flushed per batch)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        data = b"".join(orjson.dumps(dict(r)) + b"\n" for r in records)
        if not data:
            return
        with self._lock, open(self.path, "ab") as fh:
            fh.write(data)

    def read(self) -> list[dict[str, Any]]:
        try:
            return [orjson.loads(x) for x in self.path.read_bytes().splitlines() if x.strip()]
        except OSError:
            return []
