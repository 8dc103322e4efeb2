"""Operator commands of the alerting pipeline (registered into ``vigil`` by flows/cli/__init__.py).

::

    vigil alerts list [--state pending|firing|resolved] [-l label=value ...] [--json]
    vigil alerts ack FINGERPRINT [--by NAME] [--comment TEXT]
    vigil alerts outbox [--requeue-dead]
    vigil silence add MATCHER... [--for 2h | --until ISO-TIME] [--from ISO-TIME]
                      --author NAME --comment TEXT
    vigil silence list [--all]
    vigil silence expire ID
    vigil feedback FINGERPRINT false-positive|expected|confirmed [--for 24h] [--by NAME]

Every command takes ``--config FILE`` (the store it names: Redis, or the state folder)
or ``--state-dir DIR`` (a folder store, e.g. ``vigil-out/alerting`` after ``vigil demo``).

Feedback is stored per fingerprint in the Redis hash ``<prefix>:feedback`` (every record
also in the stream ``<prefix>:feedback:log``) or in ``<state dir>/feedback.jsonl``. Each
record carries ``fingerprint``, ``key`` (``feed:kind:entity``, as
``Detection.fingerprint_key``), ``labels``, ``verdict`` (``false_positive``, ``expected``,
``confirmed``), ``startsAt``/``endsAt`` of the alert, ``at``, ``by`` and ``comment``:
backtests label detections with it. A false positive also silences that alert's
``alertname``, ``feed`` and ``entity`` for ``--for`` (24 h by default).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from vigil.flows.config import VigilConfig, load_config, parse_config
from vigil.flows.errors import ConfigError
from vigil.sinks.alerting.model import Alert, Matcher, Silence, parse_duration
from vigil.sinks.alerting.store import StateStore, new_silence_id

VERDICTS = {"false-positive": "false_positive", "expected": "expected", "confirmed": "confirmed"}


def _config(args: argparse.Namespace) -> VigilConfig:
    cfg = load_config(args.config) if args.config else parse_config({})
    if getattr(args, "state_dir", None):
        st = cfg.alerting.state.model_copy(update={"dir": args.state_dir})
        cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"state": st})})
    return cfg


def open_store(args: argparse.Namespace, *, read_only: bool = False) -> StateStore:
    """The state store named by ``--config``/``--state-dir``; says on stderr which it is.

    With ``read_only`` a folder store that does not exist is not created: a
    :class:`ConfigError` says where it looked instead.
    """
    from vigil.flows.alerting_wiring import make_store, redis_url, state_dir

    cfg = _config(args)
    url = redis_url(cfg, os.environ)
    if url:
        print(f"alert state: Redis {url.split('@')[-1]}", file=sys.stderr)
    else:
        d = state_dir(cfg)
        if read_only and not d.is_dir():
            msg = (
                f"no alert state in {d} (run vigil demo, replay or run first, or name the "
                "store with --state-dir DIR or --config FILE)"
            )
            raise ConfigError(msg)
        print(f"alert state: {d}", file=sys.stderr)
    return make_store(cfg)


def duration(text: str) -> float:
    """An argparse type: ``30s``, ``5m``, ``4h``, ``1d`` in seconds."""
    try:
        return parse_duration(text)
    except ValueError as ex:
        raise argparse.ArgumentTypeError(str(ex)) from None


def matcher(text: str) -> Matcher:
    """An argparse type: ``name=value``, ``name!=value``, ``name=~re``, ``name!~re``."""
    try:
        return Matcher.parse(text)
    except ValueError as ex:  # a bad regular expression is a ValueError too
        raise argparse.ArgumentTypeError(str(ex)) from None


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(text: str) -> float:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        msg = f"time needs a time zone: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return dt.timestamp()


# ---------------------------------------------------------------- alerts
def cmd_alerts_list(args: argparse.Namespace) -> int:
    store = open_store(args, read_only=True)
    snap = store.load()
    acks = store.acks()
    silences = store.silences()
    now = time.time()
    wanted = list(args.label or [])
    rows = []
    for a in sorted(snap.alerts.values(), key=lambda a: (a.state, -a.active_at)):
        if args.state and a.state != args.state:
            continue
        if not all(m.matches(a.labels) for m in wanted):
            continue
        ack = acks.get(a.fingerprint)
        acked = ack is not None and float(ack.get("active_at", -1)) == a.active_at
        muted = [s.id for s in silences if s.mutes(a.labels, now)]
        rows.append((a, acked, muted))
    if args.json:
        for a, acked, muted in rows:
            print(json.dumps({**a.to_dict(), "acked": acked, "silenced_by": muted}))
        return 0
    if not rows:
        print("no alerts")
        return 0
    print(
        f"{'STATE':9} {'FINGERPRINT':16} {'SEVERITY':8} {'ALERTNAME':28} {'STARTS':20} "
        f"{'LAST SEEN':20} FLAGS  ENTITY"
    )
    print("FLAGS: A = acknowledged, S = silenced, - = not", file=sys.stderr)
    for a, acked, muted in rows:
        flags = ("A" if acked else "-") + ("S" if muted else "-")
        print(
            f"{a.state:9} {a.fingerprint:16} {a.labels.get('severity', ''):8} "
            f"{a.labels.get('alertname', ''):28} {_iso(a.active_at):20} {_iso(a.last_seen):20} "
            f"{flags:6} {a.labels.get('entity', '')}"
        )
    return 0


def _find_alert(store: StateStore, fingerprint: str) -> Any:
    alerts = store.load().alerts
    hits = [a for fp, a in alerts.items() if fp.startswith(fingerprint)]
    if len(hits) != 1:
        what = "no alert" if not hits else f"{len(hits)} alerts"
        print(f"{what} with fingerprint {fingerprint!r}", file=sys.stderr)
        return None
    return hits[0]


def ack_record(a: Alert, by: str, comment: str, **more: Any) -> dict[str, Any]:
    """What an acknowledgement of ``a`` stores (it holds until the alert's episode ends)."""
    return {
        "fingerprint": a.fingerprint,
        "active_at": a.active_at,
        "at": time.time(),
        "by": by,
        "comment": comment,
        **more,
    }


def cmd_alerts_ack(args: argparse.Namespace) -> int:
    store = open_store(args, read_only=True)
    a = _find_alert(store, args.fingerprint)
    if a is None:
        return 1
    store.ack(a.fingerprint, ack_record(a, args.by, args.comment))
    store.close()
    print(
        f"acknowledged {a.fingerprint} ({a.labels.get('alertname')} {a.labels.get('entity')}):"
        " no repeat notifications until it resolves"
    )
    return 0


def cmd_alerts_outbox(args: argparse.Namespace) -> int:
    from vigil.flows.alerting_wiring import make_outbox

    outbox = make_outbox(_config(args))
    try:
        if args.requeue_dead:
            n = outbox.requeue_dead(time.time())
            print(f"requeued {n} dead item(s)")
        pending, dead = outbox.depth()
        print(f"pending: {pending}  dead: {dead}")
        for it in outbox.dead_items():
            print(
                f"  dead {it.id} -> {it.target} ({it.kind}) after {it.attempts} attempt(s): "
                f"{it.last_reason} {it.last_status or ''}"
            )
    finally:
        outbox.close()
    return 0


# ---------------------------------------------------------------- silences
def cmd_silence_add(args: argparse.Namespace) -> int:
    matchers = tuple(args.matchers)
    start = args.starts_at if args.starts_at is not None else time.time()
    end = args.until if args.until is not None else start + args.duration
    if end <= start:
        print("vigil silence add: the silence ends before it starts", file=sys.stderr)
        return 2
    s = Silence(new_silence_id(), matchers, start, end, args.author, args.comment, time.time())
    store = open_store(args)  # a silence may be set before the first run
    store.add_silence(s)
    store.close()
    print(s.id)
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:
    store = open_store(args, read_only=True)
    now = time.time()
    rows = [s for s in store.silences() if args.all or s.state(now) != "expired"]
    if not rows:
        print("no silences")
        return 0
    print(f"{'ID':32} {'STATE':8} {'STARTS':20} {'ENDS':20} {'AUTHOR':12} MATCHERS / COMMENT")
    for s in sorted(rows, key=lambda s: s.starts_at):
        print(
            f"{s.id:32} {s.state(now):8} {_iso(s.starts_at):20} {_iso(s.ends_at):20} "
            f"{s.created_by[:12]:12} {' '.join(str(m) for m in s.matchers)}  # {s.comment}"
        )
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    store = open_store(args, read_only=True)
    try:
        hits = [s.id for s in store.silences() if s.id.startswith(args.id)]
        if len(hits) != 1:
            what = "no silence" if not hits else f"{len(hits)} silences"
            print(f"{what} with id {args.id!r}", file=sys.stderr)
            return 1
        if not store.expire_silence(hits[0], time.time()):
            print(f"silence {hits[0]} has expired already", file=sys.stderr)
            return 1
    finally:
        store.close()
    print(f"expired {hits[0]}")
    return 0


# ---------------------------------------------------------------- feedback
def cmd_feedback(args: argparse.Namespace) -> int:
    store = open_store(args, read_only=True)
    a = _find_alert(store, args.fingerprint)
    if a is None:
        return 1
    verdict = VERDICTS[args.verdict]
    now = time.time()
    lab = a.labels
    rec = {
        "fingerprint": a.fingerprint,
        "key": f"{lab.get('feed', '')}:{lab.get('alertname', '')}:{lab.get('entity', '')}",
        "labels": dict(lab),
        "verdict": verdict,
        "startsAt": _iso(a.active_at),
        "endsAt": _iso(a.ends_at) if a.ends_at is not None else None,
        "active_at": a.active_at,
        "last_seen": a.last_seen,
        "at": now,
        "by": args.by,
        "comment": args.comment,
    }
    if verdict == "false_positive":
        period = args.period
        matchers = tuple(
            Matcher(k, "=", lab[k]) for k in ("alertname", "feed", "entity") if k in lab
        )
        s = Silence(
            new_silence_id(),
            matchers,
            now,
            now + period,
            args.by,
            f"false positive (feedback): {args.comment}".strip(),
            now,
        )
        store.add_silence(s)
        rec["silence_id"] = s.id
        rec["until"] = now + period
    store.add_feedback(rec)
    store.close()
    extra = f"; silenced until {_iso(rec['until'])} ({rec['silence_id']})" if "until" in rec else ""
    print(f"recorded {verdict} for {a.fingerprint} ({rec['key']}){extra}")
    return 0


# ---------------------------------------------------------------- registration
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="configuration file (its alerting.state store)")
    p.add_argument("--state-dir", help="a folder store (default <alerts file folder>/alerting)")


