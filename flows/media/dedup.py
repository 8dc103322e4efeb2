"""Near-duplicate grouping of the media flow: MinHash signatures and their LSH index.

Copies of one story (retweets, syndicated articles) share most of their word shingles;
:func:`minhash` summarises a text's shingles in 48 values whose share of equal positions
estimates the Jaccard similarity of two texts, and :class:`MinHashIndex` finds a stored
signature similar enough (locality-sensitive hashing on 16 bands). Signatures are plain
bytes, stable across processes (BLAKE2b, seeded permutations), so recovery snapshots and
restarts keep grouping copies.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import repeat

import numpy as np

__all__ = ["MinHashIndex", "jaccard", "minhash", "minhash_many", "shingles"]

_NUM_PERM = 48
_BANDS = 16  # 16 bands of 3 values: a pair with Jaccard 0.5 shares a band with p = 0.88
_ROWS = _NUM_PERM // _BANDS
_SEEDS = np.random.default_rng(20150217).integers(0, 2**63, size=_NUM_PERM, dtype=np.uint64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(31)
_blake8 = partial(hashlib.blake2b, digest_size=8)
_digest = type(hashlib.blake2b()).digest  # the unbound method: hashing runs in map(), in C
_BAND_SLICES = tuple(slice(i * 4 * _ROWS, (i + 1) * 4 * _ROWS) for i in range(_BANDS))


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


def shingles(words: Sequence[str], size: int = 3) -> list[str]:
    """Overlapping runs of ``size`` words (the whole text if it is shorter).

    >>> shingles(["a", "b", "c", "d"])
    ['a b c', 'b c d']
    """
    if len(words) < size:
        return [" ".join(words)] if words else []
    if size == 3:  # the default, without a slice per shingle
        return list(map(" ".join, zip(words, words[1:], words[2:], strict=False)))
    return [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]


def minhash(words: Sequence[str], shingle: int = 3) -> bytes:
    """MinHash signature (48 x 32 bits) of a text's word shingles.

    The share of equal positions in two signatures estimates the Jaccard similarity of
    their shingle sets (Broder 1997). Short texts such as tweets keep most of their
    shingles when copied with a prefix (``RT @user:``) or a suffix (``- VnExpress``), so
    copies score about 0.8-0.9 and unrelated texts about 0.

    Parameters
    ----------
    words
        The text's words, already normalised (folded).
    shingle
        Words per shingle.

    Examples
    --------
    >>> a = minhash("flood closes the road to the district hospital this morning".split())
    >>> b = minhash("rt user flood closes the road to the district hospital this morning".split())
    >>> c = minhash("council approves the new budget for schools and clinics".split())
    >>> jaccard(a, b) > 0.5 > jaccard(a, c)
    True

    References
    ----------
    .. [1] Broder, A. Z. (1997). On the resemblance and containment of documents.
       Compression and Complexity of Sequences. .. [2] Leskovec, Rajaraman, Ullman,
       Mining of Massive Datasets, ch. 3 (banding for locality-sensitive hashing).
    """
    feats = shingles(words, shingle)
    if not feats:
        return b""
    x = np.fromiter((_h64(f) for f in feats), dtype=np.uint64, count=len(feats))
    v = (x[:, None] ^ _SEEDS[None, :]) * _MIX  # multiply-xorshift: one hash per seed
    v ^= v >> np.uint64(31)
    return bytes((v.min(axis=0) >> np.uint64(32)).astype(np.uint32).tobytes())


_local = threading.local()
_KEEP_ROWS = 1 << 16  # buffers kept per thread up to 2 x 25 MB (a 4,000-tweet batch)


def _buffers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (n x 48) uint64 work arrays, reused between batches of this thread.

    A batch's arrays are megabytes: allocated afresh, each can be mapped and page-faulted
    in again, which cost up to 4x the arithmetic on them (measured on a 500-tweet batch).
    Per thread, as numpy releases the GIL.
    """
    bufs: tuple[np.ndarray, np.ndarray] | None = getattr(_local, "bufs", None)
    if bufs is None or len(bufs[0]) < n:
        fresh = (np.empty((n, _NUM_PERM), np.uint64), np.empty((n, _NUM_PERM), np.uint64))
        if n > _KEEP_ROWS:
            return fresh
        bufs = _local.bufs = fresh
    return bufs[0][:n], bufs[1][:n]


