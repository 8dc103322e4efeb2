"""Story identity and story alerts of the media analyzer (no bytewax here).

An emerging story is found afresh on every evaluation (a closed bucket, or an early check
while a bucket is open) as a group of bursting terms. :class:`_StoryTracks` ties those
groups together over time, so a story keeps **one id for its life**:

- a group continues the *active* story (reported within the last ``window_s``) it shares
  the most shown terms with; each active story is continued by at most one group per
  evaluation (the largest group first), so a story that splits keeps its id on its
  larger part;
- a group that continues no active story is a new story. Its id is a hash of its leading
  term and the event time it was first flagged: the same data gives the same ids, at any
  replay speed. If it shares terms with a story that went quiet less than
  ``rules.story.continue_s`` ago, it names that story in ``continues``.

Every story raises a ``media_story`` detection (entity = the story id, so alerting makes
one alert per story episode), with or without a watch list; its severity comes from its
size and speed (:meth:`_StoryTracks._story_severity`); a story whose severity rises is
reported again at once, as an update of its alert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from vigil.flows.media.config import MediaConfig
from vigil.flows.media.episodes import FEED, _Episodes, _evidence, _fmt, _ongoing, _top
from vigil.flows.media.records import EmergingStory

from vigil.records import Detection

_SPEED_S = 900.0  # stories of the last 15 minutes, per hour, are a story's speed
_RANK = {"info": 0, "warning": 1, "high": 2, "critical": 3}
_MAX_TRACKS = 10_000


@dataclass(frozen=True, slots=True)
class StoryTrack:
    """What the analyzer remembers of one story between evaluations (plain values)."""

    story_id: str
    first_seen: float  # event time of its earliest member
    flagged: float  # event time it was first reported
    last: float  # event time it was last reported
    terms: tuple[str, ...]  # its shown terms at its last report
    peak: int  # most stories in its window
    continues: str = ""  # the quiet story it took up again, if any
    severity: str = ""  # of its last story alert


def story_id(lead: str, ts: float) -> str:
    """The id of a story first flagged at ``ts`` with leading term ``lead``.

    >>> story_id("ngap", 1.0) == story_id("ngap", 1.0) != story_id("ngap", 2.0)
    True
    """
    return "e" + hashlib.blake2b(f"{lead}@{ts:.3f}".encode(), digest_size=6).hexdigest()


class _StoryTracks(_Episodes):
    """Story ids and ``media_story`` detections of
    :class:`~vigil.flows.media.analysis.MediaAnalyzer`."""

    cfg: MediaConfig
    names: dict[str, str]
    _tracks: dict[str, StoryTrack]

    def _assign(
        self, groups: list[tuple[list[str], int, float]], end: float
    ) -> list[tuple[str, bool, str]]:
        """``(story_id, new, continues)`` of each ``(terms, size, first_seen)`` group."""
        hi = self.cfg.rules.hot_issue
        horizon = end - hi.window_s
        active = {k: t for k, t in self._tracks.items() if t.last >= horizon}
        taken: set[str] = set()
        out: list[tuple[str, bool, str]] = [("", True, "")] * len(groups)
        for gi in sorted(range(len(groups)), key=lambda i: -groups[i][1]):
            terms, size, first = groups[gi]
            tset = set(terms)
            best, best_n = None, 0
            for k, t in active.items():
                if k in taken:
                    continue
                n = len(tset.intersection(t.terms))
                if n > best_n or (n == best_n and n and best is not None and t.last > best.last):
                    best, best_n = t, n
            if best is not None:
                taken.add(best.story_id)
                self._tracks[best.story_id] = replace(
                    best,
                    first_seen=min(best.first_seen, first),
                    last=end,
                    terms=tuple(terms),
                    peak=max(best.peak, size),
                )
                out[gi] = (best.story_id, False, best.continues)
                continue
            cont = self._continued(tset, end)
            sid, n = story_id(terms[0], end), 1
            while sid in self._tracks:  # two new stories with one lead at one instant
                sid, n = story_id(f"{terms[0]}#{n}", end), n + 1
            self._tracks[sid] = StoryTrack(sid, first, end, end, tuple(terms), size, cont)
            taken.add(sid)
            out[gi] = (sid, True, cont)
        self._forget_tracks(end)
        return out

    def _continued(self, tset: set[str], end: float) -> str:
        """The quiet story (not active, quiet less than ``continue_s``) sharing the most
        terms with ``tset``, or ``""``."""
        hi = self.cfg.rules.hot_issue
        since = end - hi.window_s - self.cfg.rules.story.continue_s
        best, best_n, best_last = "", 0, -1.0
        for k, t in self._tracks.items():
            if t.last >= end - hi.window_s or t.last < since:
                continue
            n = len(tset.intersection(t.terms))
            if n > best_n or (n == best_n and n and t.last > best_last):
                best, best_n, best_last = k, n, t.last
        return best

    def _forget_tracks(self, end: float) -> None:
        hi = self.cfg.rules.hot_issue
        keep_after = end - hi.window_s - self.cfg.rules.story.continue_s
        if len(self._tracks) > 64 and min(t.last for t in self._tracks.values()) < keep_after:
            self._tracks = {k: t for k, t in self._tracks.items() if t.last >= keep_after}
        if len(self._tracks) > _MAX_TRACKS:
            ranked = sorted(self._tracks.values(), key=lambda t: t.last)
            for t in ranked[: len(self._tracks) - _MAX_TRACKS]:
                del self._tracks[t.story_id]

    def _story_severity(self, story: EmergingStory) -> str:
        """``high`` when the story is large (stories in the window) or fast (stories per
        hour over the last 15 minutes), else the rule's."""
        sr = self.cfg.rules.story
        big = story.stories >= sr.high_stories or story.per_hour >= sr.high_per_hour
        return "high" if big else sr.severity

    def _story_alert(self, story: EmergingStory, end: float, out: list[Any]) -> None:
        """The ``media_story`` detection of ``story`` (at most one per ``window_s`` per
        story: updates of one alert per story episode)."""
        hi = self.cfg.rules.hot_issue
        sr = self.cfg.rules.story
        if not sr.enabled:
            return
        first = end - hi.window_s if story.first_seen is None else story.first_seen
        severity = self._story_severity(story)
        track = self._tracks.get(story.story_id)
        rose = track is not None and _RANK.get(severity, 0) > _RANK.get(track.severity, 0)
        ep = self._report(
            "media_story",
            story.story_id,
            end,
            float(story.stories),
            hi.window_s,
            first,
            force=rose and bool(track and track.severity),
        )
        if ep is None:
            return
        if track is not None:
            self._tracks[story.story_id] = replace(track, severity=severity)
        speed = story.per_hour
        terms = ", ".join(t for t, _ in story.terms[:5])
        watched = [
            (e, n)
            for e, n in story.entities
            if e in self.names and n >= max(2, hi.min_entity_share * story.stories)
        ]
        about = ", ".join(self.names.get(e, e) for e, _ in watched)
        cont = f" It continues story {story.continues}." if story.continues else ""
        out.append(
            Detection(
                kind="media_story",
                entity=story.story_id,
                severity=severity,
                ts=end,
                observed=float(story.stories),
                threshold=float(hi.min_stories),
                window_s=hi.window_s,
                feed=FEED,
                summary=f"Emerging story{f' about {about}' if about else ''}: {terms}",
                description=(
                    f"{story.stories} stories within {_fmt(hi.window_s)} s share bursting "
                    f"terms ({terms}), {speed:.0f} per hour over the last "
                    f"{_fmt(_SPEED_S / 60)} min."
                    + (f" Mentions {about}." if about else "")
                    + cont
                    + " "
                    + _ongoing(ep, end, lambda v: f"{_fmt(v)} stories")
                    + f"First headline: {story.headlines[0][0] if story.headlines else '-'}"
                ),
                **self._episode_fields(ep),
                evidence=_evidence(
                    ("terms", story.term_counts[:10]),
                    ("sources", story.publishers),
                    ("entities", _top(dict(watched))),
                ),
                log_source=",".join(story.inputs),
                extra=(
                    ("story_id", story.story_id),
                    *((("continues", story.continues),) if story.continues else ()),
                    ("top_terms", ", ".join(t for t, _ in story.terms)),
                    ("entities", ",".join(e for e, _ in watched)),
                    ("stories_per_hour", f"{speed:.0f}"),
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
