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

import hashlib
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from vigil.detectors.mention_volume import MentionVolume, MentionVolumeState
from vigil.flows.media.config import MediaConfig
from vigil.flows.media.records import EmergingStory, MediaItem, MediaTally
from vigil.flows.media.text import MinHashIndex

from vigil.records import Detection, SeriesPoint

FEED = "media"
_TOTAL = "\x00stories"  # the baseline of all stories, kept beside the terms'
_MAX_EMPTY_BUCKETS = 50_000  # a jump in event time beyond this is not filled bucket by bucket


@dataclass(slots=True)
class _StoryRef:
    story: str
    ts: float
    title: str
    url: str
    entities: tuple[str, ...]
    terms: frozenset[str]
    source: str = ""  # the input it came from


#: (input name, host of the item's link or "") of a mention, for evidence and log_source.
_Origin = tuple[str, str]


@dataclass(slots=True)
class _Bucket:
    mentions: Counter[str] = field(default_factory=Counter)
    stories_by_entity: Counter[str] = field(default_factory=Counter)
    negative: Counter[str] = field(default_factory=Counter)
    neg_terms: dict[str, Counter[str]] = field(default_factory=dict)
    neg_examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    terms: Counter[str] = field(default_factory=Counter)
    stories: list[_StoryRef] = field(default_factory=list)
    # Per entity: mentions (and negative mentions) by origin, and the earliest of each.
    origins: dict[str, Counter[_Origin]] = field(default_factory=dict)
    neg_origins: dict[str, Counter[_Origin]] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    neg_first: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Episode:
    """The current episode of one (kind, entity): what its detections share.

    ``last`` is the event time of its latest detection; the episode holds until
    ``last + hold_s``. ``peak`` also counts evaluations between reports (the condition
    held, but the detection was not re-reported yet).
    """

    start: float
    start_value: float
    peak: float
    peak_ts: float
    first_seen: float
    last: float
    hold_s: float


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
    active_stories: tuple[tuple[str, float], ...]
    episodes: tuple[tuple[tuple[str, str], Episode], ...] = ()


def _fill_defaults(obj: Any) -> None:
    """Give a dataclass restored from an older snapshot the fields it did not have yet."""
    for f in fields(obj):
        if not hasattr(obj, f.name):
            if f.default_factory is not MISSING:
                object.__setattr__(obj, f.name, f.default_factory())
            else:
                object.__setattr__(obj, f.name, f.default)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def _clip(s: str, n: int = 160) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _host(url: str) -> str:
    """The host of a link, without ``www.`` (``""`` when there is none).

    >>> _host("https://www.Example.org/a?b"), _host(""), _host("http://[::1")
    ('example.org', '', '')
    """
    if not url:
        return ""
    try:
        h = urlsplit(url).hostname or ""
    except ValueError:  # a malformed link (e.g. an unclosed IPv6 bracket)
        return ""
    return h.removeprefix("www.")


def _top(counts: Mapping[str, int], n: int = 10) -> tuple[tuple[str, int], ...]:
    """The ``n`` largest positive counts, largest first (ties by name).

    >>> _top({"b": 2, "a": 2, "c": 5, "z": 0})
    (('c', 5), ('a', 2), ('b', 2))
    """
    ranked = sorted(
        ((k, int(v)) for k, v in counts.items() if v > 0), key=lambda kv: (-kv[1], kv[0])
    )
    return tuple(ranked[:n])


def _evidence(
    *pairs: tuple[str, tuple[tuple[str, int], ...]],
) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """The non-empty evidence lists (an empty list says nothing)."""
    return tuple((name, items) for name, items in pairs if items)


def _publishers(origins: Counter[_Origin]) -> tuple[tuple[str, int], ...]:
    """Counts by publisher: the link's host, else the input's name (never an author).
    Items restored from a snapshot that predates origins have neither and are left out."""
    c: Counter[str] = Counter()
    for (src, host), n in origins.items():
        if host or src:
            c[host or src] += n
    return _top(c)


def _inputs(origins: Iterable[_Origin]) -> str:
    return ",".join(sorted({src for src, _ in origins if src}))


def _note_origin(
    by_entity: dict[str, Counter[_Origin]],
    first: dict[str, float],
    e: str,
    origin: _Origin,
    ts: float,
) -> None:
    c = by_entity.get(e)
    if c is None:
        c = by_entity[e] = Counter()
    c[origin] += 1
    f = first.get(e)
    if f is None or ts < f:
        first[e] = ts