def minhash_many(texts: Sequence[Sequence[str]], shingle: int = 3) -> list[bytes]:
    """:func:`minhash` of many texts at once (the same signatures, one numpy pass).

    >>> t = ["a flood closes the road".split(), [], "council meets".split()]
    >>> minhash_many(t) == [minhash(x) for x in t]
    True
    """
    feats = [shingles(w, shingle) for w in texts]
    flat = [f for fs in feats for f in fs]
    if not flat:
        return [b""] * len(texts)
    digests = b"".join(map(_digest, map(_blake8, map(str.encode, flat))))
    x = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    v, tmp = _buffers(len(flat))
    np.bitwise_xor(x[:, None], _SEEDS[None, :], out=v)
    np.multiply(v, _MIX, out=v)
    np.right_shift(v, _SHIFT, out=tmp)
    np.bitwise_xor(v, tmp, out=v)
    sizes = [len(fs) for fs in feats]
    starts = np.cumsum([0, *sizes[:-1]])
    nonempty = [i for i, n in enumerate(sizes) if n]
    mins = np.minimum.reduceat(v, starts[nonempty], axis=0)
    raw = (mins >> np.uint64(32)).astype(np.uint32).tobytes()
    w = 4 * _NUM_PERM
    out = [b""] * len(texts)
    for j, i in enumerate(nonempty):
        out[i] = raw[j * w : (j + 1) * w]
    return out


