"""The media-mentions dataflow: articles and posts in; mentions, stories and alerts out.

::

    RSS/Atom, HTTP JSON, replayed posts (dicts)
        --media_parse--> MediaItem (fields mapped, time checked, author hashed, watched
        |                entities matched, sentiment scored, terms and MinHash computed)
        |                + dead letters + tallies           [stateless: runs on every worker]
        +--key "media"--> media_analyze (MediaAnalyzer)     [one key: global story state]
                              |--> detections: media_volume_anomaly, media_negative_surge,
                              |                media_hot_issue (feed "media")
                              +--> telemetry: series points, story counts, top terms

The expensive per-item work (tokenising, matching, sentiment, MinHash) is stateless and
spreads over workers; what needs a global view (which story a copy belongs to, term
baselines, entity baselines) sits on one key. Items travel in per-batch lists, as in the
security flow, to keep bytewax's per-item cost off the hot path.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeAlias, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from vigil.flows.config.base import input_step_ids
from vigil.flows.feed import FeedIO, standalone_flow
from vigil.flows.guard import guard_batch, guard_logic
from vigil.flows.media.analysis import FEED, MediaAnalyzer, MediaSnapshot
from vigil.flows.media.config import MediaConfig
from vigil.flows.media.records import EmergingStory, MediaItem, MediaTally
from vigil.flows.media.sentiment import LexiconScorer, ModelScorer, SentimentScorer, make_scorer
from vigil.flows.media.storyfile import StoryFileSink, stories_path
from vigil.flows.media.text import (
    WatchList,
    fold,
    guess_language,
    has_diacritics,
    minhash_many,
    terms,
    tokens,
)

from vigil.records import DeadLetter, Detection, Tally

__all__ = ["FEED", "MediaStreams", "attach", "build_flow", "item_time", "make_parse_batch"]

log = logging.getLogger(__name__)

_HANDLE = re.compile(r"@(\w+)")
_NONE: frozenset[str] = frozenset()
_KEY = "media"
# Positions in MediaItem's field order (``one`` builds the values in that order).
_TITLE, _TEXT, _LANG, _SENTIMENT, _SIG = 4, 5, 7, 9, 12


# ---------------------------------------------------------------------------- parsing
class BadItem(ValueError):
    """An input item the flow cannot use; ``reason`` is a stable metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_time(v: Any) -> float:
    """Epoch seconds from a number (seconds or milliseconds), ISO 8601 or RFC 2822 text.

    Raises
    ------
    BadItem
        ``"missing field: published_at"``, ``"bad timestamp"`` or ``"timestamp without
        time zone"``.

    Examples
    --------
    >>> parse_time("2015-02-17T07:36:05.621Z"), parse_time(1424158565621)
    (1424158565.621, 1424158565.621)
    >>> parse_time("Tue, 17 Feb 2015 07:36:05 +0000")
    1424158565.0
    """
    if v is None or v == "":
        msg = "missing field: published_at"
        raise BadItem(msg)
    if isinstance(v, int | float) and not isinstance(v, bool):
        x = float(v)
    else:
        s = str(v).strip()
        try:
            x = float(s)
        except ValueError:
            x = math.nan
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                try:
                    dt = email.utils.parsedate_to_datetime(s)
                except (TypeError, ValueError, IndexError):
                    msg = "bad timestamp"
                    raise BadItem(msg) from None
            if dt.tzinfo is None:
                msg = "timestamp without time zone"
                raise BadItem(msg) from None
            return dt.timestamp()
    if not math.isfinite(x):
        msg = "bad timestamp"
        raise BadItem(msg)
    return x / 1000.0 if x > 1e11 else x  # milliseconds (after the year 5138 in seconds)


def item_time(row: Mapping[str, Any], fields: Mapping[str, str]) -> float | None:
    """A row's event time for ordering a replay; ``None`` if it has none usable."""
    try:
        return parse_time(row.get(fields.get("published_at", "published_at")))
    except BadItem:
        return None


def hash_author(author: str, salt: bytes) -> str:
    """Keyed BLAKE2b of an author name: stable for counting, not reversible by lookup
    when the salt is secret.

    >>> hash_author("@someone", b"k") == hash_author("@someone", b"k") != hash_author("x", b"k")
    True
    """
    if not author:
        return ""
    return hashlib.blake2b(author.encode(), key=salt[:64], digest_size=8).hexdigest()


Parsed: TypeAlias = tuple[str, list[MediaItem]] | DeadLetter | Tally | MediaTally


