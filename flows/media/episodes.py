"""What the media analyzer's rules share: bucket records, episodes and evidence helpers.

:class:`_Bucket` (with the :class:`_StoryRef` of each new story) is what the analyzer keeps
per event-time bucket; :class:`Episode` and :class:`_Episodes` decide which episode a
detection belongs to and whether it is reported now; the functions format evidence and text.
Its own module so :mod:`vigil.flows.media.analysis` and :mod:`vigil.flows.media.stories` share
them without importing each other. The classes stay importable from the analysis module,
where recovery snapshots pickled them first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from vigil.flows.media.config import MediaConfig

FEED = "media"


@dataclass(slots=True)
class _StoryRef:
    story: str
    ts: float
    title: str
    url: str
    entities: tuple[str, ...]
    terms: frozenset[str]
    source: str = ""  # the input it came from
    publisher: str = ""  # the mapped ``source`` field, if any


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


class _Episodes:
    """Episode bookkeeping of :class:`~vigil.flows.media.analysis.MediaAnalyzer`."""

    cfg: MediaConfig
    _last: dict[tuple[str, str], float]
    _episodes: dict[tuple[str, str], Episode]

    def _hold(self, every_s: float) -> float:
        """How long an episode holds after a detection whose kind re-reports every ``every_s``.

        A condition that keeps holding is reported again on the first bucket end at least
        ``every_s`` after its last report: ``every_s`` rounded up to whole buckets. One
        bucket more puts that report strictly inside the hold, so a lasting condition stays
        one alert (no resolve-and-refire at the boundary); a condition missing for longer
        is a new episode.

        >>> from vigil.flows.media.analysis import MediaAnalyzer
        >>> from vigil.flows.media.config import MediaConfig
        >>> an = MediaAnalyzer(MediaConfig(bucket_s=300))
        >>> an._hold(3600), an._hold(3500), an._hold(10_800)
        (3900.0, 3900.0, 11100.0)
        """
        bs = self.cfg.bucket_s
        return float(math.ceil(every_s / bs - 1e-9) * bs + bs)

    def _report(
        self,
        kind: str,
        entity: str,
        ts: float,
        value: float,
        every_s: float,
        first_seen: float,
        *,
        force: bool = False,
    ) -> Episode | None:
        """The episode to report a holding condition in, or ``None`` if it is not reported
        now (at most once per ``every_s``).

        The detection continues the current episode of (kind, entity) if it comes at most
        ``hold_s`` after that episode's last detection, and opens a new one (``start`` =
        ``ts``) otherwise. An evaluation that is not reported still counts towards the
        episode's peak: it always falls within the hold (``every_s`` < ``hold_s``).
        ``force`` reports it now even so (a story whose severity rose).
        """
        key = (kind, entity)
        ep = self._episodes.get(key)
        last = self._last.get(key)
        if last is not None and ts - last < every_s and not force:
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
