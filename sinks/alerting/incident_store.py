"""Where incidents live: beside the alert state, in the same store.

- Redis: the hash ``{prefix}:incidents`` (incident id -> JSON), written in the same
  ``MULTI``/``EXEC`` as the step's alert state and outbox items (see
  :meth:`~vigil.sinks.alerting.store.RedisStore.commit`'s ``also``).
- Folder (:class:`~vigil.sinks.alerting.store.MemoryStore` with a path):
  ``incidents.json`` in the process's slot (``slots/<n>/incidents.json``), rewritten
  atomically when incidents change; the CLI reads every slot's file.
- Memory only: a dict on the store object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from vigil.sinks.alerting.incidents import Incident
from vigil.sinks.alerting.store import MemoryStore, RedisStore, StateStore


def _memory(store: MemoryStore) -> dict[str, Any]:
    mem: dict[str, Any] | None = getattr(store, "_incident_dicts", None)
    if mem is None:
        mem = {}
        store._incident_dicts = mem  # type: ignore[attr-defined]
    return mem


def load_incidents(store: StateStore) -> dict[str, Incident]:
    """Every stored incident (and single-feed cluster) by id."""
    if isinstance(store, RedisStore):
        raw = store.r.hgetall(store.k("incidents"))
        return {
            (k.decode() if isinstance(k, bytes) else str(k)): Incident.from_dict(orjson.loads(v))
            for k, v in raw.items()
        }
    if isinstance(store, MemoryStore):
        if store.path is None:
            return {k: Incident.from_dict(v) for k, v in _memory(store).items()}
        files = (
            [store.slot_dir / "incidents.json"]
            if store.slot_dir is not None
            else [store.path / "incidents.json", *sorted(store.path.glob("slots/*/incidents.json"))]
        )
        out: dict[str, Incident] = {}
        for f in files:
            try:
                data = orjson.loads(f.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            out.update({k: Incident.from_dict(v) for k, v in data.items()})
        return out
    return {}


def queue_incidents(
    pipeline: Any, store: RedisStore, upserts: Mapping[str, Incident], deleted: set[str]
) -> None:
    """Queue the writes on a Redis transaction (the step's commit)."""
    if upserts:
        pipeline.hset(
            store.k("incidents"),
            mapping={k: orjson.dumps(v.to_dict()) for k, v in upserts.items()},
        )
    if deleted:
        pipeline.hdel(store.k("incidents"), *deleted)


def save_incidents(store: StateStore, upserts: Mapping[str, Incident], deleted: set[str]) -> None:
    """Write changed incidents to a folder or memory store (Redis: :func:`queue_incidents`)."""
    if not (upserts or deleted):
        return
    if isinstance(store, RedisStore):
        p = store.r.pipeline(transaction=True)
        queue_incidents(p, store, upserts, deleted)
        p.execute()
        return
    if not isinstance(store, MemoryStore):
        return
    if store.path is None:
        mem = _memory(store)
        mem.update({k: v.to_dict() for k, v in upserts.items()})
        for k in deleted:
            mem.pop(k, None)
        return
    target = (store.slot_dir or store.path) / "incidents.json"
    try:
        data = orjson.loads(target.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        data = {}
    data.update({k: v.to_dict() for k, v in upserts.items()})
    for k in deleted:
        data.pop(k, None)
    store._write_json(target, data)


def reset_incidents(store: StateStore) -> None:
    """Forget every incident (``alerting.state.reset``)."""
    if isinstance(store, RedisStore):
        store.r.delete(store.k("incidents"))
    elif isinstance(store, MemoryStore):
        if store.path is None:
            _memory(store).clear()
        else:
            (store.slot_dir or store.path).joinpath("incidents.json").unlink(missing_ok=True)
