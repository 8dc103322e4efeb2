"""Term baselines and emerging stories of the media analyzer (no bytewax here).

Every term counts the stories using it per bucket; a term bursts against its own decayed
baseline, bursting terms that co-occur form one :class:`~vigil.flows.media.records.EmergingStory`
and one that touches a watched entity is a hot issue (see :mod:`vigil.flows.media.analysis`).
A mixin of :class:`~vigil.flows.media.analysis.MediaAnalyzer`, in its own module so the
analyzer keeps input, windows, volume and negative share.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from vigil.flows.media.episodes import (
    FEED,
    _Bucket,
    _evidence,
    _fmt,
    _host,
    _ongoing,
    _Origin,
    _publishers,
    _StoryRef,
    _top,
)
from vigil.flows.media.records import EmergingStory, MediaTally
from vigil.flows.media.tracks import _SPEED_S, _StoryTracks

from vigil.records import Detection

_TOTAL = "\x00stories"  # the baseline of all stories, kept beside the terms'


class _StoryTerms(_StoryTracks):
    """The term and emerging-story steps of :class:`~vigil.flows.media.analysis.MediaAnalyzer`."""

    names: dict[str, str]
    entities: tuple[str, ...]
    _first: float | None
    _neg_k: int
    _hot_k: int
    _term_decay: float
    _term_window: deque[_Bucket]
    _hot_terms: dict[str, int]  # stories using each term in the last ``window_s`` (closed)
    _hot_n: int  # stories in the last ``window_s`` (closed buckets)
    _hot_big: set[str]  # terms of ``_hot_terms`` counted at least ``min_stories`` times
    _open: dict[float, _Bucket]
    _open_terms: Counter[str]  # stories using each term in the open buckets
    _open_n: int
    _bars: dict[str, int]
    _early_fired: set[str]
    _was_bursting: set[str]
    _term_base: dict[str, tuple[float, int]]
    _base_weight: float
    _n_closed: int
    _top_terms: tuple[tuple[str, float], ...]

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
        big = self._hot_big
        floor = hi.min_stories
        _add(self._hot_terms, bucket.terms, 1, big, floor)
        self._hot_n += len(bucket.stories)
        if len(self._term_window) > self._hot_k:
            gone = self._term_window[-self._hot_k - 1]
            _add(self._hot_terms, gone.terms, -1, big, floor)
            self._hot_n -= len(gone.stories)
        keep = max(self._hot_k, self._neg_k)
        d = self._term_decay
        # Term rates decay once per closed bucket, and so does the total weight of the
        # buckets learned, which divides them (an EWMA started from zero is debiased).
        self._base_weight *= d
        while len(self._term_window) > keep:
            self._learn_terms(self._term_window.popleft())
            self._base_weight += 1 - d
        # The early check's state is per open period: it starts again at every close.
        self._bars = {}
        self._early_fired = set()
        self._was_bursting = set()
        if not hi.enabled or self._first is None or end - self._first < hi.warmup_s:
            return
        counts = self._hot_terms
        # Expected count = the term's usual share of stories x stories in this window: a
        # busier hour (time of day, a new source coming online) raises every term alike
        # and is not a story.
        n_window = self._hot_n
        total_rate = self._raw_rate(_TOTAL)
        bursting: dict[str, float] = {}
        for term in big:  # the terms with at least min_stories (the rest cannot burst)
            w = counts[term]
            share = self._raw_rate(term) / total_rate if total_rate > 0 else 0.0
            exp = max(share * n_window, hi.min_expected)
            z = (w - exp) / math.sqrt(exp)
            if w >= hi.ratio * exp and z >= hi.z:
                bursting[term] = z
        # Sorted: groups, their order and ties in ids must not depend on dict or set order
        # (a restored window rebuilds its counts in another order).
        bursting = dict(sorted(bursting.items()))
        self._was_bursting = set(bursting)
        top = tuple(sorted(bursting.items(), key=lambda x: -x[1])[: self.cfg.top_terms])
        if top != self._top_terms:
            self._top_terms = top
            out.append(MediaTally(top_terms=tuple((t, round(s, 2)) for t, s in top)))
        if not bursting:
            return
        refs = [r for bk in self._recent_buckets(self._hot_k) for r in bk.stories]
        self._report_stories(self._group(bursting, end, refs, counts), end, out)

    def _report_stories(
        self, stories: list[EmergingStory], ts: float, out: list[Any], *, hot: bool = True
    ) -> None:
        for story in stories:
            out.append(story)
            if story.new:
                out.append(MediaTally(emerging=1))
            self._story_alert(story, ts, out)
            if hot:  # a watched entity's hot issue waits for the close: all its terms
                self._hot_issue(story, ts, out)

    # ---- early: a clear burst flagged before its bucket closes
    def _early_ready(self, ts: float) -> bool:
        hi = self.cfg.rules.hot_issue
        return (
            hi.enabled
            and self.cfg.rules.story.early
            and self._first is not None
            and ts - self._first >= hi.warmup_s
            and self._base_weight > 0.0
        )

    def _bar(self, term: str) -> int:
        """The least count over the window that makes ``term`` burst now."""
        hi = self.cfg.rules.hot_issue
        total_rate = self._raw_rate(_TOTAL)
        share = self._raw_rate(term) / total_rate if total_rate > 0 else 0.0
        exp = max(share * (self._hot_n + self._open_n), hi.min_expected)
        return max(
            hi.min_stories,
            math.ceil(hi.ratio * exp - 1e-9),
            math.ceil(exp + hi.z * math.sqrt(exp) - 1e-9),
        )

    def _early_item(self, ts: float, item_terms: tuple[str, ...], out: list[Any]) -> None:
        """After a new story entered an open bucket: flag its story at once if one of its
        terms just passed the bar over the window (closed buckets plus open ones)."""
        hot_get, open_ = self._hot_terms.get, self._open_terms
        floor = self.cfg.rules.hot_issue.min_stories
        fired, was, bars = self._early_fired, self._was_bursting, self._bars
        hit = False
        for t in item_terms:
            w = open_[t] + hot_get(t, 0)
            if w < floor or t in fired or t in was:
                continue
            bar = bars.get(t)
            if bar is None or w >= bar:
                bar = bars[t] = self._bar(t)  # exact when it matters
            if w >= bar:
                fired.add(t)
                hit = True
        if hit:
            self._early(ts, out)

    def _early(self, ts: float, out: list[Any]) -> None:
        hi = self.cfg.rules.hot_issue
        hot, open_ = self._hot_terms, self._open_terms
        n_window = self._hot_n + self._open_n
        total_rate = self._raw_rate(_TOTAL)
        counts: Counter[str] = Counter()
        bursting: dict[str, float] = {}
        for t in sorted(self._early_fired | self._was_bursting):
            w = open_[t] + hot.get(t, 0)
            counts[t] = w
            share = self._raw_rate(t) / total_rate if total_rate > 0 else 0.0
            exp = max(share * n_window, hi.min_expected)
            z = (w - exp) / math.sqrt(exp)
            if w >= hi.min_stories and w >= hi.ratio * exp and z >= hi.z:
                bursting[t] = z
        if not any(t in bursting for t in self._early_fired):
            return
        refs = [r for bk in self._recent_buckets(self._hot_k) for r in bk.stories]
        refs += [r for b in sorted(self._open) for r in self._open[b].stories]
        stories = self._group(bursting, ts, refs, counts, early=True)
        # Only what the early check found: a story bursting since the last close waits
        # for the next close.
        fresh = [s for s in stories if any(t in self._early_fired for t, _ in s.terms)]
        self._report_stories(fresh, ts, out, hot=False)

    def _decay_powers(self, d: float) -> list[float]:
        """``d ** gap`` for the gaps of most baseline updates (the same floats as ``**``)."""
        pw = getattr(self, "_pw", None)
        if pw is None or pw[0] != d:
            pw = self._pw = (d, [d**g for g in range(4096)])
        return pw[1]

    def _learn_terms(self, old: _Bucket) -> None:
        """A bucket leaving the window updates the baseline rate of the terms it holds."""
        d = self._term_decay
        idx = self._n_closed
        base = self._term_base
        get = base.get
        w = 1 - d
        pw = self._decay_powers(d)
        n_pw = len(pw)
        for t, c in old.terms.items():
            rb = get(t)
            if rb is None:
                base[t] = (w * c, idx)
            else:
                rate, last = rb
                gap = idx - last
                base[t] = ((rate * pw[gap] if 0 <= gap < n_pw else rate * d**gap) + w * c, idx)
        rb = get(_TOTAL)
        rate = 0.0 if rb is None else rb[0] * d ** (idx - rb[1])
        base[_TOTAL] = (rate + w * len(old.stories), idx)
        cap = self.cfg.rules.hot_issue.max_terms
        if len(base) > cap * 1.2:
            # Forget the rarest terms (by decayed rate), keeping ``cap``.
            ranked = sorted(base.items(), key=lambda kv: kv[1][0] * d ** (idx - kv[1][1]))
            for t, _ in ranked[: len(base) - cap]:
                if t != _TOTAL:
                    del base[t]

    def _group(
        self,
        bursting: dict[str, float],
        end: float,
        refs: list[_StoryRef],
        counts: Mapping[str, int],
        *,
        early: bool = False,
    ) -> list[EmergingStory]:
        """Bursting terms that co-occur in the window's stories, as emerging stories."""
        hi = self.cfg.rules.hot_issue
        parent = {t: t for t in bursting}

        def find(t: str) -> str:
            while parent[t] != t:
                parent[t] = parent[parent[t]]
                t = parent[t]
            return t

        pairs: Counter[tuple[str, str]] = Counter()
        members_of: dict[str, list[_StoryRef]] = {}
        for r in refs:
            ts = sorted(r.terms.intersection(bursting))
            for t in ts:
                members_of.setdefault(t, []).append(r)
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
        found: list[tuple[list[str], list[_StoryRef]]] = []
        for terms in groups.values():
            # A phrase that bursts about as much as its words says more: show it first.
            terms.sort(key=lambda t: -bursting[t] * (1.25 if " " in t else 1.0))
            seen_ids: set[int] = set()
            members: list[_StoryRef] = []
            for t in terms:
                for r in members_of.get(t, ()):
                    if id(r) not in seen_ids:
                        seen_ids.add(id(r))
                        members.append(r)
            if len(members) >= hi.min_stories:
                found.append((terms, members))
        ids = self._assign([(terms, len(m), min(r.ts for r in m)) for terms, m in found], end)
        out: list[EmergingStory] = []
        for (terms, members), (sid, new, cont) in zip(found, ids, strict=True):
            tset = set(terms)
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
            recent = [r.ts for r in members if r.ts > end - _SPEED_S]
            origins: Counter[_Origin] = Counter(
                (r.source, r.publisher or _host(r.url)) for r in members
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
                    continues=cont,
                    recent=len(recent),
                    early=early,
                    per_hour=len(recent) * 3600.0 / _SPEED_S,
                )
            )
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


def _add(
    into: dict[str, int],
    counts: Mapping[str, int],
    sign: int,
    big: set[str] | None = None,
    floor: int = 0,
) -> None:
    """Add (``sign`` 1) or remove (-1) ``counts``, dropping terms that reach zero; ``big``
    is kept as the set of terms counted at least ``floor`` times."""
    get = into.get
    if big is None:  # the open buckets' counts: no floor to track
        for t, c in counts.items():
            v = get(t, 0) + sign * c
            if v > 0:
                into[t] = v
            else:
                into.pop(t, None)
        return
    for t, c in counts.items():
        old = get(t, 0)
        v = old + sign * c
        if v > 0:
            into[t] = v
        else:
            into.pop(t, None)
        if (old >= floor) != (v >= floor):  # crossed the floor
            if v >= floor:
                big.add(t)
            else:
                big.discard(t)


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
