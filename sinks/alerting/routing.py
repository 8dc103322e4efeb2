"""The routing tree: which receivers an alert goes to, grouped how, on what timers.

It follows Alertmanager's route semantics. An alert enters at the root (which matches
everything). At each node whose matchers match, the children are tried in order; a
matching child without ``continue`` stops the search among its siblings. If no child
matches, the node itself is the match. Children inherit every setting they do not set.

Examples
--------
>>> root = Route.build({
...     "receiver": "ops", "group_by": ["alertname"],
...     "routes": [
...         {"matchers": ["feed=security"], "receiver": "sec", "continue": True},
...         {"matchers": ['severity=~"high|critical"'], "receiver": "pager"},
...     ]})
>>> [r.receiver for r in root.match({"feed": "security", "severity": "high"})]
['sec', 'pager']
>>> [r.receiver for r in root.match({"feed": "media", "severity": "info"})]
['ops']
>>> root.group_key(root.routes[0], {"alertname": "x", "feed": "security"})
'{}/0:{alertname="x"}'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vigil.sinks.alerting.model import Matcher, matches_all, parse_duration, parse_matchers

#: Alertmanager's defaults.
DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class Route:
    """One node of the routing tree (settings already inherited from its parents).

    Parameters
    ----------
    receiver
        Name of the receiver alerts matched here go to.
    matchers
        All must match for the route to match (the root has none).
    group_by
        Labels whose values form a group; ``("...",)`` groups by all labels; ``()`` puts
        every alert of this route in one group.
    group_wait, group_interval, repeat_interval
        Seconds, with Alertmanager's meaning.
    continue_
        Keep matching the following siblings after this route matched.
    routes
        Children.
    path
        Position in the tree (``"{}"`` for the root, ``"{}/0/1"`` below it): part of
        the group key, so two routes never share a group.
    """

    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ()
    group_wait: float = DEFAULT_GROUP_WAIT
    group_interval: float = DEFAULT_GROUP_INTERVAL
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    path: str = "{}"
    mute_windows: tuple[str, ...] = field(default=())

    @classmethod
    def build(cls, spec: Mapping[str, Any], parent: Route | None = None, path: str = "{}") -> Route:
        """Build a tree from a mapping (the shape of the ``alerting.route`` config key)."""

        def get(key: str, default: Any) -> Any:
            value = spec.get(key)
            return default if value is None else value

        p = parent
        receiver = get("receiver", p.receiver if p else None)
        if not receiver:
            msg = f"route {path}: no receiver (the root route must name one)"
            raise ValueError(msg)
        group_by = get("group_by", p.group_by if p else ())
        node = cls(
            receiver=str(receiver),
            matchers=parse_matchers(spec.get("matchers") or ()),
            group_by=tuple(group_by),
            group_wait=parse_duration(get("group_wait", p.group_wait if p else DEFAULT_GROUP_WAIT)),
            group_interval=parse_duration(
                get("group_interval", p.group_interval if p else DEFAULT_GROUP_INTERVAL)
            ),
            repeat_interval=parse_duration(
                get("repeat_interval", p.repeat_interval if p else DEFAULT_REPEAT_INTERVAL)
            ),
            continue_=bool(spec.get("continue", False)),
            path=path,
            mute_windows=tuple(get("mute_windows", p.mute_windows if p else ())),
        )
        children = tuple(
            cls.build(child, node, f"{path}/{i}")
            for i, child in enumerate(spec.get("routes") or ())
        )
        return _replace_routes(node, children)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """Routes (leaves of the search) an alert with these labels goes to."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that identify the alert's group on this route."""
        if "..." in self.group_by:
            return dict(sorted(labels.items()))
        return {k: labels[k] for k in sorted(self.group_by) if k in labels}

    def group_key(self, route: Route, labels: Mapping[str, str]) -> str:
        """Alertmanager-style group key: ``<route path>:{name="value",...}``."""
        gl = route.group_labels(labels)
        inner = ",".join(f'{k}="{v}"' for k, v in gl.items())
        return f"{route.path}:{{{inner}}}"

    def walk(self) -> Sequence[Route]:
        """This route and all its descendants, depth first."""
        out: list[Route] = [self]
        for child in self.routes:
            out.extend(child.walk())
        return out


def _replace_routes(node: Route, routes: tuple[Route, ...]) -> Route:
    from dataclasses import replace

    return replace(node, routes=routes)
