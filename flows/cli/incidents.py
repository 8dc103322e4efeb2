"""Operator commands for incidents across feeds (registered into ``vigil`` by flows/cli).

::

    vigil incidents list [--state open|updated|resolved] [--json]
    vigil incidents show ID [--json]
    vigil incidents ack ID [--by NAME] [--comment TEXT]
    vigil incidents feedback ID false-positive|expected|confirmed [--for 24h] [--by NAME]

Every command takes ``--config FILE`` or ``--state-dir DIR`` (as ``vigil alerts``), and
reads the incidents the pipeline stored beside the alert state (``alerting.incidents``).
``ack`` and ``feedback`` apply to every member alert of the incident, exactly as
``vigil alerts ack`` and ``vigil feedback`` on each one.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vigil.flows.cli.alerts import (
    VERDICTS,
    _common,
    _iso,
    ack_record,
    cmd_feedback,
    duration,
    open_store,
)
from vigil.flows.errors import ConfigError
from vigil.sinks.alerting.incident_store import load_incidents
from vigil.sinks.alerting.incidents import INCIDENT_STATES, Incident
from vigil.sinks.alerting.store import StateStore
from vigil.sinks.alerts import ZERO_TIME


def _load(args: argparse.Namespace) -> tuple[StateStore, list[Incident]]:
    store = open_store(args, read_only=True)
    try:
        found = load_incidents(store)
    except Exception as ex:  # Redis down or refusing: one line, not a traceback
        msg = f"cannot read incidents from the alert state store: {type(ex).__name__}: {ex}"
        raise ConfigError(msg) from ex
    listed = sorted((i for i in found.values() if i.announced), key=lambda i: -i.opened_at)
    return store, listed


def _find(incidents: list[Incident], wanted: str) -> Incident:
    hits = [i for i in incidents if i.id == wanted] or [
        i for i in incidents if i.id.startswith(wanted) or i.id.startswith(f"inc-{wanted}")
    ]
    if len(hits) != 1:
        what = "no incident" if not hits else f"{len(hits)} incidents"
        msg = f"{what} with id {wanted!r} (vigil incidents list shows them)"
        raise ConfigError(msg)
    return hits[0]


def cmd_incidents_list(args: argparse.Namespace) -> int:
    store, incidents = _load(args)
    store.close()
    rows = [i for i in incidents if not args.state or i.state == args.state]
    if args.json:
        for i in rows:
            print(json.dumps(i.summary()))
        return 0
    if not rows:
        print("no incidents")
        return 0
    print(
        f"{'ID':16} {'STATE':9} {'SEVERITY':8} {'STARTS':20} {'ENDS':20} {'ALERTS':6} FEEDS / NAME"
    )
    for i in rows:
        print(
            f"{i.id:16} {i.state:9} {i.severity:8} {_iso(i.opened_at):20} "
            f"{_iso(i.resolved_at):20} {len(i.members):6} {','.join(i.feeds())}  {i.name}"
        )
    return 0


def cmd_incidents_show(args: argparse.Namespace) -> int:
    store, incidents = _load(args)
    store.close()
    inc = _find(incidents, args.id)
    s = inc.summary()
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"incident {inc.id}: {inc.name}")
    print(f"  state {inc.state}, severity {inc.severity}, feeds {', '.join(s['feeds'])}")
    print(f"  from {_iso(inc.opened_at)} to {_iso(inc.resolved_at)}; keys {', '.join(s['keys'])}")
    print("  timeline:")
    for m in s["timeline"]:
        ends = "-" if m["endsAt"] == ZERO_TIME else m["endsAt"]
        print(
            f"    {m['startsAt']:20} {ends:20} {m['status']:8} {m['feed']:15} "
            f"{m['alertname']:26} {m['fingerprint']} {m['entity']}"
        )
    return 0


def _members(store: StateStore, inc: Incident) -> list[Any]:
    """Member alerts the store still holds (resolved ones are kept for a day)."""
    alerts = store.load().alerts
    return [
        a
        for m in inc.members.values()
        if (a := alerts.get(m.fingerprint)) is not None
        and f"{a.fingerprint}@{int(a.active_at)}" == m.key
    ]


def cmd_incidents_ack(args: argparse.Namespace) -> int:
    store, incidents = _load(args)
    try:
        inc = _find(incidents, args.id)
        members = _members(store, inc)
        for a in members:
            comment = args.comment or f"incident {inc.id}"
            store.ack(a.fingerprint, ack_record(a, args.by, comment, incident=inc.id))
    finally:
        store.close()
    print(f"acknowledged incident {inc.id}: {len(members)} member alert(s)")
    return 0


def cmd_incidents_feedback(args: argparse.Namespace) -> int:
    store, incidents = _load(args)
    try:
        inc = _find(incidents, args.id)
        members = _members(store, inc)
    finally:
        store.close()
    failed = 0
    for a in members:  # the same record, silence and message as `vigil feedback` on each
        one = argparse.Namespace(**{**vars(args), "fingerprint": a.fingerprint})
        failed += cmd_feedback(one) != 0
    print(f"recorded {VERDICTS[args.verdict]} for incident {inc.id}: {len(members)} alert(s)")
    return 1 if failed else 0


def register(sub: Any) -> None:
    """Add ``incidents`` to the ``vigil`` command line."""
    p = sub.add_parser("incidents", help="incidents: alerts of several feeds joined")
    isub = p.add_subparsers(dest="incidents_command", required=True, metavar="ACTION")
    ls = isub.add_parser("list", help="incidents and their state, newest first")
    ls.add_argument("--state", choices=INCIDENT_STATES)
    ls.add_argument("--json", action="store_true", help="one JSON object per incident")
    _common(ls)
    ls.set_defaults(func=cmd_incidents_list)
    sh = isub.add_parser("show", help="one incident and the timeline of its alerts")
    sh.add_argument("id", help="incident id (a unique prefix is enough)")
    sh.add_argument("--json", action="store_true")
    _common(sh)
    sh.set_defaults(func=cmd_incidents_show)
    ack = isub.add_parser("ack", help="acknowledge every member alert")
    ack.add_argument("id", help="incident id (a unique prefix is enough)")
    ack.add_argument("--by", default="")
    ack.add_argument("--comment", default="")
    _common(ack)
    ack.set_defaults(func=cmd_incidents_ack)
    fb = isub.add_parser("feedback", help="responder feedback on every member alert")
    fb.add_argument("id", help="incident id (a unique prefix is enough)")
    fb.add_argument("verdict", choices=tuple(VERDICTS))
    fb.add_argument("--for", dest="period", type=duration, default="24h")
    fb.add_argument("--by", default="")
    fb.add_argument("--comment", default="")
    _common(fb)
    fb.set_defaults(func=cmd_incidents_feedback)
