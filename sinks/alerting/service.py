"""The running pipeline: engine + state store + outbox + delivery threads.

One :class:`AlertingService` runs per process. Every bytewax worker's partition of
:class:`AlertingSink` hands its detections to it; a ticker thread advances timers every
``tick_s`` of wall time even when no detection arrives. Each step runs under the store's
lock (one process at a time when the store is Redis) and follows the same order:

1. reload state if another process committed since our last commit;
2. apply observations, then advance lifecycles and flush due groups;
3. **persist the new notifications in the outbox**;
4. commit the state changes (and, with Redis, the audit records) in one transaction.

With Redis holding both, steps 3 and 4 are one ``MULTI``/``EXEC``: either the
notification and the state saying it was decided are both stored, or neither is and the
step is done again (a failed step keeps its observations and reloads the state). They
must not be separate: after a failure between them (Redis restarting) the engine
re-decides the group's notification with the same idempotency key (see
:func:`~vigil.sinks.alerting.engine.notification_id`) but with the alerts that arrived in the
meantime too; the outbox keeps the first item by key, and those alerts were never sent.
With files (one process, no Redis) step 3 comes first, so a crash in between re-decides
and is stored once when nothing new arrived. Delivery threads then send from the outbox.

After a step, firing transitions are written to the alerts file and passed to
``on_alert`` (the CLI prints them), and transitions go to the audit log.

Its bytewax sink is in :mod:`vigil.sinks.alerting.sink`, its metrics in
:mod:`vigil.sinks.alerting.metrics` (both re-exported here).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from vigil.sinks.alerting.delivery import Integration
from vigil.sinks.alerting.dispatcher import Dispatcher
from vigil.sinks.alerting.engine import AlertEngine, Observation
from vigil.sinks.alerting.incident_store import (
    load_incidents,
    queue_incidents,
    reset_incidents,
    save_incidents,
)
from vigil.sinks.alerting.incidents import IncidentSettings, correlate_step
from vigil.sinks.alerting.metrics import LATENCY_BUCKETS, AlertingMetrics  # noqa: F401
from vigil.sinks.alerting.model import Notification, Silence, Transition
from vigil.sinks.alerting.outbox import (
    Outbox,
    OutboxItem,
    RedisOutbox,
    RetryPolicy,
    SendResult,
)
from vigil.sinks.alerting.sink import AlertingSink  # noqa: F401 (re-exported)
from vigil.sinks.alerting.store import RedisStore, StateStore
from vigil.sinks.alerts import alert_from_detection
from vigil.sinks.audit import JsonlAuditLog, audit_record
from vigil.sinks.jsonl import open_append

from vigil.records import Detection, Watermark

log = logging.getLogger(__name__)


class SideChannel(Protocol):
    """Gets every transition (Alertmanager push, Grafana annotations)."""

    target: str
    kind: str

    def on_transitions(self, transitions: Iterable[Transition]) -> list[OutboxItem]: ...
    def send(self, item: OutboxItem) -> SendResult: ...
    def close(self) -> None: ...


class AlertsFile:
    """Append firing alerts as JSON lines (``"-"`` = standard output), flushed per batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        if path != "-":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def write(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        data = b"".join(orjson.dumps(dict(a)) + b"\n" for a in alerts)
        if not data:
            return
        if self.path == "-":
            sys.stdout.write(data.decode())
            sys.stdout.flush()
            return
        if self._fh is None:
            self._fh = open_append(self.path)  # closed in close()
        self._fh.write(data)
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class AlertingService:
    """Engine, store, outbox and delivery threads of one process.

    Parameters
    ----------
    engine
        The engine (its clock decides engine time).
    store, outbox
        Where state and pending deliveries live.
    integrations
        Receiver name -> its integrations (a receiver may have several).
    side_channels
        Get every transition (Alertmanager push, Grafana annotations).
    static_silences
        Silences from the configuration, added to those in the store.
    label_keys
        Keys of a detection's ``extra`` that become labels (``agency``, ``team`` ...).
    enrich
        Called with (labels, annotations, event time) of each observation to add
        annotations (runbook and dashboard links).
    alerts_file, on_alert
        Each alert that starts firing is appended there / passed to the callback.
    audit_file
        JSON-lines audit log when the store is not Redis (Redis uses its stream).
    tick_s
        Wall seconds between timer steps.
    drain_timeout_s
        How long :meth:`close` waits for the outbox to empty.
    am_resend_s
        Period of Alertmanager re-sends (when an Alertmanager side channel is present).
    reset
        Start from empty alert state and an empty outbox (the demo, replays).
    finite
        The inputs end (a replay, a file read once): :meth:`close` lets every domain's
        event time run out, so every episode resolves at its own end and is notified.
        Otherwise (live inputs) it flushes the groups as they are.
    incidents
        Correlation of alerts across feeds (:mod:`vigil.sinks.alerting.incidents`): its
        correlator, the receiver of incident notifications and whether members are left
        out of their groups' notifications. ``None``: alerts only.
    """

    def __init__(
        self,
        engine: AlertEngine,
        store: StateStore,
        outbox: Outbox,
        *,
        integrations: Mapping[str, Sequence[Integration]],
        side_channels: Sequence[SideChannel] = (),
        static_silences: Sequence[Silence] = (),
        label_keys: Sequence[str] = (),
        enrich: Callable[[dict[str, str], dict[str, str], float], None] | None = None,
        alerts_file: str | None = None,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
        audit_file: str | None = None,
        registry: CollectorRegistry = REGISTRY,
        policy: RetryPolicy | None = None,
        concurrency: int = 2,
        lease_s: float = 30.0,
        poll_s: float = 0.25,
        tick_s: float = 1.0,
        drain_timeout_s: float = 15.0,
        am_resend_s: float = 60.0,
        reset: bool = False,
        finite: bool = False,
        wall: Callable[[], float] = time.time,
        incidents: IncidentSettings | None = None,
    ) -> None:
        self.engine = engine
        self.incidents = incidents
        self.finite = finite
        self.store = store
        self.outbox = outbox
        self.integrations = {k: list(v) for k, v in integrations.items()}
        self.side_channels = list(side_channels)
        self.static_silences = list(static_silences)
        self.label_keys = frozenset(label_keys)
        self.enrich = enrich
        self.alerts_file = AlertsFile(alerts_file) if alerts_file else None
        self.on_alert = on_alert
        self.audit = (
            None if isinstance(store, RedisStore) or not audit_file else JsonlAuditLog(audit_file)
        )
        self.metrics = AlertingMetrics(registry)
        self.tick_s = tick_s
        self.drain_timeout_s = drain_timeout_s
        self.am_resend_s = am_resend_s
        self.reset = reset
        self._wall = wall
        senders: dict[str, Any] = {}
        for name, ints in self.integrations.items():
            for i, integ in enumerate(ints):
                senders[f"{name}/{i}"] = integ
        for sc in self.side_channels:
            senders[sc.target] = sc
        self.dispatcher = Dispatcher(
            outbox,
            senders,
            policy=policy,
            concurrency=concurrency,
            lease_s=lease_s,
            poll_s=poll_s,
            metrics=self.metrics,
            wall=wall,
        )
        # Outbox items and state changes in one Redis transaction when both live in the
        # same Redis: stored separately, a failure between the two (Redis restarting) left
        # items whose idempotency key the re-decided notification reused with other alerts,
        # and those alerts were never sent (see :meth:`step`).
        self._atomic = (
            isinstance(store, RedisStore)
            and isinstance(outbox, RedisOutbox)
            and outbox.r is store.r
        )
        self._lock = threading.RLock()
        self._backlog: list[Observation] = []
        self._written_uncommitted: set[Any] = set()  # alerts-file lines of a failed commit
        self._backlog_lock = threading.Lock()
        self.max_backlog = 1_000_000
        self._known_version = -1
        self._known_meta: Any = object()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, threads: bool = True) -> None:
        """Load state and start the delivery and timer threads."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if self.reset:
                with self.store.lock():
                    self.store.reset()
                self.outbox.reset()
                if self.incidents is not None:
                    reset_incidents(self.store)
                if self.audit is not None:  # a fresh state has a fresh history
                    self.audit.path.unlink(missing_ok=True)
            with self.store.lock():
                self._sync(force=True)
        if threads:
            self.dispatcher.start()
            self._ticker = threading.Thread(
                target=self._tick_loop, name="vigil-alerting", daemon=True
            )
            self._ticker.start()

    def _tick_loop(self) -> None:
        last_resend = 0.0
        am = [sc for sc in self.side_channels if sc.kind == "alertmanager"]
        while not self._stop.wait(self.tick_s):
            try:
                self.run_step()
                if am and time.monotonic() - last_resend >= self.am_resend_s:
                    last_resend = time.monotonic()
                    firing = self.firing_alerts()
                    for sc in am:
                        sc.resend(firing)  # type: ignore[attr-defined]
            except Exception:  # the ticker must survive a store outage
                log.exception("alerting: timer step failed")

    def close(self) -> None:
        """Flush every group now, deliver what can be delivered within ``drain_timeout_s``
        (the rest stays in the outbox for the next start), and release everything."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=30)
        for _ in range(3):
            if self.run_step(flush_all=not self.finite, finish=self.finite):
                break
            time.sleep(1.0)
        else:
            log.error(
                "alerting: final flush failed; %d observation(s) not processed", len(self._backlog)
            )
        if self.engine.replayed:
            log.info(
                "alerting: %d detection(s) already processed before the restart were skipped",
                self.engine.replayed,
            )
        if self.engine.late:
            log.warning(
                "alerting: %d detection(s) arrived behind their feed's event time and were "
                "applied late (raise alerting.timing.lateness if inputs are out of order)",
                self.engine.late,
            )
        self.dispatcher.start()
        if not self.dispatcher.drain(self.drain_timeout_s):
            pending, _ = self.outbox.depth()
            log.warning(
                "alerting: %d notification(s) still in the outbox at shutdown; they are "
                "kept and delivered at the next start",
                pending,
            )
        self.dispatcher.stop()
        for ints in self.integrations.values():
            for integ in ints:
                with contextlib.suppress(Exception):
                    integ.close()
        for sc in self.side_channels:
            with contextlib.suppress(Exception):
                sc.close()
        for release in (
            self.alerts_file.close if self.alerts_file is not None else None,
            self.store.close,
            self.outbox.close,
        ):
            if release is None:
                continue
            try:
                release()
            except Exception:  # closing must not stop the dataflow's shutdown
                log.exception("alerting: error while closing")

    # -- steps -----------------------------------------------------------------------------
    def _sync(self, force: bool = False) -> None:
        v = self.store.version()
        if force or v != self._known_version:
            # force: the start. Detections no newer than the saved clocks were processed
            # before a restart; a source that replays them (at least once) is not heard.
            self.engine.load(self.store.load(), resume=force)
            if self.incidents is not None:
                self.incidents.correlator.load(load_incidents(self.store))
            self._known_version = v
        meta = self.store.meta_version()
        if force or meta != self._known_meta:
            self.engine.set_silences([*self.static_silences, *self.store.silences()])
            self.engine.set_acks(self.store.acks())
            self._known_meta = meta

    def observe(self, detections: Iterable[Detection | Watermark]) -> int:
        """Feed detections and watermarks (then run a step if anything is due); returns
        how many detections were accepted."""
        obs: list[Observation] = []
        marks: list[Watermark] = []
        for d in detections:
            if type(d) is Watermark:
                marks.append(d)
                continue
            assert isinstance(d, Detection)
            try:
                alert = alert_from_detection(d)
            except Exception as ex:
                log.warning("alerting: dropped a detection that cannot be encoded: %r", ex)
                self.metrics.failures.labels("alerting", "invalid_detection").inc()
                continue
            labels, ann = alert["labels"], alert["annotations"]
            for k in self.label_keys & ann.keys():
                labels[k] = ann.pop(k)
            if self.enrich is not None:
                self.enrich(labels, ann, d.episode_start)
            hold = d.hold_s or d.window_s
            obs.append(Observation(labels, ann, d.ts, d.start, hold, d.domain))
        if marks:
            with self._lock:
                for m in marks:
                    self.engine.progress(m.clock, m.producer, m.ts, m.of)
                due = self.engine.next_due() <= 0
            if due and not obs:
                self.run_step()
        if obs:
            self.run_step(obs)
        return len(obs)

    def run_step(
        self,
        observations: Sequence[Observation] = (),
        *,
        flush_all: bool = False,
        finish: bool = False,
    ) -> bool:
        """:meth:`step`, keeping the observations for the next try if the store fails
        (Redis restarting): the state is then reloaded and the step done again, so an
        outage delays alerts and loses none. Returns whether the step went through."""
        with self._backlog_lock:
            batch = [*self._backlog, *observations]
            self._backlog = []
        try:
            self.step(batch, flush_all=flush_all, finish=finish)
        except Exception as ex:
            log.warning(
                "alerting: step failed (%s); %d observation(s) kept for a retry",
                type(ex).__name__,
                len(batch),
            )
            self.metrics.failures.labels("alerting", "store_error").inc()
            with self._backlog_lock:
                keep = batch[-self.max_backlog :]
                if len(keep) < len(batch):
                    log.error(
                        "alerting: backlog full, %d observation(s) dropped", len(batch) - len(keep)
                    )
                self._backlog = [*keep, *self._backlog][-self.max_backlog :]
            return False
        return True

    def step(
        self,
        observations: Sequence[Observation] = (),
        *,
        flush_all: bool = False,
        finish: bool = False,
    ) -> list[Notification]:
        """One engine step under the locks (see the module docstring for the order)."""
        wall = self._wall()
        with self._lock:
            try:
                transitions, notes, audit, items = self._step_locked(
                    observations, flush_all, wall, finish
                )
            except Exception:
                # Under the lock, so no other thread steps on the half-done engine state
                # (it would commit alerts as notified whose outbox items were never stored).
                self._known_version = -1
                raise
            self._after(transitions, notes, audit)
        if items:
            self.dispatcher.wake()
        return notes

    def _step_locked(
        self,
        observations: Sequence[Observation],
        flush_all: bool,
        wall: float,
        finish: bool = False,
    ) -> tuple[list[Transition], list[Notification], list[dict[str, Any]], list[OutboxItem]]:
        with self.store.lock():
            self._sync()
            self.engine.observe_many(
                ob if ob.detected_wall else _with_wall(ob, wall) for ob in observations
            )
            notes = self.engine.finish() if finish else self.engine.tick(flush_all=flush_all)
            transitions = self.engine.drain_transitions()
            inc = self.incidents
            if inc is not None:
                notes = correlate_step(
                    inc.correlator,
                    self.engine.alerts,
                    (t.fingerprint for t in transitions),
                    notes,
                    receiver=inc.receiver,
                    alert_dict=self.engine.alert_dict,
                    suppress_members=inc.suppress_members,
                )
            inc_up, inc_gone = inc.correlator.drain_changes() if inc else ({}, set())
            items = self._render(notes)
            for sc in self.side_channels:
                items.extend(sc.on_transitions(transitions))
            atomic = bool(items) and self._atomic
            if items and not atomic:
                self.outbox.put(items, wall)
            # The alerts file before the commit: a crash in between replays the
            # detection after the restart and writes the line again (at least once).
            # A failed commit (Redis restarting) retries the step in this process; the
            # lines it already wrote are remembered and not written twice.
            self._write_fired(transitions)
            changes = self.engine.drain_changes()
            audit = [audit_record(t, wall=wall) for t in transitions]
            keep_audit = audit if self.audit is None else ()
            durable = bool(transitions or notes)
            if atomic:
                store, outbox = self.store, self.outbox
                assert isinstance(store, RedisStore) and isinstance(outbox, RedisOutbox)

                def also(p: Any) -> None:  # the outbox items and incidents of this step
                    outbox.queue_put(p, items, wall)
                    queue_incidents(p, store, inc_up, inc_gone)

                self._known_version = store.commit(changes, keep_audit, durable=durable, also=also)
            elif isinstance(self.store, RedisStore) and (inc_up or inc_gone):
                rs = self.store
                self._known_version = rs.commit(
                    changes, keep_audit, durable=durable,
                    also=lambda p: queue_incidents(p, rs, inc_up, inc_gone),
                )  # fmt: skip
            elif changes or keep_audit or inc_up or inc_gone:
                self._known_version = self.store.commit(changes, keep_audit, durable=durable)
                save_incidents(self.store, inc_up, inc_gone)
            self._written_uncommitted.clear()
        return transitions, notes, audit, items

    def _render(self, notes: list[Notification]) -> list[OutboxItem]:
        items: list[OutboxItem] = []
        for n in notes:
            self.metrics.notifications.labels(n.receiver, n.reason).inc()
            for i, integ in enumerate(self.integrations.get(n.receiver, ())):
                try:
                    items.extend(integ.render(n, f"{n.receiver}/{i}"))
                except Exception as ex:
                    log.warning("alerting: %s cannot render: %r", n.receiver, ex)
                    self.metrics.failures.labels(integ.kind, "render_error").inc()
        return items

    def _after(
        self,
        transitions: list[Transition],
        notes: list[Notification],
        audit: list[dict[str, Any]],
    ) -> None:
        # Counting walks every alert: refresh at most 4 times a second while alerts change,
        # once a second otherwise.
        if self.metrics.states_due(time.monotonic(), 0.25 if transitions else 1.0):
            self.metrics.states(self.engine.alerts_by_labels())
        if self.incidents is not None and transitions:  # incidents change only with alerts
            self.metrics.incidents(*self.incidents.correlator.counts())
        if self.audit is not None and audit:
            try:
                self.audit.write(audit)
            except OSError as ex:
                log.warning("alerting: cannot write the audit log: %s", ex)

    def _write_fired(self, transitions: list[Transition]) -> None:
        pending = self._written_uncommitted
        fired = [
            t.alert
            for t in transitions
            if t.new == "firing" and t.alert.get("dedup_key") not in pending
        ]
        if not fired:
            return
        pending.update(a.get("dedup_key") for a in fired)
        if self.alerts_file is not None:
            try:
                self.alerts_file.write(fired)
            except (OSError, ValueError) as ex:
                log.warning("alerting: cannot write the alerts file: %s", type(ex).__name__)
                self.metrics.failures.labels("jsonl", "io_error").inc()
        if self.on_alert is not None:
            for a in fired:
                try:
                    self.on_alert(a)
                except Exception as ex:
                    log.warning("alerting: on_alert raised %s", type(ex).__name__)

    def firing_alerts(self) -> list[dict[str, Any]]:
        """Alert dicts of every firing alert (for Alertmanager re-sends)."""
        with self._lock:
            return [
                self.engine.alert_dict(a)
                for a in self.engine.alerts.values()
                if a.state == "firing"
            ]


def _with_wall(ob: Observation, wall: float) -> Observation:
    return Observation(ob.labels, ob.annotations, ob.ts, ob.start, ob.hold_s, ob.domain, wall)