def make_parse_batch(
    cfg: MediaConfig,
    *,
    scorer: SentimentScorer,
    salt: bytes = b"",
    fields_by_source: Mapping[str, Mapping[str, str]] | None = None,
    languages: Mapping[str, str | None] | None = None,
    input_of_origin: Mapping[str, str] | None = None,
) -> Callable[[list[dict[str, Any]]], list[Parsed]]:
    """The parse step: dicts to :class:`MediaItem`, dead letters and per-batch tallies.

    An item's input (its ``source``, a metric label) is the ``_input`` key replayed posts
    carry, else the input whose URL it came from (``input_of_origin``), else its own
    ``source`` key. A ``source`` entry in the input's ``fields`` names the field holding
    the item's publisher (:attr:`MediaItem.publisher`)."""
    watch = WatchList((e.id, e.aliases, e.keywords) for e in cfg.watch)
    exclude = watch.alias_words
    fmap = {k: dict(v) for k, v in (fields_by_source or {}).items()}
    langs = dict(languages or {})
    shingle = cfg.dedup.shingle
    batch_scorer = scorer if isinstance(scorer, ModelScorer) else None
    by_origin = dict(input_of_origin or {})

    def input_of(raw: dict[str, Any]) -> str:
        src = raw.get("_input") or by_origin.get(str(raw.get("origin", "")))
        return str(src or raw.get("source") or "media")

    lexicon = scorer if isinstance(scorer, LexiconScorer) else None
    dedup = cfg.dedup.enabled

    # Per input: the raw keys of the fields read (the input's ``fields`` map applied).
    keys_of: dict[str, tuple[str, ...]] = {}

    def keys(src: str) -> tuple[str, ...]:
        fm = fmap.get(src, {})
        names = ("published_at", "title", "text", "url", "language", "id", "author")
        k = keys_of[src] = (*(fm.get(f, f) for f in names), fm.get("source") or "")
        return k

    def one(raw: dict[str, Any], src: str) -> tuple[list[Any], list[str]]:
        """The item's field values in :class:`MediaItem` order (no signature yet, sentiment
        only from the lexicon) and its folded words (signatures are computed for the whole
        batch at once)."""
        fields_of = keys_of.get(src) or keys(src)
        k_ts, k_title, k_text, k_url, k_lang, k_id, k_author, pub_field = fields_of
        get = raw.get
        ts = parse_time(get(k_ts))
        title = str(get(k_title) or "")
        text = str(get(k_text) or "")
        if not title and not text:
            msg = "empty item"
            raise BadItem(msg)
        url = str(get(k_url) or "")
        body = f"{title}\n{text}" if title and text and text != title else (title or text)
        lang = str(get(k_lang) or langs.get(src) or "").split("-")[0].lower()
        if lang not in ("vi", "en"):
            lang = guess_language(body)
        exact = tokens(body)
        # Tokens are casefolded already: an ASCII one folds to itself.
        folded = exact if body.isascii() else [fold(t) for t in exact]
        handles = {fold(h) for h in _HANDLE.findall(body.casefold())} if "@" in body else _NONE
        ents = tuple(m.entity for m in watch.find_tokens(exact, folded))
        item_id = str(get(k_id) or url or "")
        if not item_id:
            item_id = "sha1:" + hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()
        label, score = "neutral", 0.0
        if lexicon is not None:
            # The words of "title text" (the sentiment text), already tokenised.
            both = exact + exact if title and title == text else exact
            accented = lang != "vi" or has_diacritics(f"{title} {text}".strip())
            label, score = lexicon.score_tokens(both, lang, accented)
        author = hash_author(str(get(k_author) or ""), salt)
        item = [
            ts,
            src,
            item_id,
            author,
            title,
            text,
            url,
            lang,
            ents,
            label,
            score,
            tuple(sorted(terms(folded, exclude, handles))),
            b"",  # the signature
            watch.ambiguous_tokens(exact, folded),
            _publisher(raw.get(pub_field)) if pub_field else "",
        ]
        return item, folded

    def parse_batch(raws: list[dict[str, Any]]) -> list[Parsed]:
        out: list[Parsed] = []
        fields: list[list[Any]] = []
        words: list[list[str]] = []
        lines: dict[tuple[str, str], int] = {}
        for raw in raws:
            src = input_of(raw)
            if "_dead" in raw:
                k = (src, "dead_lettered")
                lines[k] = lines.get(k, 0) + 1
                out.append(
                    DeadLetter(
                        "media_parse",
                        str(raw["_dead"]),
                        str(raw.get("payload", ""))[:512],
                        src,
                        str(raw.get("origin", "")),
                    )
                )
                continue
            try:
                vals, folded = one(raw, src)
            except BadItem as ex:
                reason = ex.reason
            except Exception as ex:  # a bug must not stop the flow: dead-letter the item
                reason = type(ex).__name__
            else:
                fields.append(vals)
                words.append(folded)
                k = (src, "parsed")
                lines[k] = lines.get(k, 0) + 1
                continue
            k = (src, "dead_lettered")
            lines[k] = lines.get(k, 0) + 1
            out.append(
                DeadLetter("media_parse", reason, repr(raw)[:512], src, str(raw.get("origin", "")))
            )
        # Signatures in one numpy pass; sentiment in one call for a model (vectorising a
        # batch is much cheaper), per item otherwise.
        if dedup:
            for vals, g in zip(fields, minhash_many(words, shingle), strict=True):
                vals[_SIG] = g
        if lexicon is None:
            bodies = [f"{v[_TITLE]} {v[_TEXT]}".strip() for v in fields]
            if batch_scorer is not None:
                scores = batch_scorer.score_many(bodies)
            else:
                scores = [scorer.score(b, v[_LANG]) for b, v in zip(bodies, fields, strict=True)]
            for vals, (label, sc) in zip(fields, scores, strict=True):
                vals[_SENTIMENT], vals[_SENTIMENT + 1] = label, sc
        items = [MediaItem(*vals) for vals in fields]
        mt = MediaTally()
        mentions = mt.mentions
        for it in items:
            for e in it.entities:
                key = (e, it.source, it.sentiment)
                mentions[key] = mentions.get(key, 0) + 1
            mt.ambiguous += it.ambiguous
        if items:
            out.append((_KEY, items))
        out.append(Tally("media_parse", lines=lines))
        out.append(mt)
        return out

    return parse_batch


