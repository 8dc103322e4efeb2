"""Where the alerting state lives: in memory (optionally mirrored to a folder) or in Redis.

The engine keeps its working state in memory; a store persists what changed after every
step (:meth:`StateStore.commit`) and gives it back after a restart (:meth:`StateStore.load`).
Operator data (silences, acknowledgements, feedback) is written by the CLI and read by
the engine whenever :meth:`StateStore.meta_version` changes.

Redis layout (``prefix`` defaults to ``vigil:alerting``)
---------------------------------------------------------
=============================  ======  ==================================================
key                            type    content
=============================  ======  ==================================================
``{prefix}:alerts``            hash    fingerprint -> alert JSON
``{prefix}:groups``            hash    group key -> group JSON
``{prefix}:nflog``             hash    ``receiver|group key`` -> last notification JSON
``{prefix}:clock``             string  JSON: event time processed per domain
``{prefix}:version``           int     incremented by every commit (other processes reload)
``{prefix}:lock``              string  held while a process runs an engine step
``{prefix}:silences``          hash    silence id -> silence JSON
``{prefix}:acks``              hash    fingerprint -> acknowledgement JSON
``{prefix}:feedback``          hash    fingerprint -> latest responder feedback JSON
``{prefix}:feedback:log``      stream  every feedback record, in order
``{prefix}:meta``              int     incremented on any silence/ack/feedback change
``{prefix}:grafana``           hash    fingerprint -> Grafana annotation id
``{prefix}:audit``             stream  every alert transition (capped, ``MAXLEN ~``)
``{prefix}:incidents``         hash    incident id -> incident JSON (:mod:`.incident_store`)
=============================  ======  ==================================================

Folder layout (:class:`MemoryStore` with ``path``): ``slots/<n>/state.json`` (alerts,
groups, notification log, clock of the process holding slot ``n``; rewritten at every
transition, otherwise at most once a second, and on close), ``slots/<n>/outbox/`` (its
file outbox), and, shared by all, ``silences.json``,
``acks.json``, ``feedback.jsonl`` (one JSON object per line; the last line for a
fingerprint wins), ``grafana.json``. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
from vigil.sinks.alerting.engine import (
    Changes,
    Group,
    LogEntry,
    Snapshot,
    clocks_from_raw,
    merge_clocks,
)
from vigil.sinks.alerting.model import Alert, Silence

DEFAULT_PREFIX = "vigil:alerting"


class StateStore(Protocol):
    """What the service and the CLI need from a store."""

    def lock(self) -> contextlib.AbstractContextManager[None]: ...
    def version(self) -> int: ...
    def load(self) -> Snapshot: ...
    def commit(
        self, changes: Changes, audit: Sequence[Mapping[str, Any]] = (), *, durable: bool = False
    ) -> int: ...
    def meta_version(self) -> Any: ...
    def silences(self) -> list[Silence]: ...
    def add_silence(self, silence: Silence) -> None: ...
    def expire_silence(self, silence_id: str, now: float) -> bool: ...
    def acks(self) -> dict[str, dict[str, Any]]: ...
    def ack(self, fingerprint: str, record: Mapping[str, Any]) -> None: ...
    def feedback(self) -> dict[str, dict[str, Any]]: ...
    def add_feedback(self, record: Mapping[str, Any]) -> None: ...
    def annotation_id(self, fingerprint: str) -> int | None: ...
    def set_annotation_id(self, fingerprint: str, annotation_id: int | None) -> None: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


def new_silence_id() -> str:
    return uuid.uuid4().hex


def _snapshot_from_raw(
    alerts: Mapping[Any, Any], groups: Mapping[Any, Any], nflog: Mapping[Any, Any], clock: Any
) -> Snapshot:
    return Snapshot(
        alerts={_s(k): Alert.from_dict(orjson.loads(v)) for k, v in alerts.items()},
        groups={_s(k): Group.from_dict(orjson.loads(v)) for k, v in groups.items()},
        nflog={_s(k): LogEntry.from_dict(orjson.loads(v)) for k, v in nflog.items()},
        clock=clocks_from_raw(clock),
    )


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# ---------------------------------------------------------------------------- memory / folder
class MemoryStore:
    """State in memory; with ``path``, mirrored to JSON files so the CLI and restarts see it.

    Parameters
    ----------
    path
        Folder for the files (created); ``None`` keeps everything in this process only.
    persist_interval_s
        Minimum time between rewrites of ``state.json`` (operator files are written at
        once).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        persist_interval_s: float = 1.0,
        slot: bool = False,
    ):
        self.path = Path(path) if path is not None else None
        self.persist_interval_s = persist_interval_s
        self.slot_dir: Path | None = None
        self._slot_fh: Any = None
        if slot and self.path is not None:
            self.slot_dir, self._slot_fh = acquire_slot(self.path)
        self._lock = threading.RLock()
        self._snap = Snapshot()
        self._version = 0
        self._dirty = False
        self._last_persist = 0.0
        self._silences: dict[str, Silence] = {}
        self._acks: dict[str, dict[str, Any]] = {}
        self._feedback: dict[str, dict[str, Any]] = {}
        self._grafana: dict[str, int] = {}
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._read_files()

    # -- files -----------------------------------------------------------------------------
    def _file(self, name: str) -> Path:
        assert self.path is not None
        return self.path / name

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        """Cross-process lock for read-modify-write of operator files (engine vs CLI)."""
        if self.path is None:
            yield
            return
        with open(self._file(".lock"), "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_json(self, name: str, default: Any) -> Any:
        try:
            return orjson.loads(self._file(name).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return default

    def _write_json(self, name: str | Path, data: Any) -> None:
        target = name if isinstance(name, Path) else self._file(name)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(tmp, target)

    def _state_files(self) -> list[Path]:
        assert self.path is not None
        if self.slot_dir is not None:
            return [self.slot_dir / "state.json"]
        # Read-only view (the CLI): every process's slot.
        return [self.path / "state.json", *sorted(self.path.glob("slots/*/state.json"))]

    def _read_files(self) -> None:
        snap = Snapshot()
        for f in self._state_files():
            try:
                state = orjson.loads(f.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            part = _snapshot_from_raw(
                {k: orjson.dumps(v) for k, v in state.get("alerts", {}).items()},
                {k: orjson.dumps(v) for k, v in state.get("groups", {}).items()},
                {k: orjson.dumps(v) for k, v in state.get("nflog", {}).items()},
                state.get("clock"),
            )
            snap.alerts.update(part.alerts)
            snap.groups.update(part.groups)
            snap.nflog.update(part.nflog)
            snap.clock = merge_clocks(snap.clock, part.clock)
        self._snap = snap
        self._read_operator_files()

    def _read_operator_files(self) -> None:
        self._silences = {
            d["id"]: Silence.from_dict(d) for d in self._read_json("silences.json", [])
        }
        self._acks = dict(self._read_json("acks.json", {}))
        self._grafana = {k: int(v) for k, v in self._read_json("grafana.json", {}).items()}
        fb: dict[str, dict[str, Any]] = {}
        try:
            with open(self._file("feedback.jsonl"), "rb") as fh:
                for line in fh:
                    if line.strip():
                        rec = orjson.loads(line)
                        fb[rec["fingerprint"]] = rec
        except OSError:
            pass
        self._feedback = fb

    def _persist(self, force: bool = False) -> None:
        if self.path is None or not self._dirty:
            return
        now = time.monotonic()
        if not force and now - self._last_persist < self.persist_interval_s:
            return
        s = self._snap
        self._write_json(
            (self.slot_dir or self.path) / "state.json",
            {
                "alerts": {k: a.to_dict() for k, a in s.alerts.items()},
                "groups": {k: g.to_dict() for k, g in s.groups.items()},
                "nflog": {k: e.to_dict() for k, e in s.nflog.items()},
                "clock": s.clock,
            },
        )
        self._dirty = False
        self._last_persist = now

    # -- engine state ----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def version(self) -> int:
        return self._version

    def load(self) -> Snapshot:
        with self._lock:
            if self.path is not None and self._version == 0:
                self._read_files()
            s = self._snap
            return Snapshot(dict(s.alerts), dict(s.groups), dict(s.nflog), dict(s.clock))

    def commit(
        self, changes: Changes, audit: Sequence[Mapping[str, Any]] = (), *, durable: bool = False
    ) -> int:
        """Apply ``changes``; write the file now if ``durable`` (a transition or a
        notification: what a restart must not forget), else at most once a second."""
        with self._lock:
            s = self._snap
            # Deletes first: a key deleted and created again in one step is in both.
            for k in changes.alerts_deleted:
                s.alerts.pop(k, None)
            s.alerts.update(changes.alerts)
            for k in changes.groups_deleted:
                s.groups.pop(k, None)
            s.groups.update(changes.groups)
            for k in changes.nflog_deleted:
                s.nflog.pop(k, None)
            s.nflog.update(changes.nflog)
            s.clock = merge_clocks(s.clock, changes.clock)
            self._version += 1
            self._dirty = True
            self._persist(force=durable)
            return self._version

    # -- operator data ---------------------------------------------------------------------
    def meta_version(self) -> Any:
        if self.path is None:
            return (len(self._silences), len(self._acks), len(self._feedback))
        out: list[tuple[int, int] | None] = []
        for name in ("silences.json", "acks.json", "feedback.jsonl"):
            try:
                st = self._file(name).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def _refresh(self) -> None:
        if self.path is not None:
            self._read_operator_files()

    def silences(self) -> list[Silence]:
        with self._lock:
            self._refresh()
            return list(self._silences.values())

    def add_silence(self, silence: Silence) -> None:
        with self._lock, self._flock():
            self._refresh()
            self._silences[silence.id] = silence
            if self.path is not None:
                self._write_json("silences.json", [s.to_dict() for s in self._silences.values()])

    def expire_silence(self, silence_id: str, now: float) -> bool:
        with self._lock, self._flock():
            self._refresh()
            s = self._silences.get(silence_id)
            if s is None:
                return False
            self._silences[silence_id] = Silence(
                s.id,
                s.matchers,
                min(s.starts_at, now),
                min(s.ends_at, now),
                s.created_by,
                s.comment,
                s.created_at,
            )
            if self.path is not None:
                self._write_json("silences.json", [x.to_dict() for x in self._silences.values()])
            return True

    def acks(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._refresh()
            return dict(self._acks)

    def ack(self, fingerprint: str, record: Mapping[str, Any]) -> None:
        with self._lock, self._flock():
            self._refresh()
            self._acks[fingerprint] = dict(record)
            if self.path is not None:
                self._write_json("acks.json", self._acks)

    def feedback(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._refresh()
            return dict(self._feedback)

    def add_feedback(self, record: Mapping[str, Any]) -> None:
        with self._lock, self._flock():
            self._feedback[str(record["fingerprint"])] = dict(record)
            if self.path is not None:
                with open(self._file("feedback.jsonl"), "ab") as fh:
                    fh.write(orjson.dumps(dict(record)) + b"\n")

    def annotation_id(self, fingerprint: str) -> int | None:
        with self._lock:
            return self._grafana.get(fingerprint)

    def set_annotation_id(self, fingerprint: str, annotation_id: int | None) -> None:
        with self._lock:
            if annotation_id is None:
                self._grafana.pop(fingerprint, None)
            else:
                self._grafana[fingerprint] = annotation_id
            if self.path is not None:
                self._write_json("grafana.json", self._grafana)

    def reset(self) -> None:
        """Forget alerts, groups and the notification log (operator data is kept)."""
        with self._lock:
            self._snap = Snapshot()
            self._grafana = {}
            self._dirty = True
            self._version += 1
            self._persist(force=True)
            if self.path is not None:
                self._write_json("grafana.json", {})

    def close(self) -> None:
        with self._lock:
            self._persist(force=True)
            if self._slot_fh is not None:
                self._slot_fh.close()
                self._slot_fh = None


def acquire_slot(root: Path) -> tuple[Path, Any]:
    """Lock the lowest free ``<root>/slots/<n>`` for this process (state and outbox of one
    process when there is no Redis). A restarted single process gets slot 0 back; the
    lock dies with the process, so a killed process's slot is free again."""
    slots = root / "slots"
    slots.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        d = slots / str(n)
        d.mkdir(exist_ok=True)
        fh = open(d / ".slot.lock", "a+b")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            n += 1
            continue
        return d, fh


def free_slots(root: Path) -> list[Path]:
    """Slots no process holds (their outboxes may hold items to adopt)."""
    out = []
    for d in sorted((root / "slots").glob("*")):
        lock = d / ".slot.lock"
        if not lock.exists():
            continue
        with open(lock, "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
            out.append(d)
    return out


# ---------------------------------------------------------------------------- redis
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """State in Redis: survives restarts and is shared by every worker and process.

    One process at a time runs an engine step, under ``{prefix}:lock`` (a lease of
    ``lock_ttl_s``, so a killed process cannot block the others for longer). A process
    reloads the whole state only when ``{prefix}:version`` shows another process
    committed since its own last commit.

    Parameters
    ----------
    client
        A ``redis.Redis`` client (``decode_responses=False``).
    prefix
        Key prefix (see the module docstring for the layout).
    audit_maxlen
        Approximate cap of the audit stream, in entries (one per engine step that changed
        an alert, holding that step's records).
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        lock_ttl_s: float = 5.0,
        audit_maxlen: int = 100_000,
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.lock_ttl_s = lock_ttl_s
        self.audit_maxlen = audit_maxlen
        self._thread_lock = threading.RLock()
        self._release = client.register_script(_RELEASE)
        self._depth = 0

    def k(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=10), **kwargs)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth:  # re-entrant within this thread
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            token = uuid.uuid4().hex
            ttl_ms = int(self.lock_ttl_s * 1000)
            delay = 0.001
            while not self.r.set(self.k("lock"), token, nx=True, px=ttl_ms):
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                self._release(keys=[self.k("lock")], args=[token])

    def version(self) -> int:
        v = self.r.get(self.k("version"))
        return int(v) if v else 0

    def load(self) -> Snapshot:
        p = self.r.pipeline(transaction=True)
        p.hgetall(self.k("alerts"))
        p.hgetall(self.k("groups"))
        p.hgetall(self.k("nflog"))
        p.get(self.k("clock"))
        alerts, groups, nflog, clock = p.execute()
        return _snapshot_from_raw(alerts, groups, nflog, clock)

    def commit(
        self,
        changes: Changes,
        audit: Sequence[Mapping[str, Any]] = (),
        *,
        durable: bool = False,
        also: Callable[[Any], Any] | None = None,
    ) -> int:
        """Write ``changes`` and ``audit`` in one ``MULTI``/``EXEC``; ``also(pipeline)`` may
        queue more writes that must land in the same transaction (the step's outbox items:
        see :meth:`~vigil.sinks.alerting.outbox.RedisOutbox.queue_put`)."""
        p = self.r.pipeline(transaction=True)
        if also is not None:
            also(p)
        tables: tuple[tuple[str, Mapping[str, Any], Iterable[str]], ...] = (
            ("alerts", changes.alerts, changes.alerts_deleted),
            ("groups", changes.groups, changes.groups_deleted),
            ("nflog", changes.nflog, changes.nflog_deleted),
        )
        for table, upserts, deletes in tables:
            # Deletes first: a key deleted and then created again within one step (a
            # group emptied, then a new episode of the same entity) is in both, and the
            # upsert is the newer. Written the other way round, the new group was gone
            # after a restart, and its alert was never notified.
            if deletes:
                p.hdel(self.k(table), *deletes)
            if upserts:
                p.hset(
                    self.k(table),
                    mapping={k: orjson.dumps(v.to_dict()) for k, v in upserts.items()},
                )
        if audit:  # one stream entry per step, holding the step's records in order
            p.xadd(
                self.k("audit"),
                {"batch": orjson.dumps([dict(rec) for rec in audit])},
                maxlen=self.audit_maxlen,
                approximate=True,
            )
        p.set(self.k("clock"), orjson.dumps(changes.clock))
        p.incr(self.k("version"))
        return int(p.execute()[-1])

    def meta_version(self) -> Any:
        v = self.r.get(self.k("meta"))
        return int(v) if v else 0

    def silences(self) -> list[Silence]:
        return [Silence.from_dict(orjson.loads(v)) for v in self.r.hvals(self.k("silences"))]

    def add_silence(self, silence: Silence) -> None:
        p = self.r.pipeline(transaction=True)
        p.hset(self.k("silences"), silence.id, orjson.dumps(silence.to_dict()))
        p.incr(self.k("meta"))
        p.execute()

    def expire_silence(self, silence_id: str, now: float) -> bool:
        raw = self.r.hget(self.k("silences"), silence_id)
        if raw is None:
            return False
        s = Silence.from_dict(orjson.loads(raw))
        self.add_silence(
            Silence(
                s.id,
                s.matchers,
                min(s.starts_at, now),
                min(s.ends_at, now),
                s.created_by,
                s.comment,
                s.created_at,
            )
        )
        return True

    def acks(self) -> dict[str, dict[str, Any]]:
        return {_s(k): orjson.loads(v) for k, v in self.r.hgetall(self.k("acks")).items()}

    def ack(self, fingerprint: str, record: Mapping[str, Any]) -> None:
        p = self.r.pipeline(transaction=True)
        p.hset(self.k("acks"), fingerprint, orjson.dumps(dict(record)))
        p.incr(self.k("meta"))
        p.execute()

    def feedback(self) -> dict[str, dict[str, Any]]:
        return {_s(k): orjson.loads(v) for k, v in self.r.hgetall(self.k("feedback")).items()}

    def add_feedback(self, record: Mapping[str, Any]) -> None:
        raw = orjson.dumps(dict(record))
        p = self.r.pipeline(transaction=True)
        p.hset(self.k("feedback"), str(record["fingerprint"]), raw)
        p.xadd(self.k("feedback:log"), {"json": raw})
        p.incr(self.k("meta"))
        p.execute()

    def annotation_id(self, fingerprint: str) -> int | None:
        v = self.r.hget(self.k("grafana"), fingerprint)
        return int(v) if v else None

    def set_annotation_id(self, fingerprint: str, annotation_id: int | None) -> None:
        if annotation_id is None:
            self.r.hdel(self.k("grafana"), fingerprint)
        else:
            self.r.hset(self.k("grafana"), fingerprint, annotation_id)

    def audit(self, count: int = 1000) -> list[dict[str, Any]]:
        """The newest ``count`` audit records, oldest first."""
        out: list[dict[str, Any]] = []
        last = b"+"
        while len(out) < count:
            rows = self.r.xrevrange(self.k("audit"), max=last, count=min(count, 500))
            if last != b"+":
                rows = rows[1:]  # the entry ``last`` itself, read before
            if not rows:
                break
            for _id, fields in rows:
                if b"batch" in fields:  # a step's records, oldest first
                    out.extend(reversed(orjson.loads(fields[b"batch"])))
                else:  # one record per entry (written before batches)
                    out.append(json.loads(fields[b"json"]))
            last = rows[-1][0]
        return list(reversed(out[:count]))

    def reset(self) -> None:
        self.r.delete(*(self.k(n) for n in ("alerts", "groups", "nflog", "clock", "grafana")))
        self.r.incr(self.k("version"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.r.close()