def jaccard(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two :func:`minhash` signatures."""
    if not a or not b:
        return 0.0
    return float((np.frombuffer(a, np.uint32) == np.frombuffer(b, np.uint32)).mean())


class MinHashIndex:
    """Recent signatures, searchable by estimated Jaccard similarity, each with its story.

    Locality-sensitive hashing: the 48 values are cut into 16 bands of 3, and only
    signatures sharing a band are compared. Entries older than ``horizon_s`` (event time)
    or beyond ``max_items`` are forgotten, oldest first.

    Parameters
    ----------
    threshold
        Least estimated Jaccard similarity for two texts to be copies of one story.
    horizon_s
        How long a story can collect copies, in seconds of event time.
    max_items
        Most signatures kept (each costs about 300 bytes).

    Examples
    --------
    >>> idx = MinHashIndex()
    >>> a = minhash("flood closes the road to the district hospital".split())
    >>> b = minhash("rt flood closes the road to the district hospital".split())
    >>> c = minhash("council approves the budget for new schools".split())
    >>> idx.assign(a, "s1", 0.0), idx.assign(b, "s2", 1.0), idx.assign(c, "s3", 2.0)
    (('s1', True), ('s1', False), ('s3', True))
    """

    def __init__(
        self, threshold: float = 0.5, horizon_s: float = 172_800.0, max_items: int = 50_000
    ) -> None:
        self.threshold = threshold
        self.horizon_s = horizon_s
        self.max_items = max_items
        self._seq = 0
        self._items: dict[int, tuple[bytes, str, float]] = {}  # seq -> (sig, story, ts)
        # seq -> the entry's band keys (the objects the bands hold): not cut again on removal.
        self._band_keys: dict[int, list[bytes]] = {}
        # Per band: key -> the one entry with it, or the set of them (most keys have one:
        # an int saves building a set per band per item).
        self._bands: list[dict[bytes, int | set[int]]] = [{} for _ in range(_BANDS)]
        # No stored entry has a number below this. Entries leave oldest first, and a dict
        # emptied at its front is slow to iterate from there, so the oldest is found by
        # counting up from here.
        self._head = 1

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _keys(sig: bytes) -> list[bytes]:
        return list(map(sig.__getitem__, _BAND_SLICES))

    def _hits(self, keys: list[bytes]) -> list[int | set[int] | None]:
        """What each band holds under the signature's key in it."""
        return list(map(dict.get, self._bands, keys))

    def find(self, sig: bytes, keys: list[bytes] | None = None) -> str | None:
        """The story of the most similar stored signature at or above the threshold."""
        if not sig:
            return None
        return self._match(sig, self._hits(keys or self._keys(sig)))

    def _match(self, sig: bytes, hits: list[int | set[int] | None]) -> str | None:
        if not any(hits):  # the common case: no band shared (entries are >= 1, sets non-empty)
            return None
        cands: set[int] = set()
        for hit in hits:
            if hit is None:
                continue
            if isinstance(hit, int):
                cands.add(hit)
            else:
                cands |= hit
        if not cands:
            return None
        if len(cands) == 1:  # the common case: one candidate, often an exact copy
            (i,) = cands
            other, story = self._items[i][0], self._items[i][1]
            if other == sig:
                return story if self.threshold <= 1.0 else None
            sim = float((np.frombuffer(other, np.uint32) == np.frombuffer(sig, np.uint32)).mean())
            return story if sim >= self.threshold else None
        ids = list(cands)
        mine = np.frombuffer(sig, np.uint32)
        mat = np.frombuffer(b"".join(self._items[i][0] for i in ids), np.uint32).reshape(
            len(ids), -1
        )
        sims = (mat == mine).mean(axis=1)
        best = int(np.argmax(sims))
        return self._items[ids[best]][1] if sims[best] >= self.threshold else None

    def assign(self, sig: bytes, new_id: str, ts: float) -> tuple[str, bool]:
        """The story of signature ``sig``: an existing one, or ``new_id`` (then ``True``)."""
        self._expire(ts)
        if not sig:
            return new_id, True
        story = self._insert(sig, new_id, ts, search=True)
        return (new_id, True) if story is None else (story, False)

    def _add(self, sig: bytes, sid: str, ts: float) -> None:
        self._insert(sig, sid, ts, search=False)

    def _insert(self, sig: bytes, sid: str, ts: float, *, search: bool) -> str | None:
        """Store ``sig`` under story ``sid``, or under the story of the most similar stored
        signature when ``search`` finds one (returned, else ``None``).

        One dict operation per band: ``setdefault`` stores the entry's number where the
        band does not hold the key yet and returns what it held otherwise."""
        keys = self._keys(sig)
        self._seq += 1
        k = self._seq
        held = list(map(dict.setdefault, self._bands, keys, repeat(k)))
        story = None
        if held.count(k) != _BANDS:  # some band holds the key already (sets never equal k)
            hits = [None if h is k else h for h in held]
            if search:
                story = self._match(sig, hits)
            for band, key, cur in zip(self._bands, keys, hits, strict=True):
                if cur is None:
                    continue
                if isinstance(cur, int):
                    band[key] = {cur, k}
                else:
                    cur.add(k)
        self._items[k] = (sig, sid if story is None else story, ts)
        self._band_keys[k] = keys
        if len(self._items) > self.max_items:
            self._drop(self._oldest())
        return story

    def _oldest(self) -> int:
        """The number of the oldest stored entry (there is one)."""
        items = self._items
        k = getattr(self, "_head", 1)
        while k not in items:
            k += 1
        self._head = k
        return k

    def _drop(self, k: int) -> None:
        sig = self._items.pop(k)[0]
        keys = self._band_keys.pop(k, None) or self._keys(sig)
        # One dict operation per band: take the key out, and put back what others share.
        held = list(map(dict.pop, self._bands, keys, repeat(None)))
        if held.count(k) == _BANDS:  # the entry alone in every band (a set never equals k)
            return
        for band, key, s in zip(self._bands, keys, held, strict=True):
            if s is None or s == k:
                continue
            if isinstance(s, int):  # another entry's key: not ours to remove
                band[key] = s
            else:
                s.discard(k)
                if s:
                    band[key] = s

    def _expire(self, now: float) -> None:
        horizon = now - self.horizon_s
        items = self._items
        if not items:
            return
        k = self._oldest()
        while items[k][2] < horizon:  # oldest first, as _oldest() would find them
            self._drop(k)
            if not items:
                return
            k += 1
            while k not in items:
                k += 1
            self._head = k

    def snapshot(self) -> tuple[tuple[bytes, str, float], ...]:
        return tuple(self._items.values())

    def restore(self, items: Iterable[tuple[bytes, str, float]]) -> None:
        self._items = {}
        self._band_keys = {}
        self._bands = [{} for _ in range(_BANDS)]
        self._seq = 0
        self._head = 1
        for sig, sid, ts in items:
            self._add(sig, sid, ts)
