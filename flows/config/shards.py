"""Shard keys that bytewax spreads evenly over the workers of a cluster.

The feeds key their stateful steps by a *shard* (a source address, an agency or a series
hashed into ``shards`` buckets). Bytewax sends a key to worker
``siphash13(key bytes + 0xff, keys 0, 0) % worker_count`` (Rust's ``DefaultHasher`` over a
``String``; checked against bytewax 0.21.1 by ``tests/test_shards.py``), which put 10 of the
16 security shards ``"0"``..``"15"`` on one worker of two. Each shard here gets a label that
bytewax routes to worker ``index % W`` for every worker count ``W`` dividing
:data:`ROUTE_MODULUS` (840 = lcm(1..8): 1-8, 10, 12, 14, 15, 20, 21, 24, 28 ... workers), so
the labels stay the same when a cluster is rescaled and each worker holds an equal share.
More than 64 shards use the modulus 24 (1, 2, 3, 4, 6, 8, 12, 24 workers), so finding the
labels stays cheap (a few ms for 16 shards, about 0.5 s for 4096).

A label is the shard's index, or ``index~k`` when the index alone would land elsewhere;
:func:`shard_index` reads the index back (watermark producers are named by it).
"""

from __future__ import annotations

import functools

ROUTE_MODULUS = 840
_SMALL_MODULUS = 24
_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def bytewax_route(key: str) -> int:
    """Bytewax's routing hash of a state key (worker = this % worker count).

    >>> [bytewax_route(str(i)) % 2 for i in range(6)]
    [1, 1, 1, 1, 0, 0]
    """
    data = key.encode() + b"\xff"
    v0, v1 = 0x736F6D6570736575, 0x646F72616E646F6D
    v2, v3 = 0x6C7967656E657261, 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M64
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M64
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M64
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M64
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sip_round()
        v0 ^= m
    b = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= b
    sip_round()
    v0 ^= b
    v2 ^= 0xFF
    sip_round()
    sip_round()
    sip_round()
    return (v0 ^ v1 ^ v2 ^ v3) & _M64


@functools.cache
def _label(index: int, modulus: int) -> str:
    want = index % modulus
    cand = str(index)
    k = 0
    while bytewax_route(cand) % modulus != want:
        cand = f"{index}~{k}"
        k += 1
    return cand


def modulus_for(shards: int) -> int:
    return ROUTE_MODULUS if shards <= 64 else _SMALL_MODULUS


def shard_label(index: int, shards: int) -> str:
    """The key of shard ``index`` of ``shards``: on worker ``index % W`` of ``W`` workers."""
    return _label(index, modulus_for(shards))


def shard_names(shards: int) -> list[str]:
    """Every shard's key, in index order.

    >>> names = shard_names(16)
    >>> sorted(sum(1 for n in names if bytewax_route(n) % 2 == w) for w in (0, 1))
    [8, 8]
    """
    return [shard_label(i, shards) for i in range(shards)]


def shard_index(label: str) -> int:
    """The index a shard label stands for.

    >>> shard_index("7~112"), shard_index("3")
    (7, 3)
    """
    return int(label.partition("~")[0])


def worker_shares(shards: int, workers: int) -> list[int]:
    """How many of the shards each of ``workers`` workers holds (for the bench and docs).

    >>> worker_shares(16, 2), worker_shares(16, 3)
    ([8, 8], [6, 5, 5])
    """
    shares = [0] * workers
    for name in shard_names(shards):
        shares[bytewax_route(name) % workers] += 1
    return shares
