"""The alerting engine against Alertmanager's (and Prometheus alerting rules') documented
behaviour: lifecycle, grouping, routing, silences, maintenance windows and inhibition.

Pure Python with a hand-moved clock: every case states the behaviour it checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from vigil.sinks.alerting.engine import AlertEngine, ManualClock, ReceiverOptions
from vigil.sinks.alerting.model import (
    InhibitRule,
    MaintenanceWindow,
    Notification,
    Silence,
    parse_matchers,
)
from vigil.sinks.alerting.routing import Route

T0 = 1_700_000_000.0


def make(route: Route | None = None, **kw: Any) -> tuple[AlertEngine, ManualClock]:
    clock = ManualClock(T0)
    kw.setdefault("keep_firing_for_s", 300.0)
    eng = AlertEngine(
        route
        or Route(
            receiver="ops",
            group_by=("alertname",),
            group_wait=30,
            group_interval=300,
            repeat_interval=3600,
        ),
        clock=clock,
        wall=clock.now,
        **kw,
    )
    return eng, clock


def labels(name: str = "ssh_brute_force", entity: str = "203.0.113.7", **extra: str) -> dict:
    return {"alertname": name, "entity": entity, "feed": "security", "severity": "high", **extra}


def see(eng: AlertEngine, clock: ManualClock, **kw: Any) -> None:
    lab = labels(**kw)
    eng.observe(lab, {"summary": f"{lab['alertname']} {lab['entity']}"}, clock.now())


def run(
    eng: AlertEngine,
    clock: ManualClock,
    until: float,
    step: float = 1.0,
    feed: Callable[[float], None] | None = None,
) -> list[Notification]:
    """Tick every ``step`` seconds up to ``T0 + until``; ``feed(t)`` observes at times t."""
    out: list[Notification] = []
    while clock.now() < T0 + until:
        clock.advance(step)
        if feed is not None:
            feed(clock.now() - T0)
        out.extend(eng.tick())
    return out


def state(eng: AlertEngine, **kw: Any) -> str:
    from vigil.sinks.alerts import fingerprint

    a = eng.alerts.get(fingerprint(labels(**kw)))
    return "inactive" if a is None else a.state


# ---------------------------------------------------------------------------- lifecycle
@dataclass
class LifeCase:
    doc: str
    for_s: float
    observe_at: tuple[float, ...]  # seconds after T0 (observations every listed time)
    check_at: float
    expected: str
    transitions: tuple[str, ...] = field(default=())


LIFECYCLE = [
    # Prometheus: with `for: 0` an alert fires on the first evaluation where it holds.
    LifeCase("for 0 fires at once", 0, (0,), 1, "firing", ("inactive->pending", "pending->firing")),
    # Prometheus: an alert stays pending until its condition held for `for`.
    LifeCase("pending before for", 60, (0, 20, 40), 50, "pending", ("inactive->pending",)),
    LifeCase(
        "firing after for",
        60,
        (0, 20, 40, 60),
        61,
        "firing",
        ("inactive->pending", "pending->firing"),
    ),
    # Prometheus: a pending alert whose condition stops is dropped, never notified
    # (here "stops" = no observation for keep_firing_for).
    LifeCase(
        "pending dropped", 600, (0, 10), 400, "inactive", ("inactive->pending", "pending->inactive")
    ),
    # keep_firing_for: firing continues while observations come less than 300 s apart...
    LifeCase(
        "kept firing", 0, (0, 250, 500), 700, "firing", ("inactive->pending", "pending->firing")
    ),
    # ...and resolves keep_firing_for after the last one.
    LifeCase(
        "resolved after keep_firing_for",
        0,
        (0, 250),
        551,
        "resolved",
        ("inactive->pending", "pending->firing", "firing->resolved"),
    ),
    # A new observation after the resolve starts a new episode (pending, then firing).
    LifeCase(
        "new episode",
        0,
        (0, 400),
        401,
        "firing",
        (
            "inactive->pending",
            "pending->firing",
            "firing->resolved",
            "resolved->pending",
            "pending->firing",
        ),
    ),
]


@pytest.mark.parametrize("case", LIFECYCLE, ids=lambda c: c.doc)
def test_lifecycle(case: LifeCase) -> None:
    eng, clock = make(for_s=case.for_s)
    at = set(case.observe_at)

    def feed(t: float) -> None:
        if t in at:
            see(eng, clock)

    see(eng, clock) if 0 in at else None
    eng.tick()
    run(eng, clock, case.check_at, feed=feed)
    assert state(eng) == case.expected
    got = tuple(f"{t.old}->{t.new}" for t in eng.drain_transitions())
    assert got == case.transitions


def test_resolved_alert_has_event_time_end_and_is_forgotten_after_retention() -> None:
    eng, clock = make(resolved_retention_s=3600)
    see(eng, clock)
    run(eng, clock, 301)
    (a,) = eng.alerts.values()
    assert a.state == "resolved" and a.ends_at == T0 + 300
    run(eng, clock, 301 + 3600)
    assert eng.alerts == {}


def test_replayed_observation_of_a_finished_episode_is_ignored() -> None:
    # At-least-once sinks replay a resume epoch: an old detection must not reopen it.
    eng, clock = make()
    see(eng, clock)
    run(eng, clock, 400)
    eng.observe(labels(), {}, T0)  # event time of the first episode
    assert state(eng) == "resolved"


def test_startsat_is_event_time_and_engine_time_drives_timers() -> None:
    # A replay: event times years ago, engine time follows them (an event-time clock).
    clock = ManualClock(0.0, follow_events=True)
    eng = AlertEngine(Route(receiver="ops", group_wait=10), clock=clock, wall=clock.now)
    eng.observe(labels(), {}, 1490000000.0)
    clock.advance(10)
    (n,) = eng.tick()
    assert n.alerts[0]["startsAt"] == "2017-03-20T08:53:20Z"


# ---------------------------------------------------------------------------- grouping
def reasons(ns: list[Notification]) -> list[tuple[str, int, int]]:
    """(reason, firing, resolved) per notification."""
    return [
        (
            n.reason,
            sum(a["status"] == "firing" for a in n.alerts),
            sum(a["status"] == "resolved" for a in n.alerts),
        )
        for n in ns
    ]


def keep_alive(eng: AlertEngine, clock: ManualClock, entities: dict[str, tuple[float, float]]):
    """Observe each entity every 60 s while start <= t < stop."""

    def feed(t: float) -> None:
        for e, (start, stop) in entities.items():
            if start <= t < stop and (t - start) % 60 == 0:
                see(eng, clock, entity=e)

    return feed


GROUPING = [
    # group_wait: alerts arriving within group_wait of a new group go out together.
    (
        "first notification batches group_wait",
        {"a": (0, 10_000), "b": (20, 10_000)},
        40,
        [("first_notification", 2, 0)],
    ),
    # group_interval: an alert joining a flushed group waits for the next interval.
    (
        "new alert waits group_interval",
        {"a": (0, 10_000), "b": (100, 10_000)},
        400,
        [("first_notification", 1, 0), ("new_alerts", 2, 0)],
    ),
    # Nothing changed: nothing is sent until repeat_interval (3600 s) has passed, at the
    # first flush after it (flushes at 30 + k * 300 s; 3630 is not yet > 30 + 3600).
    (
        "repeat interval",
        {"a": (0, 100_000)},
        4000,
        [("first_notification", 1, 0), ("repeat", 1, 0)],
    ),
    # send_resolved: a resolve among firing alerts is notified at the next interval.
    (
        "some resolved",
        {"a": (0, 10_000), "b": (0, 200)},
        1000,
        [("first_notification", 2, 0), ("some_resolved", 1, 1)],
    ),
    # Everything resolved: one last notification with status resolved.
    ("all resolved", {"a": (0, 100)}, 1000, [("first_notification", 1, 0), ("all_resolved", 0, 1)]),
    # Fired and resolved before the group's first flush: the receiver never knew, so
    # nothing is sent (DedupStage: no entry and no firing alerts).
    ("fired and resolved within group_wait", {"a": (0, 1)}, 2000, []),
]


@pytest.mark.parametrize(
    ("doc", "entities", "until", "expected"), GROUPING, ids=[g[0] for g in GROUPING]
)
def test_grouping(doc: str, entities: dict, until: float, expected: list) -> None:
    eng, clock = make(
        keep_firing_for_s=120 if doc == "fired and resolved within group_wait" else 300
    )
    if doc == "fired and resolved within group_wait":
        eng.route = Route(receiver="ops", group_by=("alertname",), group_wait=600)
        eng._routes = {r.path: r for r in eng.route.walk()}
    feed = keep_alive(eng, clock, entities)
    feed(0)
    out = eng.tick()
    out += run(eng, clock, until, feed=feed)
    assert reasons(out) == expected


def test_send_resolved_false_sends_no_resolves() -> None:
    eng, clock = make(receivers={"ops": ReceiverOptions(send_resolved=False)})
    feed = keep_alive(eng, clock, {"a": (0, 10_000), "b": (0, 100)})
    feed(0)
    out = run(eng, clock, 2000, feed=feed)
    assert reasons(out) == [("first_notification", 2, 0)]
    # Alertmanager still logs the change, so no "repeat" is triggered by it early.


def test_group_by_splits_groups_and_dots_mean_every_label() -> None:
    eng, clock = make(Route(receiver="ops", group_by=("entity",), group_wait=5))
    see(eng, clock, entity="a")
    see(eng, clock, entity="b")
    out = run(eng, clock, 10)
    assert sorted(n.group_labels["entity"] for n in out) == ["a", "b"]
    eng2, clock2 = make(Route(receiver="ops", group_by=("...",), group_wait=5))
    see(eng2, clock2, entity="a")
    (n,) = run(eng2, clock2, 10)
    assert n.group_labels == labels(entity="a")


def test_acknowledged_alerts_get_no_repeats() -> None:
    eng, clock = make()
    feed = keep_alive(eng, clock, {"a": (0, 100_000)})
    feed(0)
    out = run(eng, clock, 100, feed=feed)
    (a,) = eng.alerts.values()
    eng.set_acks({a.fingerprint: {"active_at": a.active_at}})
    out += run(eng, clock, 8000, feed=feed)
    assert reasons(out) == [("first_notification", 1, 0)]


def test_notification_ids_are_stable_and_distinct() -> None:
    def ids() -> list[str]:
        eng, clock = make()
        feed = keep_alive(eng, clock, {"a": (0, 10_000), "b": (100, 10_000)})
        feed(0)
        return [n.id for n in run(eng, clock, 400, feed=feed)]

    first, again = ids(), ids()
    assert first == again and len(set(first)) == 2


# ---------------------------------------------------------------------------- routing
TREE = Route.build(
    {
        "receiver": "ops",
        "group_by": ["alertname"],
        "group_wait": "30s",
        "routes": [
            # equality; continue: the next siblings are tried as well
            {
                "matchers": ["feed=security"],
                "receiver": "soc",
                "continue": True,
                "group_by": ["entity"],
            },
            # anchored regex: "high" does not match "highest"
            {"matchers": ['severity=~"high|critical"'], "receiver": "pager", "group_wait": "0s"},
            # negative matchers; first match wins among siblings without continue
            {
                "matchers": ["feed=service_queues", "agency!=police"],
                "receiver": "agency-hooks",
                "routes": [{"matchers": ['agency=~"fire|ems"'], "receiver": "fire-dept"}],
            },
            {"matchers": ["feed=service_queues"], "receiver": "never-reached-for-non-police"},
        ],
    }
)

ROUTING = [
    ({"feed": "security", "severity": "high"}, ["soc", "pager"]),
    ({"feed": "security", "severity": "warning"}, ["soc"]),
    ({"feed": "media", "severity": "highest"}, ["ops"]),
    ({"feed": "service_queues", "agency": "fire", "severity": "info"}, ["fire-dept"]),
    ({"feed": "service_queues", "agency": "parks", "severity": "info"}, ["agency-hooks"]),
    (
        {"feed": "service_queues", "agency": "police", "severity": "info"},
        ["never-reached-for-non-police"],
    ),
]


@pytest.mark.parametrize(("lab", "receivers"), ROUTING)
def test_routing(lab: dict, receivers: list[str]) -> None:
    assert [r.receiver for r in TREE.match(lab)] == receivers


def test_children_inherit_and_override_settings() -> None:
    soc, pager = TREE.routes[0], TREE.routes[1]
    assert soc.group_by == ("entity",) and soc.group_wait == 30.0
    assert pager.group_by == ("alertname",) and pager.group_wait == 0.0
    assert TREE.routes[2].routes[0].repeat_interval == 4 * 3600.0  # Alertmanager's default


def test_one_alert_notifies_every_matching_route() -> None:
    eng, clock = make(TREE)
    see(eng, clock, severity="critical")
    out = run(eng, clock, 31)
    assert sorted((n.receiver, n.group_key) for n in out) == [
        ("pager", '{}/1:{alertname="ssh_brute_force"}'),
        ("soc", '{}/0:{entity="203.0.113.7"}'),
    ]


# ---------------------------------------------------------------------------- silences
def silence(start: float, end: float, *matchers: str) -> Silence:
    return Silence("s1", parse_matchers(matchers), T0 + start, T0 + end, "op", "maintenance")


SILENCES = [
    # A silence whose matchers all match mutes the alert for its duration.
    ("muted", silence(0, 1000, "entity=203.0.113.7"), []),
    # A silence that does not match everything leaves the alert alone.
    ("other entity", silence(0, 1000, "entity=198.51.100.1"), [("first_notification", 1, 0)]),
    (
        "partial match",
        silence(0, 1000, "entity=203.0.113.7", "severity=warning"),
        [("first_notification", 1, 0)],
    ),
    # A silence not yet started (pending) does not mute.
    ("pending silence", silence(500, 1000, "alertname=~ssh_.*"), [("first_notification", 1, 0)]),
    # When the silence expires, the still-firing alert is notified at the next flush.
    ("expires", silence(0, 200, "alertname=ssh_brute_force"), [("first_notification", 1, 0)]),
]


@pytest.mark.parametrize(("doc", "sil", "expected"), SILENCES, ids=[s[0] for s in SILENCES])
def test_silences(doc: str, sil: Silence, expected: list) -> None:
    eng, clock = make()
    eng.set_silences([sil])
    feed = keep_alive(eng, clock, {"203.0.113.7": (0, 10_000)})
    feed(0)
    out = run(eng, clock, 400, feed=feed)
    assert reasons(out) == expected


def test_a_resolve_the_receiver_needs_passes_a_silence() -> None:
    # Told "firing" before the silence started: the receiver must still hear the resolve.
    eng, clock = make()
    feed = keep_alive(eng, clock, {"a": (0, 100)})
    feed(0)
    out = run(eng, clock, 50, feed=feed)
    eng.set_silences([silence(60, 10_000, "entity=a")])
    out += run(eng, clock, 1000, feed=feed)
    assert reasons(out) == [("first_notification", 1, 0), ("all_resolved", 0, 1)]


def window(name: str = "sunday", **kw: Any) -> MaintenanceWindow:
    return MaintenanceWindow(
        name, parse_matchers(kw.pop("matchers", ())), ("sun",), "02:00", "04:00", "Asia/Ho_Chi_Minh"
    )


SUNDAY_3AM = datetime(2024, 6, 2, 3, 0, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh")).timestamp()


@pytest.mark.parametrize(("start", "muted"), [(SUNDAY_3AM, True), (SUNDAY_3AM + 7200, False)])
def test_maintenance_window_mutes_in_local_time(start: float, muted: bool) -> None:
    clock = ManualClock(start)
    eng = AlertEngine(
        Route(receiver="ops", group_wait=10),
        clock=clock,
        wall=clock.now,
        maintenance_windows=[window(matchers=("feed=security",))],
    )
    eng.observe(labels(), {}, start)
    clock.advance(10)
    assert (eng.tick() == []) is muted


def test_route_mute_window_applies_to_that_route_only() -> None:
    route = Route.build(
        {
            "receiver": "ops",
            "group_wait": 10,
            "routes": [
                {
                    "matchers": ["feed=security"],
                    "receiver": "soc",
                    "continue": True,
                    "mute_windows": ["sunday"],
                },
                {"matchers": ["feed=security"], "receiver": "pager"},
            ],
        }
    )
    clock = ManualClock(SUNDAY_3AM)
    eng = AlertEngine(route, clock=clock, wall=clock.now, maintenance_windows=[window()])
    eng.observe(labels(), {}, SUNDAY_3AM)
    clock.advance(10)
    assert [n.receiver for n in eng.tick()] == ["pager"]


# ---------------------------------------------------------------------------- inhibition
CRIT_MUTES_WARN = InhibitRule(
    parse_matchers(["severity=critical"]), parse_matchers(["severity=warning"]), ("entity",)
)


def test_inhibition_mutes_targets_with_equal_labels_only() -> None:
    eng, clock = make(
        Route(receiver="ops", group_by=("...",), group_wait=10), inhibit_rules=[CRIT_MUTES_WARN]
    )
    see(eng, clock, name="ssh_success_after_failures", severity="critical", entity="a")
    see(eng, clock, name="ssh_user_enumeration", severity="warning", entity="a")  # muted
    see(eng, clock, name="ssh_user_enumeration", severity="warning", entity="b")  # other entity
    out = run(eng, clock, 11)
    assert sorted((n.group_labels["alertname"], n.group_labels["entity"]) for n in out) == [
        ("ssh_success_after_failures", "a"),
        ("ssh_user_enumeration", "b"),
    ]


def test_target_is_notified_once_its_source_resolves() -> None:
    eng, clock = make(
        Route(receiver="ops", group_by=("...",), group_wait=10, group_interval=60),
        inhibit_rules=[CRIT_MUTES_WARN],
    )
    feed = keep_alive(eng, clock, {})

    def both(t: float) -> None:
        if t % 60 == 0:
            if t < 100:
                see(eng, clock, name="compromise", severity="critical", entity="a")
            see(eng, clock, name="enum", severity="warning", entity="a")

    del feed
    both(0)
    out = run(eng, clock, 600, feed=both)
    got = [(n.group_labels["alertname"], n.reason) for n in out]
    assert ("enum", "first_notification") in got
    assert got.index(("compromise", "first_notification")) < got.index(
        ("enum", "first_notification")
    )


def test_inhibition_lets_resolves_through() -> None:
    # The warning was notified as firing; then the critical fires and the warning
    # resolves: the receiver still gets the resolve (Alertmanager would drop it).
    eng, clock = make(
        Route(receiver="ops", group_by=("...",), group_wait=10, group_interval=60),
        inhibit_rules=[CRIT_MUTES_WARN],
    )

    def feed(t: float) -> None:
        if t % 60 == 0:
            if t < 120:
                see(eng, clock, name="enum", severity="warning", entity="a")
            if t >= 60:
                see(eng, clock, name="compromise", severity="critical", entity="a")

    feed(0)
    out = run(eng, clock, 1000, feed=feed)
    enum = [n.reason for n in out if n.group_labels["alertname"] == "enum"]
    assert enum == ["first_notification", "all_resolved"]


def test_an_alert_matching_both_sides_does_not_inhibit_itself_or_its_peers() -> None:
    # Alertmanager: alerts matching both source and target do not inhibit each other.
    rule = InhibitRule(
        parse_matchers(["feed=security"]), parse_matchers(["feed=security"]), ("feed",)
    )
    eng, clock = make(Route(receiver="ops", group_by=("...",), group_wait=10), inhibit_rules=[rule])
    see(eng, clock, entity="a")
    see(eng, clock, entity="b")
    assert len(run(eng, clock, 11)) == 2
