"""The episode's evidence: top items stay right as evidence grows, snapshots keep their shape."""

from __future__ import annotations

import pickle

from vigil.flows.security.episodes import _EVIDENCE_TOP, _Episode


def _expected(c: dict[str, int]) -> tuple[tuple[str, int], ...]:
    ranked = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:_EVIDENCE_TOP]
    return tuple(ranked)


def test_top_follows_new_items_and_counts() -> None:
    ep = _Episode(0.0, 1.0, 0.0)
    for i in range(80):  # past the 64 items a list keeps: the rest count as "other"
        ep.count("ports", f"{i % 70}/tcp", 1 + i % 3)
        got = dict(ep.top())["ports"]
        assert got == _expected(ep.evidence["ports"]), i


def test_snapshot_holds_only_state_and_restores_the_same_top() -> None:
    ep = _Episode(5.0, 2.0, 1.0, hold=60.0)
    for p in ("22", "80", "22", "443"):
        ep.count("ports", p)
    before = ep.top()
    state = ep.__getstate__()
    assert len(state) == len(_Episode._STATE)  # the cache is not part of a snapshot
    back = pickle.loads(pickle.dumps(ep))
    assert back.top() == before
    back.count("ports", "8080", 5)
    assert dict(back.top())["ports"][0] == ("8080", 5)