def register(sub: Any) -> None:
    """Add ``alerts``, ``silence`` and ``feedback`` to the ``vigil`` command line."""
    al = sub.add_parser("alerts", help="list and acknowledge alerts")
    asub = al.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    ls = asub.add_parser("list", help="alerts and their state")
    ls.add_argument("--state", choices=("pending", "firing", "resolved"))
    ls.add_argument(
        "-l",
        "--label",
        action="append",
        metavar="LABEL=VALUE",
        type=matcher,
        help="filter (matchers: =, !=, =~, !~); repeatable",
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per alert")
    _common(ls)
    ls.set_defaults(func=cmd_alerts_list)
    ack = asub.add_parser("ack", help="acknowledge: no repeat notifications until resolved")
    ack.add_argument("fingerprint", help="fingerprint (a unique prefix is enough)")
    ack.add_argument("--by", default="", help="who acknowledges")
    ack.add_argument("--comment", default="")
    _common(ack)
    ack.set_defaults(func=cmd_alerts_ack)
    ob = asub.add_parser("outbox", help="pending and dead deliveries")
    ob.add_argument("--requeue-dead", action="store_true", help="retry dead items again")
    _common(ob)
    ob.set_defaults(func=cmd_alerts_outbox)

    si = sub.add_parser("silence", help="add, list and expire silences")
    ssub = si.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    add = ssub.add_parser("add", help="mute alerts matching every matcher")
    add.add_argument(
        "matchers",
        nargs="+",
        metavar="MATCHER",
        type=matcher,
        help='label matchers: name=value, name!=value, name=~"re", name!~"re"',
    )
    add.add_argument(
        "--for", dest="duration", type=duration, default="2h", help="duration (default 2h)"
    )
    add.add_argument("--until", type=_when, help="end time (ISO 8601 with zone)")
    add.add_argument("--from", dest="starts_at", type=_when, help="start time (default now)")
    add.add_argument("--author", required=True)
    add.add_argument("--comment", required=True)
    _common(add)
    add.set_defaults(func=cmd_silence_add)
    sl = ssub.add_parser("list", help="active and pending silences")
    sl.add_argument("--all", action="store_true", help="include expired ones")
    _common(sl)
    sl.set_defaults(func=cmd_silence_list)
    ex = ssub.add_parser("expire", help="end a silence now")
    ex.add_argument("id", help="silence id (a unique prefix is enough)")
    _common(ex)
    ex.set_defaults(func=cmd_silence_expire)

    fb = sub.add_parser("feedback", help="responder feedback on an alert")
    fb.add_argument("fingerprint", help="fingerprint (a unique prefix is enough)")
    fb.add_argument("verdict", choices=tuple(VERDICTS))
    fb.add_argument(
        "--for",
        dest="period",
        type=duration,
        default="24h",
        help="how long a false positive silences the entity (default 24h)",
    )
    fb.add_argument("--by", default="")
    fb.add_argument("--comment", default="")
    _common(fb)
    fb.set_defaults(func=cmd_feedback)