# ---------------------------------------------------------------------------- bytewax glue
class AnalyzerLogic(StatefulBatchLogic[list[MediaItem], Any, MediaSnapshot]):
    """The one analyzer; closes quiet live buckets by the wall clock (``notify_at``)."""

    def __init__(self, analyzer: MediaAnalyzer) -> None:
        self.analyzer = analyzer

    def on_batch(self, values: list[list[MediaItem]]) -> tuple[list[Any], bool]:
        out: list[Any] = []
        for items in values:
            try:
                out.extend(self.analyzer.process(items))
            except Exception as ex:  # keep the state; dead-letter the batch
                log.exception("media analysis failed")
                out.append(
                    DeadLetter("media_analyze", type(ex).__name__, repr(items[:3])[:512], FEED)
                )
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        t = self.analyzer.next_tick()
        return None if t is None else datetime.fromtimestamp(t, UTC) + timedelta(seconds=0.01)

    def on_notify(self) -> tuple[list[Any], bool]:
        return self.analyzer.tick(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        return self.analyzer.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> MediaSnapshot:
        return self.analyzer.snapshot()


@dataclass(frozen=True)
class MediaStreams:
    detections: Stream[Detection]
    dead: Stream[DeadLetter]
    telemetry: Stream[Any]


@operator
def media_pipeline(
    step_id: str,
    raw: Stream[dict[str, Any]],
    cfg: MediaConfig,
    parse_batch: Callable[[list[dict[str, Any]]], list[Parsed]],
) -> MediaStreams:
    """Parse, enrich and analyse a stream of item dicts (see the module docstring)."""
    parsed = op.flat_map_batch("media_parse", raw, guard_batch("media_parse", FEED, parse_batch))
    b = op.branch("media_is_items", parsed, lambda x: type(x) is tuple)
    keyed = cast(Stream[tuple[str, list[MediaItem]]], b.trues)
    rest = op.branch("media_is_dead", b.falses, lambda x: type(x) is DeadLetter)

    def builder(resume: MediaSnapshot | None) -> AnalyzerLogic:
        an = MediaAnalyzer(cfg)
        if resume is not None:
            an.restore(resume)
        return AnalyzerLogic(an)

    analyzed = op.key_rm(
        "media_unkey",
        op.stateful_batch("media_analyze", keyed, guard_logic("media_analyze", FEED, builder)),
    )
    ab = op.branch("media_is_detection", analyzed, lambda x: type(x) is Detection)
    adead = op.branch("media_analyze_dead", ab.falses, lambda x: type(x) is DeadLetter)
    dets = cast(Stream[Detection], ab.trues)
    dead = op.merge(
        "media_dead", cast(Stream[DeadLetter], rest.trues), cast(Stream[DeadLetter], adead.trues)
    )
    telemetry = op.merge("media_telemetry", rest.falses, adead.falses, dets, dead)
    return MediaStreams(dets, dead, telemetry)


def _salt(cfg: MediaConfig, environ: Mapping[str, str]) -> bytes:
    if cfg.author_salt_env and environ.get(cfg.author_salt_env):
        return environ[cfg.author_salt_env].encode()
    if cfg.author_salt_env:
        log.warning(
            "author-hash salt not set: author hashes can be reversed by guessing names",
            extra={"variable": cfg.author_salt_env},
        )
    return b""


def build_pipeline_parts(
    cfg: MediaConfig, environ: Mapping[str, str] | None = None
) -> Callable[[list[dict[str, Any]]], list[Parsed]]:
    """The parse function for ``cfg`` (sentiment scorer loaded, field maps per input)."""
    import os

    s = cfg.sentiment
    scorer = make_scorer(s.kind, s.model_path, s.negative_below, s.positive_above)
    return make_parse_batch(
        cfg,
        scorer=scorer,
        salt=_salt(cfg, os.environ if environ is None else environ),
        fields_by_source={i.name: getattr(i, "fields", {}) for i in cfg.inputs},
        languages={i.name: i.language for i in cfg.inputs},
        input_of_origin=_origins(cfg),
    )


def _origins(cfg: MediaConfig) -> dict[str, str]:
    """Input name by polled URL (RSS and HTTP items carry the URL as ``origin``)."""
    out: dict[str, str] = {}
    for i in cfg.inputs:
        for u in (*getattr(i, "urls", ()), getattr(i, "url", None)):
            if u:
                out[u] = i.name
    return out


def _publisher(v: Any) -> str:
    """A mapped publisher value as a short name (``""`` when empty)."""
    if v is None:
        return ""
    return " ".join(str(v).split())[:80]


def attach(flow: Dataflow, io: FeedIO) -> MediaStreams:
    """Add the media pipeline to ``flow`` with inputs and metrics from ``io`` (``FlowIO``).

    The feed's ``attach`` (:mod:`vigil.flows.feed`).
    """
    from vigil.flows.media.inputs import make_media_sources
    from vigil.flows.media.metrics import MediaMetricsSink

    cfg: MediaConfig = io.section("media")
    sources = make_media_sources(
        cfg, item_time, speed_override=io.speed_override, environ=io.environ
    )
    io.metrics_sink("media")  # registers the flow's common metrics (lines, detections ...)
    sink = MediaMetricsSink(io.metrics["media"], registry=io.registry, top_k=cfg.top_terms)
    alerts = getattr(getattr(io.cfg, "alerts", None), "file", None)
    return attach_sources(
        flow,
        cfg,
        sources,
        sink,
        environ=io.environ,
        stories_file=stories_path(cfg.stories_file, alerts),
    )


def attach_sources(
    flow: Dataflow,
    cfg: MediaConfig,
    sources: list[Source[dict[str, Any]]],
    metrics_sink: Sink[Any],
    *,
    environ: Mapping[str, str] | None = None,
    stories_file: Path | None = None,
) -> MediaStreams:
    """Add the media pipeline over given sources; telemetry goes to ``metrics_sink``, and
    every story report to ``stories_file`` (JSON lines) when given."""
    if not sources:
        msg = "media flow needs at least one input (media.inputs is empty)"
        raise ValueError(msg)
    # ``name`` is also the metric label, shared by inputs that keep the default: a name
    # names the recovery state only when no other input has it.
    names = [getattr(inp, "name", None) for inp in cfg.inputs]
    keyed = [
        SimpleNamespace(**{**dict(inp), "name": n if names.count(n) == 1 else None})
        for inp, n in zip(cfg.inputs, names, strict=True)
    ]
    ids = input_step_ids("media", keyed, len(sources))
    ins = [op.input(i, flow, s) for i, s in zip(ids, sources, strict=True)]
    raw = ins[0] if len(ins) == 1 else op.merge("media_inputs", *ins)
    s = media_pipeline("media", raw, cfg, build_pipeline_parts(cfg, environ))
    op.output("media_metrics_out", s.telemetry, metrics_sink)
    if stories_file is not None:
        stories = op.filter("media_is_story", s.telemetry, lambda x: type(x) is EmergingStory)
        op.output("media_stories_out", stories, StoryFileSink(stories_file))
    return s


def build_flow(
    cfg: MediaConfig,
    sources: list[Source[dict[str, Any]]],
    alert_sink: Sink[Detection],
    dead_sink: Sink[DeadLetter],
    metrics_sink: Sink[Any],
    *,
    name: str = "vigil_media",
    environ: Mapping[str, str] | None = None,
    stories_file: Path | None = None,
) -> Dataflow:
    """The media dataflow alone. Opens nothing itself: sources and sinks are passed in."""
    return standalone_flow(
        name,
        lambda flow: attach_sources(
            flow, cfg, sources, metrics_sink, environ=environ, stories_file=stories_file
        ),
        alert_sink,
        dead_sink,
    )