def _ongoing(ep: Episode, ts: float, fmt: Callable[[float], str]) -> str:
    """What an update adds to the description (``""`` for the first detection of its
    episode, which states the value at the start itself): when and at what the episode
    began, and its peak so far."""
    if ts <= ep.start:
        return ""
    return (
        f"Ongoing since {_utc(ep.start)}: began at {fmt(ep.start_value)}, "
        f"peak {fmt(ep.peak)} at {_utc(ep.peak_ts)}. "
    )


class MediaAnalyzer:
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
        hi = cfg.rules.hot_issue
        self._hot_k = max(1, round(hi.window_s / bs))
        self._term_decay = 0.5 ** (bs / hi.half_life_s)
        self._term_window: deque[_Bucket] = deque()
        self._window_terms: Counter[str] = Counter()
        self._term_base: dict[str, tuple[float, int]] = {}  # term -> (rate, bucket index)
        self._base_weight = 0.0  # sum of EWMA weights so far: debiases young baselines
        self._n_closed = 0
        self._last: dict[tuple[str, str], float] = {}
        self._episodes: dict[tuple[str, str], Episode] = {}  # (kind, entity) -> current
        self._active_stories: dict[str, float] = {}  # leading term -> last seen bursting
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
            active_stories=tuple(self._active_stories.items()),
            episodes=tuple(self._episodes.items()),
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
        self._term_window = deque(s.term_window)
        self._window_terms = Counter()
        for b in self._term_window:
            self._window_terms.update(b.terms)
        self._term_base = {t: (r, i) for t, r, i in s.term_base}
        self._base_weight = s.base_weight
        self._n_closed = s.n_closed
        self._last = dict(s.last_fired)
        self._active_stories = dict(s.active_stories)
        self._episodes = dict(getattr(s, "episodes", ()))

    # ------------------------------------------------------------------ input
    def process(self, items: Iterable[MediaItem]) -> list[Any]:
        """Add items; return detections and telemetry of the buckets this closes."""
        tally = MediaTally()
        bs = self.cfg.bucket_s
        for it in items:
            self._seq += 1
            sid, new = (
                self._dedup.assign(it.signature, f"s{self._seq:x}", it.ts)
                if (self.cfg.dedup.enabled and it.signature)
                else (f"s{self._seq:x}", True)
            )
            k = (it.source, "story" if new else "copy")
            tally.items[k] = tally.items.get(k, 0) + 1
            if it.ts > self._newest:
                self._newest = it.ts
            b = it.ts - it.ts % bs
            if self._next is not None and b < self._next:
                tally.late += 1
                continue
            if self._first is None or b < self._first:
                self._first = b
            bucket = self._open.get(b)
            if bucket is None:
                bucket = self._open[b] = _Bucket()
            origin = (it.source, _host(it.url)) if it.entities else ("", "")
            for e in it.entities:
                bucket.mentions[e] += 1
                self._totals[e] += 1
                if new:
                    bucket.stories_by_entity[e] += 1
                _note_origin(bucket.origins, bucket.first, e, origin, it.ts)
                if it.sentiment == "negative":
                    bucket.negative[e] += 1
                    _note_origin(bucket.neg_origins, bucket.neg_first, e, origin, it.ts)
                    c = bucket.neg_terms.get(e)
                    if c is None:
                        c = bucket.neg_terms[e] = Counter()
                    c.update(it.terms)
                    ex = bucket.neg_examples.setdefault(e, [])
                    if len(ex) < 20:
                        ex.append((_clip(it.title or it.text), it.url))
            if new:
                bucket.terms.update(it.terms)
                bucket.stories.append(
                    _StoryRef(
                        sid,
                        it.ts,
                        _clip(it.title or it.text),
                        it.url,
                        it.entities,
                        frozenset(it.terms),
                        it.source,
                    )
                )
        out: list[Any] = [tally]
        if self._open:
            out.extend(self._close_until(self._newest - self.cfg.allowed_lateness_s))
        return out

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
        latest: dict[str, SeriesPoint] = {}
        step = self.cfg.bucket_s
        if self._next is None:
            self._next = min(self._open)
        while self._next + step <= limit:
            b = self._next
            bucket = self._open.pop(b, None)
            if bucket is None:
                upcoming = min(self._open) if self._open else math.inf
                if upcoming != math.inf and upcoming - b > _MAX_EMPTY_BUCKETS * step:
                    self._next = upcoming  # a jump in event time: resume at the data
                    continue
                if upcoming == math.inf and b + step > self._newest + step:
                    break
                bucket = _Bucket()
            self._close(b, bucket, out, latest)
            self._next = b + step
        out.extend(latest.values())
        return out

    def _hold(self, every_s: float) -> float:
        """How long an episode holds after a detection whose kind re-reports every ``every_s``.

        A condition that keeps holding is reported again on the first bucket end at least
        ``every_s`` after its last report: ``every_s`` rounded up to whole buckets. One
        bucket more puts that report strictly inside the hold, so a lasting condition stays
        one alert (no resolve-and-refire at the boundary); a condition missing for longer
        is a new episode.

        >>> from vigil.flows.media.config import MediaConfig
        >>> an = MediaAnalyzer(MediaConfig(bucket_s=300))
        >>> an._hold(3600), an._hold(3500), an._hold(10_800)
        (3900.0, 3900.0, 11100.0)
        """
        bs = self.cfg.bucket_s
        return float(math.ceil(every_s / bs - 1e-9) * bs + bs)

    def _report(
        self, kind: str, entity: str, ts: float, value: float, every_s: float, first_seen: float
    ) -> Episode | None:
        """The episode to report a holding condition in, or ``None`` if it is not reported
        now (at most once per ``every_s``).

        The detection continues the current episode of (kind, entity) if it comes at most
        ``hold_s`` after that episode's last detection, and opens a new one (``start`` =
        ``ts``) otherwise. An evaluation that is not reported still counts towards the
        episode's peak: it always falls within the hold (``every_s`` < ``hold_s``).
        """
        key = (kind, entity)
        ep = self._episodes.get(key)
        last = self._last.get(key)
        if last is not None and ts - last < every_s:
            if ep is not None and ts > ep.last and value > ep.peak:
                self._episodes[key] = replace(ep, peak=value, peak_ts=ts)
            return None
        self._last[key] = ts
        if ep is None or ts - ep.last > ep.hold_s:
            ep = Episode(ts, value, value, ts, min(first_seen, ts), ts, self._hold(every_s))
        else:
            up = value > ep.peak
            ep = replace(
                ep,
                last=ts,
                peak=value if up else ep.peak,
                peak_ts=ts if up else ep.peak_ts,
                first_seen=min(ep.first_seen, first_seen),
            )
        self._episodes[key] = ep
        return ep

    def _close(
        self, b: float, bucket: _Bucket, out: list[Any], latest: dict[str, SeriesPoint]
    ) -> None:
        end = b + self.cfg.bucket_s
        self._n_closed += 1
        self._volume_step(end, bucket, out, latest)
        self._negative_step(end, bucket, out)
        self._terms_step(b, end, bucket, out)

    # ---- volume
    def _volume_step(
        self, end: float, bucket: _Bucket, out: list[Any], latest: dict[str, SeriesPoint]
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
            latest[e] = SeriesPoint(
                FEED, f"mentions.{e}", end, x, ex.expected, ex.lower, ex.upper, ex.score
            )
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

    @staticmethod
    def _episode_fields(ep: Episode) -> dict[str, Any]:
        return {
            "start": ep.start,
            "hold_s": ep.hold_s,
            "start_value": ep.start_value,
            "peak": ep.peak,
            "peak_ts": ep.peak_ts,
            "first_seen": ep.first_seen,
        }

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
            if len(win) == k_win:  # the oldest bucket leaves the window: into the baseline
                old_n, old_k = win[0]
                base[0] = base[0] * self._neg_decay + old_n
                base[1] = base[1] * self._neg_decay + old_k
            else:
                base[0] *= self._neg_decay
                base[1] *= self._neg_decay
            win.append((n_b, k_b))
            if not ns.enabled or base[0] < ns.min_baseline_items:
                continue
            n = sum(x for x, _ in win)
            k = sum(y for _, y in win)
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

    def _recent_buckets(self, k: int) -> list[_Bucket]:
        return list(self._term_window)[-k:]

    def _top_negative_terms(
        self, e: str, window: list[_Bucket], n: int = 8
    ) -> tuple[list[tuple[str, float]], Counter[str]]:
        """The ``n`` terms of ``e``'s negative items most above their usual rate, and the
        count of every term."""
        c: Counter[str] = Counter()
        for bk in window:
            t = bk.neg_terms.get(e)
            if t:
                c.update(t)
        scored = []
        for term, cnt in c.items():
            if cnt < 2:
                continue
            exp = self._expected_rate(term) * self._neg_k
            scored.append((term, cnt / math.sqrt(1.0 + exp)))
        scored.sort(key=lambda x: (-x[1], x[0]))
        return _drop_nested(scored, n), c

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

    # ---- terms and emerging stories
    def _expected_rate(self, term: str) -> float:
        """Stories per bucket expected for ``term`` from its baseline (debiased)."""
        rb = self._term_base.get(term)
        if rb is None or self._base_weight <= 0.0:
            return 0.0
        rate, idx = rb
        gap = self._n_closed - idx
        return float(rate * self._term_decay**gap / self._base_weight)

    def _raw_rate(self, term: str) -> float:
        rb = self._term_base.get(term)
        if rb is None:
            return 0.0
        return float(rb[0] * self._term_decay ** (self._n_closed - rb[1]))

    def _terms_step(self, b: float, end: float, bucket: _Bucket, out: list[Any]) -> None:
        hi = self.cfg.rules.hot_issue
        # The bucket enters the window; the oldest leaves it for the baseline.
        self._term_window.append(bucket)
        self._window_terms.update(bucket.terms)
        keep = max(self._hot_k, self._neg_k)
        d = self._term_decay
        # Term rates decay once per closed bucket, and so does the total weight of the
        # buckets learned, which divides them (an EWMA started from zero is debiased).
        self._base_weight *= d
        while len(self._term_window) > keep:
            self._learn_terms(self._term_window.popleft())
            self._base_weight += 1 - d
        if not hi.enabled or self._first is None or end - self._first < hi.warmup_s:
            return
        counts = self._hot_counts()
        # Expected count = the term's usual share of stories x stories in this window: a
        # busier hour (time of day, a new source coming online) raises every term alike
        # and is not a story.
        n_window = sum(len(bk.stories) for bk in self._recent_buckets(self._hot_k))
        total_rate = self._raw_rate(_TOTAL)
        bursting: dict[str, float] = {}
        for term, w in counts.items():
            if w < hi.min_stories:
                continue
            share = self._raw_rate(term) / total_rate if total_rate > 0 else 0.0
            exp = max(share * n_window, hi.min_expected)
            z = (w - exp) / math.sqrt(exp)
            if w >= hi.ratio * exp and z >= hi.z:
                bursting[term] = z
        top = tuple(sorted(bursting.items(), key=lambda x: -x[1])[: self.cfg.top_terms])
        if top != self._top_terms:
            self._top_terms = top
            out.append(MediaTally(top_terms=tuple((t, round(s, 2)) for t, s in top)))
        if not bursting:
            return
        for story in self._group(bursting, end):
            out.append(story)
            if story.new:
                out.append(MediaTally(emerging=1))
            self._hot_issue(story, end, out)

    def _hot_counts(self) -> Counter[str]:
        if len(self._term_window) <= self._hot_k:
            return self._window_terms
        c: Counter[str] = Counter()
        for bk in self._recent_buckets(self._hot_k):
            c.update(bk.terms)
        return c

    def _learn_terms(self, old: _Bucket) -> None:
        """A bucket leaving the window updates the baseline rate of the terms it holds."""
        self._window_terms.subtract(old.terms)
        for t in old.terms:
            if self._window_terms[t] <= 0:
                del self._window_terms[t]
        d = self._term_decay
        idx = self._n_closed
        base = self._term_base
        for t, c in (*old.terms.items(), (_TOTAL, len(old.stories))):
            rb = base.get(t)
            rate = 0.0 if rb is None else rb[0] * d ** (idx - rb[1])
            base[t] = (rate + (1 - d) * c, idx)
        cap = self.cfg.rules.hot_issue.max_terms
        if len(base) > cap * 1.2:
            # Forget the rarest terms (by decayed rate), keeping ``cap``.
            ranked = sorted(base.items(), key=lambda kv: kv[1][0] * d ** (idx - kv[1][1]))
            for t, _ in ranked[: len(base) - cap]:
                if t != _TOTAL:
                    del base[t]

    def _group(self, bursting: dict[str, float], end: float) -> list[EmergingStory]:
        """Bursting terms that co-occur in the window's stories, as emerging stories."""
        hi = self.cfg.rules.hot_issue
        refs = [r for bk in self._recent_buckets(self._hot_k) for r in bk.stories]
        counts = self._hot_counts()
        parent = {t: t for t in bursting}

        def find(t: str) -> str:
            while parent[t] != t:
                parent[t] = parent[parent[t]]
                t = parent[t]
            return t

        pairs: Counter[tuple[str, str]] = Counter()
        for r in refs:
            ts = sorted(r.terms.intersection(bursting))
            for i in range(len(ts)):
                for j in range(i + 1, len(ts)):
                    pairs[(ts[i], ts[j])] += 1
        for (a, c), n in pairs.items():
            if n >= max(2, 0.5 * min(counts[a], counts[c])):
                ra, rc = find(a), find(c)
                if ra != rc:
                    parent[ra] = rc
        groups: dict[str, list[str]] = {}
        for t in bursting:
            groups.setdefault(find(t), []).append(t)
        out: list[EmergingStory] = []
        for terms in groups.values():
            # A phrase that bursts about as much as its words says more: show it first.
            terms.sort(key=lambda t: -bursting[t] * (1.25 if " " in t else 1.0))
            tset = set(terms)
            members = [r for r in refs if r.terms & tset]
            if len(members) < hi.min_stories:
                continue
            lead = terms[0]
            ents: Counter[str] = Counter()
            for r in members:
                ents.update(r.entities)
            members.sort(key=lambda r: (-len(r.terms & tset), -r.ts))
            heads: list[tuple[str, str]] = []
            for r in members:
                h = (r.title, r.url)
                if h not in heads:
                    heads.append(h)
                if len(heads) >= hi.examples:
                    break
            shown = _drop_nested_terms(terms)
            origins: Counter[_Origin] = Counter((r.source, _host(r.url)) for r in members)
            seen = self._active_stories.get(lead)
            new = seen is None or end - seen > hi.window_s
            self._active_stories[lead] = end
            sid = (
                "e"
                + hashlib.blake2b(
                    f"{lead}@{end if new else seen}".encode(), digest_size=6
                ).hexdigest()
            )
            out.append(
                EmergingStory(
                    story_id=sid,
                    ts=end,
                    window_s=hi.window_s,
                    terms=tuple((t, round(bursting[t], 2)) for t in shown[:8]),
                    stories=len(members),
                    entities=tuple(ents.most_common()),
                    headlines=tuple(heads),
                    new=new,
                    term_counts=_top({t: counts[t] for t in shown}),
                    publishers=_publishers(origins),
                    inputs=tuple(sorted({src for src, _ in origins if src})),
                    first_seen=min(r.ts for r in members),
                )
            )
        if len(self._active_stories) > 10_000:
            horizon = end - 2 * hi.window_s
            self._active_stories = {t: s for t, s in self._active_stories.items() if s >= horizon}
        return out

    def _hot_issue(self, story: EmergingStory, end: float, out: list[Any]) -> None:
        hi = self.cfg.rules.hot_issue
        watched = set(self.entities)
        for e, n in story.entities:
            if e not in watched or n < max(2, hi.min_entity_share * story.stories):
                continue
            ep = self._report(
                "media_hot_issue",
                e,
                end,
                float(story.stories),
                hi.window_s,
                end - hi.window_s if story.first_seen is None else story.first_seen,
            )
            if ep is None:
                continue
            name = self.names.get(e, e)
            terms = ", ".join(t for t, _ in story.terms[:5])
            out.append(
                Detection(
                    kind="media_hot_issue",
                    entity=e,
                    severity=hi.severity,
                    ts=end,
                    observed=float(story.stories),
                    threshold=float(hi.min_stories),
                    window_s=hi.window_s,
                    feed=FEED,
                    summary=f"Emerging story about {name}: {terms}",
                    description=(
                        f"{story.stories} stories within {_fmt(hi.window_s)} s share bursting "
                        f"terms ({terms}); {n} of them mention {name}. "
                        + _ongoing(ep, end, lambda v: f"{_fmt(v)} stories")
                        + f"First headline: {story.headlines[0][0] if story.headlines else '-'}"
                    ),
                    **self._episode_fields(ep),
                    evidence=_evidence(
                        ("terms", story.term_counts[:10]),
                        ("sources", story.publishers),
                        ("entities", _top(dict(story.entities))),
                    ),
                    log_source=",".join(story.inputs),
                    extra=(
                        ("story_id", story.story_id),
                        ("top_terms", ", ".join(t for t, _ in story.terms)),
                        *(
                            (f"headline_{i + 1}", title)
                            for i, (title, _url) in enumerate(story.headlines)
                        ),
                        *(
                            (f"link_{i + 1}", url)
                            for i, (_title, url) in enumerate(story.headlines)
                            if url
                        ),
                    ),
                )
            )


def _drop_nested(scored: list[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """Keep the top ``n`` terms, skipping a word already shown inside a better phrase."""
    out: list[tuple[str, float]] = []
    for t, s in scored:
        if any(t in o.split(" ") or o in t.split(" ") for o, _ in out):
            continue
        out.append((t, s))
        if len(out) >= n:
            break
    return out


def _drop_nested_terms(terms: list[str]) -> list[str]:
    return [t for t, _ in _drop_nested([(t, 0.0) for t in terms], len(terms))]
