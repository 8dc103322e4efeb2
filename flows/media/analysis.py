"""Stories, volumes, negative surges and emerging stories over a stream of media items.

:class:`MediaAnalyzer` is plain Python (no bytewax): the flow feeds it batches of
:class:`~vigil.flows.media.records.MediaItem` in roughly event-time order and gets detections and
telemetry back. It works in event time on buckets of ``bucket_s`` seconds; a bucket is
closed once an item ``allowed_lateness_s`` newer than its end has arrived (or at the end
of input, or by the wall clock when the stream is live: :meth:`MediaAnalyzer.tick`).
Items for an already closed bucket are *late*: they are still de-duplicated and counted in
the metrics, but no longer change the windows.

On each closed bucket:

- **Volume**: each watched entity's mentions in the bucket (copies included: a retweet
  is attention) go through its own :class:`~vigil.detectors.mention_volume.MentionVolume`.
- **Negative surge**: negatives ``k`` of ``n`` mentions of an entity over the last
  ``window_s`` against the entity's own share ``p0`` (an exponentially decayed count of
  older buckets): a binomial z-score ``(k - n p0) / sqrt(n p0 (1 - p0))``.
- **Emerging stories**: every term (word or two-word phrase) counts the *stories* (not
  copies) using it per bucket. A term bursts when its count over the last ``window_s`` is
  ``ratio`` times and ``z`` Poisson deviations above its own baseline rate (decayed,
  learned from buckets as they leave the window, so a burst does not raise its own bar).
  Bursting terms that co-occur in stories form one emerging story, reported with its
  top terms and example headlines; one that touches a watched entity is a hot issue.

A condition that keeps holding is reported again at most once per window.

**Episodes.** Alerting makes one alert of each episode of a (kind, entity), so every
detection says which episode it belongs to: ``start`` (the event time of the episode's
first detection, the same on all of them), ``hold_s``, ``start_value``, ``peak`` and
``first_seen``. An episode holds for ``hold_s`` after each of its detections (up to and
including ``ts + hold_s``, as alerting applies a detection due at the instant its alert
would resolve before resolving it); a detection of the same kind and entity later than
that opens a new episode, with a new ``start``.
``hold_s`` is the kind's re-report interval rounded up to whole buckets, plus one bucket
(:meth:`MediaAnalyzer._hold`): a condition that keeps holding is reported again on the
first bucket end at least that interval after its last report, so that report falls
inside the hold and a lasting condition stays one alert, while a condition that lapsed
for longer than the hold is a new episode. Evidence (``terms``, ``sources`` by publisher,
counts of mentions) comes with each detection; author hashes never do.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vigil.detectors.mention_volume import MentionVolume, MentionVolumeState
from vigil.flows.media.config import MediaConfig

# The window records stay importable here: recovery snapshots pickle them by module path.
from vigil.flows.media.episodes import (
    FEED,
    Episode,
    _Bucket,
    _clip,
    _evidence,
    _fill_defaults,
    _fmt,
    _host,
    _inputs,
    _note_origin,
    _ongoing,
    _Origin,
    _publishers,
    _StoryRef,
    _top,
)
from vigil.flows.media.records import MediaItem, MediaTally
from vigil.flows.media.stories import _add, _StoryTerms
from vigil.flows.media.text import MinHashIndex
from vigil.flows.media.tracks import StoryTrack

from vigil.records import Detection, SeriesPoint

_MAX_EMPTY_BUCKETS = 50_000  # a jump in event time beyond this is not filled bucket by bucket


@dataclass(frozen=True, slots=True)
class MediaSnapshot:
    """Everything the analyzer learned, as picklable values."""

    dedup: tuple[tuple[bytes, str, float], ...]
    seq: int
    next_bucket: float | None
    first_bucket: float | None
    newest: float
    open_buckets: tuple[tuple[float, _Bucket], ...]
    volume: tuple[tuple[str, MentionVolumeState], ...]
    totals: tuple[tuple[str, int], ...]
    neg_window: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]
    neg_base: tuple[tuple[str, float, float], ...]
    term_window: tuple[_Bucket, ...]
    term_base: tuple[tuple[str, float, int], ...]
    base_weight: float
    n_closed: int
    last_fired: tuple[tuple[tuple[str, str], float], ...]
    active_stories: tuple[tuple[str, float], ...]  # no longer used (story tracks replace it)
    episodes: tuple[tuple[tuple[str, str], Episode], ...] = ()
    tracks: tuple[StoryTrack, ...] = ()
    was_bursting: tuple[str, ...] = ()  # terms bursting at the last close
    early_fired: tuple[str, ...] = ()  # terms flagged early since the last close


class MediaAnalyzer(_StoryTerms):
    """Stateful media analysis (see the module docstring).

    Parameters
    ----------
    cfg
        The media section of the configuration.
    names
        Display names of watched entities by id (for alert texts).
    now
        Wall clock, for :meth:`tick` (injected so tests control it).

    Examples
    --------
    >>> from vigil.flows.media.config import MediaConfig, WatchEntity
    >>> cfg = MediaConfig(watch=(WatchEntity(id="vl", aliases=("Văn Lâm",)),))
    >>> an = MediaAnalyzer(cfg)
    >>> it = MediaItem(ts=0.0, source="t", item_id="1", author="", title="", text="x",
    ...                url="", language="vi", entities=("vl",), signature=b"")
    >>> out = an.process([it]) + an.flush()
    >>> [type(o).__name__ for o in out]
    ['MediaTally', 'MediaTally']
    """

    def __init__(
        self,
        cfg: MediaConfig,
        names: dict[str, str] | None = None,
        *,
        now: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.cfg = cfg
        self.names = names or {e.id: (e.name or e.id) for e in cfg.watch}
        self.entities = tuple(e.id for e in cfg.watch)
        self.now = now or time.time
        d = cfg.dedup
        self._dedup = MinHashIndex(d.threshold, d.horizon_s, d.max_items)
        self._seq = 0
        self._open: dict[float, _Bucket] = {}
        self._next: float | None = None
        self._first: float | None = None
        self._newest = -math.inf
        vr = cfg.rules.volume
        self._vparams = vr.detector.model_dump()
        self._volume: dict[str, MentionVolume] = {}
        self._totals: Counter[str] = Counter()
        bs = cfg.bucket_s
        ns = cfg.rules.negative_surge
        self._neg_k = max(1, round(ns.window_s / bs))
        self._neg_decay = 0.5 ** (bs / ns.half_life_s)
        self._neg_window: dict[str, deque[tuple[int, int]]] = {}
        self._neg_base: dict[str, list[float]] = {}  # entity -> [n, negatives], decayed
        self._neg_sums: dict[str, list[int]] = {}  # entity -> [n, negatives] in the window
        hi = cfg.rules.hot_issue
        self._hot_k = max(1, round(hi.window_s / bs))
        self._term_decay = 0.5 ** (bs / hi.half_life_s)
        self._term_window: deque[_Bucket] = deque()
        self._hot_terms: dict[str, int] = {}
        self._hot_big: set[str] = set()
        self._hot_n = 0
        self._open_terms: Counter[str] = Counter()
        self._open_n = 0
        self._bars: dict[str, int] = {}
        self._early_fired: set[str] = set()
        self._was_bursting: set[str] = set()
        self._term_base: dict[str, tuple[float, int]] = {}  # term -> (rate, bucket index)
        self._base_weight = 0.0  # sum of EWMA weights so far: debiases young baselines
        self._n_closed = 0
        self._last: dict[tuple[str, str], float] = {}
        self._episodes: dict[tuple[str, str], Episode] = {}  # (kind, entity) -> current
        self._tracks: dict[str, StoryTrack] = {}  # story id -> what it was at last report
        self._top_terms: tuple[tuple[str, float], ...] = ()

    # ------------------------------------------------------------------ state
    def snapshot(self) -> MediaSnapshot:
        return MediaSnapshot(
            dedup=self._dedup.snapshot(),
            seq=self._seq,
            next_bucket=self._next,
            first_bucket=self._first,
            newest=self._newest,
            open_buckets=tuple(self._open.items()),
            volume=tuple((k, v.snapshot()) for k, v in self._volume.items()),
            totals=tuple(self._totals.items()),
            neg_window=tuple((k, tuple(v)) for k, v in self._neg_window.items()),
            neg_base=tuple((k, v[0], v[1]) for k, v in self._neg_base.items()),
            term_window=tuple(self._term_window),
            term_base=tuple((t, r, i) for t, (r, i) in self._term_base.items()),
            base_weight=self._base_weight,
            n_closed=self._n_closed,
            last_fired=tuple(self._last.items()),
            active_stories=(),
            episodes=tuple(self._episodes.items()),
            tracks=tuple(self._tracks.values()),
            was_bursting=tuple(sorted(self._was_bursting)),
            early_fired=tuple(sorted(self._early_fired)),
        )

    def restore(self, s: MediaSnapshot) -> None:
        self._dedup.restore(s.dedup)
        self._seq = s.seq
        self._next = s.next_bucket
        self._first = s.first_bucket
        self._newest = s.newest
        self._open = dict(s.open_buckets)
        # A snapshot taken before evidence or episodes were tracked lacks them: start empty.
        for bk in (*self._open.values(), *s.term_window):
            _fill_defaults(bk)
            for r in bk.stories:
                _fill_defaults(r)
        for k, st in s.volume:
            det = MentionVolume(**self._vparams)
            det.restore(st)
            self._volume[k] = det
        self._totals = Counter(dict(s.totals))
        self._neg_window = {k: deque(v, maxlen=self._neg_k) for k, v in s.neg_window}
        self._neg_base = {k: [n, m] for k, n, m in s.neg_base}
        self._neg_sums = {}  # recounted from the windows when next needed
        self._term_window = deque(s.term_window)
        self._hot_terms = {}
        recent = self._recent_buckets(self._hot_k)
        for b in recent:
            _add(self._hot_terms, b.terms, 1)
        floor = self.cfg.rules.hot_issue.min_stories
        self._hot_big = {t for t, c in self._hot_terms.items() if c >= floor}
        self._hot_n = sum(len(b.stories) for b in recent)
        self._open_terms = Counter()
        for b in self._open.values():
            self._open_terms.update(b.terms)
        self._open_n = sum(len(b.stories) for b in self._open.values())
        self._term_base = {t: (r, i) for t, r, i in s.term_base}
        self._base_weight = s.base_weight
        self._n_closed = s.n_closed
        self._last = dict(s.last_fired)
        self._episodes = dict(getattr(s, "episodes", ()))
        # A snapshot from before story tracks: stories found after the restore get new ids.
        self._tracks = {t.story_id: t for t in getattr(s, "tracks", ())}
        self._was_bursting = set(getattr(s, "was_bursting", ()))
        self._early_fired = set(getattr(s, "early_fired", ()))
        self._bars = {}

    # ------------------------------------------------------------------ input
    def process(self, items: Iterable[MediaItem]) -> list[Any]:
        """Add items; return detections and telemetry of the buckets they close.

        Items are taken in order: a bucket closes as soon as an item ``allowed_lateness_s``
        newer than its end arrives (whatever the batch size), and a new story whose terms
        pass the burst bar is flagged at once (:meth:`_early_item`)."""
        tally = MediaTally()
        out: list[Any] = [tally]
        counts = tally.items
        cfg = self.cfg
        bs = cfg.bucket_s
        lat = cfg.allowed_lateness_s
        dedup = cfg.dedup.enabled
        assign = self._dedup.assign
        open_buckets = self._open
        open_terms = self._open_terms
        totals = self._totals
        close_at = self._close_at()
        for it in items:
            self._seq += 1
            sid, new = (
                assign(it.signature, f"s{self._seq:x}", it.ts)
                if (dedup and it.signature)
                else (f"s{self._seq:x}", True)
            )
            k = (it.source, "story" if new else "copy")
            counts[k] = counts.get(k, 0) + 1
            ts = it.ts
            if ts > self._newest:
                self._newest = ts
                if ts >= close_at:
                    out.extend(self._close_until(ts - lat))
                    close_at = self._close_at()
            b = ts - ts % bs
            if self._next is not None and b < self._next:
                tally.late += 1
                continue
            if self._first is None or b < self._first:
                self._first = b
            bucket = open_buckets.get(b)
            if bucket is None:
                bucket = open_buckets[b] = _Bucket()
                close_at = min(close_at, self._close_at())
            clip = None
            if it.entities:
                origin = (it.source, it.publisher or _host(it.url))
                negative = it.sentiment == "negative"
                for e in it.entities:
                    bucket.mentions[e] += 1
                    totals[e] += 1
                    if new:
                        bucket.stories_by_entity[e] += 1
                    _note_origin(bucket.origins, bucket.first, e, origin, ts)
                    if negative:
                        bucket.negative[e] += 1
                        _note_origin(bucket.neg_origins, bucket.neg_first, e, origin, ts)
                        c = bucket.neg_terms.get(e)
                        if c is None:
                            c = bucket.neg_terms[e] = Counter()
                        c.update(it.terms)
                        ex = bucket.neg_examples.setdefault(e, [])
                        if len(ex) < 20:
                            if clip is None:
                                clip = _clip(it.title or it.text)
                            ex.append((clip, it.url))
            if new:
                terms = it.terms
                bucket.terms.update(terms)
                open_terms.update(terms)
                self._open_n += 1
                bucket.stories.append(
                    _StoryRef(
                        sid,
                        ts,
                        _clip(it.title or it.text) if clip is None else clip,
                        it.url,
                        it.entities,
                        frozenset(terms),
                        it.source,
                        it.publisher,
                    )
                )
                if self._early_ready(ts):
                    self._early_item(ts, terms, out)
        return out

    def _close_at(self) -> float:
        """The newest event time at which the oldest open bucket closes."""
        if not self._open:
            return math.inf
        b = self._next if self._next is not None else min(self._open)
        return b + self.cfg.bucket_s + self.cfg.allowed_lateness_s

    def flush(self) -> list[Any]:
        """Close every open bucket (end of input)."""
        if not self._open:
            return [MediaTally()]
        return [MediaTally(), *self._close_until(max(self._open) + self.cfg.bucket_s)]

    def tick(self) -> list[Any]:
        """Close buckets by the wall clock when the stream is live.

        A live feed can go quiet; its last buckets must still close. When the newest item
        is within a day of the wall clock, buckets that ended ``allowed_lateness_s`` ago
        by the wall clock are closed. Replays of old data are left to event time.
        """
        now = self.now()
        if not self._open or now - self._newest > 86_400.0:
            return []
        return self._close_until(now - self.cfg.allowed_lateness_s)

    def next_tick(self) -> float | None:
        """Wall time at which :meth:`tick` would close the oldest open bucket."""
        if not self._open or self.now() - self._newest > 86_400.0:
            return None
        return min(self._open) + self.cfg.bucket_s + self.cfg.allowed_lateness_s

    # ------------------------------------------------------------------ windows
    def _close_until(self, limit: float) -> list[Any]:
        out: list[Any] = []
        latest: dict[str, tuple[float, ...]] = {}
        step = self.cfg.bucket_s
        if self._next is None:
            self._next = min(self._open)
        while self._next + step <= limit:
            b = self._next
            bucket = self._open.pop(b, None)
            if bucket is not None:
                _add(self._open_terms, bucket.terms, -1)
                self._open_n -= len(bucket.stories)
            else:
                upcoming = min(self._open) if self._open else math.inf
                if upcoming != math.inf and upcoming - b > _MAX_EMPTY_BUCKETS * step:
                    self._next = upcoming  # a jump in event time: resume at the data
                    continue
                if upcoming == math.inf and b + step > self._newest + step:
                    break
                bucket = _Bucket()
            self._close(b, bucket, out, latest)
            self._next = b + step
        out.extend(SeriesPoint(FEED, f"mentions.{e}", *v) for e, v in latest.items())
        return out

    def _close(
        self, b: float, bucket: _Bucket, out: list[Any], latest: dict[str, tuple[float, ...]]
    ) -> None:
        end = b + self.cfg.bucket_s
        self._n_closed += 1
        self._volume_step(end, bucket, out, latest)
        self._negative_step(end, bucket, out)
        self._terms_step(b, end, bucket, out)

    # ---- volume
    def _volume_step(
        self, end: float, bucket: _Bucket, out: list[Any], latest: dict[str, tuple[float, ...]]
    ) -> None:
        vr = self.cfg.rules.volume
        for e in self.entities:
            det = self._volume.get(e)
            if det is None:
                if self._totals[e] < vr.min_total:
                    continue  # not yet "on air": a source coming online is not news
                det = self._volume[e] = MentionVolume(**self._vparams)
            x = float(bucket.mentions.get(e, 0))
            ex = det.explain_one(x, end)
            det.learn_one(x, end)
            # Only each entity's last point is sent: built once, at the end of the close.
            latest[e] = (end, x, ex.expected, ex.lower, ex.upper, ex.score)
            hit = ex.score >= vr.threshold and max(x, ex.expected) >= vr.min_count
            if not (vr.enabled and hit and x > ex.expected):
                continue
            # A lasting anomaly is re-reported at most once per hot-issue window (not per
            # bucket), so that interval, not the bucket, is what its episode must outlast.
            ep = self._report(
                "media_volume_anomaly",
                e,
                end,
                x,
                self.cfg.rules.hot_issue.window_s,
                bucket.first.get(e, end - self.cfg.bucket_s),
            )
            if ep is None:
                continue
            name = self.names.get(e, e)
            stories = bucket.stories_by_entity.get(e, 0)
            neg = bucket.negative.get(e, 0)
            origins = bucket.origins.get(e, Counter())
            out.append(
                Detection(
                    kind="media_volume_anomaly",
                    entity=e,
                    severity=vr.severity,
                    ts=end,
                    observed=x,
                    threshold=vr.threshold,
                    window_s=self.cfg.bucket_s,
                    feed=FEED,
                    summary=f"Unusual number of mentions of {name}",
                    description=(
                        f"{_fmt(x)} mentions of {name} ({stories} distinct stories) in "
                        f"{_fmt(self.cfg.bucket_s)} s, expected {ex.expected:.1f} for this hour "
                        f"(band up to {ex.upper:.1f}); likelihood score {ex.score:.2f} >= "
                        f"{vr.threshold:g}. " + _ongoing(ep, end, lambda v: f"{_fmt(v)} mentions")
                    ).strip(),
                    expected=ex.expected,
                    lower=ex.lower,
                    upper=ex.upper,
                    **self._episode_fields(ep),
                    evidence=_evidence(
                        ("sources", _publishers(origins)),
                        ("mentions", _top({"stories": stories, "copies": int(x) - stories})),
                        ("sentiment", _top({"negative": neg, "not negative": int(x) - neg})),
                    ),
                    log_source=_inputs(origins),
                )
            )

    # ---- negative share
    def _negative_step(self, end: float, bucket: _Bucket, out: list[Any]) -> None:
        ns = self.cfg.rules.negative_surge
        k_win = self._neg_k
        for e in self.entities:
            win = self._neg_window.get(e)
            n_b, k_b = bucket.mentions.get(e, 0), bucket.negative.get(e, 0)
            if win is None:
                if n_b == 0:
                    continue
                win = self._neg_window[e] = deque(maxlen=k_win)
            base = self._neg_base.setdefault(e, [0.0, 0.0])
            sums = self._neg_sums.get(e)
            if sums is None:
                sums = self._neg_sums[e] = [sum(x for x, _ in win), sum(y for _, y in win)]
            if len(win) == k_win:  # the oldest bucket leaves the window: into the baseline
                old_n, old_k = win[0]
                base[0] = base[0] * self._neg_decay + old_n
                base[1] = base[1] * self._neg_decay + old_k
                sums[0] -= old_n
                sums[1] -= old_k
            else:
                base[0] *= self._neg_decay
                base[1] *= self._neg_decay
            win.append((n_b, k_b))
            sums[0] += n_b
            sums[1] += k_b
            if not ns.enabled or base[0] < ns.min_baseline_items:
                continue
            n, k = sums
            if n < ns.min_items or k < ns.min_negative:
                continue
            p0 = min(max(base[1] / base[0], 0.02), 0.98)
            z = (k - n * p0) / math.sqrt(n * p0 * (1 - p0))
            share = k / n
            if z < ns.z or share - p0 < ns.min_increase:
                continue
            # The buckets of the share's window, this one included (it is not in the term
            # window yet: that step runs after this one).
            window = [*self._recent_buckets(k_win - 1), bucket] if k_win > 1 else [bucket]
            firsts = [bk.neg_first[e] for bk in window if e in bk.neg_first]
            ep = self._report(
                "media_negative_surge",
                e,
                end,
                round(share, 4),
                ns.window_s,
                min(firsts, default=end - ns.window_s),
            )
            if ep is None:
                continue
            top, term_counts = self._top_negative_terms(e, window)
            examples = self._negative_examples(e, window)
            origins: Counter[_Origin] = Counter()
            for bk in window:
                o = bk.neg_origins.get(e)
                if o:
                    origins.update(o)
            name = self.names.get(e, e)
            out.append(
                Detection(
                    kind="media_negative_surge",
                    entity=e,
                    severity=ns.severity,
                    ts=end,
                    observed=round(share, 4),
                    threshold=round(p0 + ns.min_increase, 4),
                    window_s=ns.window_s,
                    feed=FEED,
                    summary=f"Surge of negative mentions of {name}",
                    description=(
                        f"{k} of {n} mentions of {name} negative ({share:.0%}) within "
                        f"{_fmt(ns.window_s)} s, usually {p0:.0%}; z = {z:.1f} >= {ns.z:g}; "
                        f"top terms: {', '.join(t for t, _ in top[:5]) or '-'}. "
                        + _ongoing(ep, end, lambda v: f"{v:.0%} negative")
                    ).strip(),
                    expected=round(p0, 4),
                    **self._episode_fields(ep),
                    evidence=_evidence(
                        ("terms", _top({t: term_counts[t] for t, _ in top})),
                        ("sources", _publishers(origins)),
                        ("mentions", _top({"negative": k, "not negative": n - k})),
                    ),
                    log_source=_inputs(origins),
                    extra=(
                        ("top_terms", ", ".join(t for t, _ in top)),
                        ("negative", str(k)),
                        ("mentions", str(n)),
                        *(
                            (f"example_{i + 1}", f"{title} {url}".strip())
                            for i, (title, url) in enumerate(examples)
                        ),
                    ),
                )
            )

    def _negative_examples(
        self, e: str, window: list[_Bucket], n: int = 3
    ) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for bk in reversed(window):
            for ex in bk.neg_examples.get(e, ()):
                if ex not in out:
                    out.append(ex)
                if len(out) >= n:
                    return out
        return out
