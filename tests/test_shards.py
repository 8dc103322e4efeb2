"""Shard keys spread evenly over a cluster's workers, as bytewax itself routes them.

Each case runs a real bytewax dataflow on W worker threads (``cluster_main``) and records
which worker's stateful step holds each shard key: the feeds' default shard counts must
split evenly, and :func:`bytewax_route` must predict bytewax's own placement.
"""

from __future__ import annotations

import threading
from collections import Counter

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, cluster_main
from vigil.flows.config.base import shard_of
from vigil.flows.config.shards import bytewax_route, shard_index, shard_names


def placement(keys: list[str], workers: int) -> dict[str, str]:
    """Worker thread that held each key's state."""
    seen: dict[str, str] = {}
    lock = threading.Lock()

    def hold(state: None, key: str) -> tuple[None, str]:
        with lock:
            seen[key] = threading.current_thread().name
        return state, key

    flow = Dataflow("placement")
    keyed = op.input("in", flow, TestingSource([(k, k) for k in keys]))
    out = op.stateful_map("hold", keyed, hold)
    op.inspect("drop", out, lambda *_: None)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return seen


@pytest.mark.parametrize(("shards", "workers"), [(16, 2), (16, 4), (8, 2), (16, 3)])
def test_every_worker_holds_an_equal_share_of_the_shards(shards: int, workers: int) -> None:
    names = shard_names(shards)
    seen = placement(names, workers)
    shares = sorted(Counter(seen.values()).values())
    assert len(shares) == workers and shares[-1] - shares[0] <= 1, shares


def test_the_plain_indexes_were_uneven_and_the_route_predicts_bytewax() -> None:
    plain = [str(i) for i in range(16)]
    seen = placement(plain, 2)
    assert sorted(Counter(seen.values()).values()) == [6, 10]  # why labels exist
    # Same partition as bytewax's: keys on one thread share bytewax_route(key) % 2.
    by_thread: dict[str, set[int]] = {}
    for key, thread in seen.items():
        by_thread.setdefault(thread, set()).add(bytewax_route(key) % 2)
    assert sorted(len(v) for v in by_thread.values()) == [1, 1]


def test_a_key_keeps_its_shard_and_the_label_names_its_index() -> None:
    names = shard_names(16)
    assert [shard_index(n) for n in names] == list(range(16))
    ip = "203.0.113.7"
    assert shard_of(ip, 16) == shard_of(ip, 16) and shard_of(ip, 16) in names
