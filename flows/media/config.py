"""Configuration section of the media-mentions flow (flows/media/flow.py).

Example (YAML)::

    media:
      inputs:
        - kind: rss
          name: press                      # the "source" label of metrics
          urls: ["https://example.org/rss"]
          interval_s: 300
        - kind: replay
          name: twitter
          paths: ["posts.csv"]
          format: csv
          fields: {published_at: created_at_utc, text: text, id: tweet_id}
        - kind: redis_stream               # or the bus (vigil ingest --feed media)
          name: bus
          url: redis://127.0.0.1:6379/0
      watch:
        - id: van_lam
          name: Huyện Văn Lâm
          aliases: ["Văn Lâm", "huyện Văn Lâm"]
          keywords: ["cầu Như Quỳnh"]
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from vigil.flows.bus_inputs import BusSettings
from vigil.flows.config.base import Frozen, Severity

#: Item fields the flow reads; ``fields`` maps them to the names an input uses.
ITEM_FIELDS = ("id", "published_at", "source", "author", "title", "text", "url", "language")


def _known_fields(v: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(v) - set(ITEM_FIELDS))
    if unknown:
        msg = f"unknown item field(s) {', '.join(unknown)}: fields maps {', '.join(ITEM_FIELDS)}"
        raise ValueError(msg)
    return v


class _Input(Frozen):
    name: str = Field(
        default="media",
        pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="value of the 'source' label of this input's items (keep it short)",
    )
    language: str | None = Field(
        default=None, description="'vi' or 'en'; default: the feed's own, else guessed"
    )


class RSSInput(_Input):
    """Poll RSS/Atom feeds (conditional GET, per-feed backoff, de-duplication)."""

    kind: Literal["rss"] = "rss"
    urls: tuple[str, ...] = Field(min_length=1)
    interval_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    max_backoff_s: float = Field(default=3600.0, gt=0)
    max_polls: int | None = Field(default=None, ge=1, description="stop after this many polls")


class HTTPJSONInput(_Input):
    """Poll a URL that returns JSON: a list of items, or a list at ``items_path``."""

    kind: Literal["http_json"] = "http_json"
    url: str
    items_path: str | None = Field(default=None, description="dotted path to the list")
    fields: dict[str, str] = Field(default_factory=dict)
    _fields = field_validator("fields")(_known_fields)
    interval_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    max_backoff_s: float = Field(default=3600.0, gt=0)
    max_polls: int | None = Field(default=None, ge=1)


class PostReplayInput(_Input):
    """Replay recorded posts (JSON lines or CSV) in event-time order."""

    kind: Literal["replay"] = "replay"
    paths: tuple[str, ...] = Field(min_length=1)
    format: Literal["jsonl", "csv"] = "jsonl"
    fields: dict[str, str] = Field(default_factory=dict)
    _fields = field_validator("fields")(_known_fields)
    speed: float | None = Field(default=None, gt=0, description="null = as fast as possible")


class MediaStreamInput(BusSettings, _Input):
    """Read media items from the bus (Redis Streams), one item per entry.

    An entry's text is one item as a JSON object (a JSON line as it was, a CSV row as
    ``{column: value}``, or an item polled from RSS or HTTP), as ``vigil ingest --feed
    media`` writes them; ``fields`` maps it like a replayed post. Items should arrive in
    roughly event-time order (``vigil ingest`` sends a file's posts in that order).
    """

    kind: Literal["redis_stream"] = "redis_stream"
    stream: str = "vigil:media"
    fields: dict[str, str] = Field(default_factory=dict)
    _fields = field_validator("fields")(_known_fields)
    # An article with its full text can be long; a longer entry is dead-lettered.
    max_line_bytes: int = Field(default=1_048_576, ge=512)


MediaInput = Annotated[
    RSSInput | HTTPJSONInput | PostReplayInput | MediaStreamInput, Field(discriminator="kind")
]


class WatchEntity(Frozen):
    """A watched entity: the district, a commune, an agency, an official, a project."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="stable id, a metric label")
    name: str | None = None
    kind: str = "entity"
    aliases: tuple[str, ...] = Field(min_length=1)
    keywords: tuple[str, ...] = ()


class SentimentConfig(Frozen):
    """``lexicon`` (shipped word lists) or ``model`` (trained by ``vigil train sentiment``)."""

    kind: Literal["lexicon", "model"] = "lexicon"
    model_path: str | None = None
    negative_below: float = Field(default=-0.2, ge=-1, le=0)
    positive_above: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _model_needs_path(self) -> SentimentConfig:
        if self.kind == "model" and not self.model_path:
            msg = "sentiment.kind 'model' needs model_path"
            raise ValueError(msg)
        return self


class DedupConfig(Frozen):
    """Near-duplicate suppression: MinHash over word shingles."""

    enabled: bool = True
    threshold: float = Field(default=0.5, gt=0, le=1, description="least Jaccard similarity")
    shingle: int = Field(default=3, ge=1, le=8)
    horizon_s: float = Field(default=172_800.0, gt=0)
    max_items: int = Field(default=50_000, ge=100)


class VolumeDetectorConfig(Frozen):
    """Hyperparameters of :class:`vigil.detectors.mention_volume.MentionVolume` (same defaults)."""

    period: Literal["day_hour", "week_hour"] = "day_hour"
    tz: str = "Asia/Ho_Chi_Minh"
    alpha: float = Field(default=0.05, gt=0, le=1)
    min_std: float = Field(default=0.5, gt=0)
    smooth: int = Field(default=3, ge=1)
    averaging_window: int = Field(default=5, ge=1)
    learning_period: int = Field(default=288, ge=0)
    estimation_samples: int = Field(default=100, ge=1)
    historic_window: int = Field(default=8640, ge=10)
    reestimation_period: int = Field(default=100, ge=1)


class _Rule(Frozen):
    enabled: bool = True
    severity: Severity = "warning"


class VolumeRule(_Rule):
    """Mentions per ``bucket_s`` of each entity against its seasonal baseline."""

    threshold: float = Field(default=0.5, gt=0, le=1, description="log-likelihood score")
    min_count: int = Field(default=5, ge=0, description="a window below this never alerts")
    min_total: int = Field(
        default=20, ge=0, description="mentions before an entity's baseline starts learning"
    )
    detector: VolumeDetectorConfig = VolumeDetectorConfig()


class NegativeSurgeRule(_Rule):
    """The share of negative items of an entity over ``window_s`` against its baseline."""

    window_s: float = Field(default=10_800.0, gt=0)
    z: float = Field(default=3.0, gt=0, description="binomial z-score to alert")
    min_items: int = Field(default=20, ge=1)
    min_negative: int = Field(default=10, ge=1)
    min_increase: float = Field(default=0.1, ge=0, le=1, description="share above baseline")
    half_life_s: float = Field(default=172_800.0, gt=0, description="baseline memory")
    min_baseline_items: int = Field(default=50, ge=1)


class HotIssueRule(_Rule):
    """Emerging stories: bursting terms over ``window_s`` grouped; alert when one touches
    a watched entity."""

    severity: Severity = "high"
    window_s: float = Field(default=3600.0, gt=0)
    min_stories: int = Field(default=8, ge=2, description="stories using a term in the window")
    ratio: float = Field(default=4.0, gt=1, description="window count / expected")
    z: float = Field(default=5.0, gt=0, description="Poisson z-score of a term's count")
    min_expected: float = Field(
        default=1.0, gt=0, description="least expected stories per window (new terms)"
    )
    half_life_s: float = Field(default=86_400.0, gt=0, description="term baseline memory")
    warmup_s: float = Field(default=21_600.0, ge=0, description="no stories before this")
    min_entity_share: float = Field(default=0.3, gt=0, le=1)
    max_terms: int = Field(default=50_000, ge=100)
    examples: int = Field(default=3, ge=1, le=10)


class StoryRule(_Rule):
    """An alert of its own for every emerging story (no watch list needed).

    The story is found by ``hot_issue``'s settings (window, thresholds, warm-up); this rule
    says how it is alerted: ``high`` when it is large or fast, else ``severity``."""

    high_stories: int = Field(
        default=30, ge=1, description="stories in the window that make it high"
    )
    high_per_hour: float = Field(
        default=40.0, gt=0, description="stories per hour (last 15 min) that make it high"
    )
    early: bool = Field(
        default=True, description="flag a clear burst as soon as its count passes the bar"
    )
    continue_s: float = Field(
        default=86_400.0,
        ge=0,
        description="a quiet story that bursts again within this is named as continued",
    )


class MediaRules(Frozen):
    volume: VolumeRule = VolumeRule()
    negative_surge: NegativeSurgeRule = NegativeSurgeRule()
    hot_issue: HotIssueRule = HotIssueRule()
    story: StoryRule = StoryRule()


class MediaConfig(Frozen):
    """Settings of the media-mentions flow (flows/media/flow.py)."""

    inputs: tuple[MediaInput, ...] = ()
    watch: tuple[WatchEntity, ...] = ()
    sentiment: SentimentConfig = SentimentConfig()
    dedup: DedupConfig = DedupConfig()
    rules: MediaRules = MediaRules()
    bucket_s: float = Field(default=300.0, gt=0, description="counting window, seconds")
    allowed_lateness_s: float = Field(default=600.0, ge=0)
    author_salt_env: str | None = Field(
        default="VIGIL_AUTHOR_SALT", description="variable holding the author-hash salt"
    )
    top_terms: int = Field(default=10, ge=1, le=50, description="size of the top-terms gauge")
    stories_file: str | None = Field(
        default="media_stories.jsonl",
        description="JSON lines of every story report; relative: beside the alerts file",
    )

    @model_validator(mode="after")
    def _ids_unique(self) -> MediaConfig:
        ids = [e.id for e in self.watch]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            msg = f"media.watch ids must be unique, repeated: {dup}"
            raise ValueError(msg)
        names = [i.name for i in self.inputs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            msg = f"media.inputs names must be unique, repeated: {dup}"
            raise ValueError(msg)
        return self


def explain(section: MediaConfig) -> list[str]:
    """What ``vigil check-config`` says about the media section (``error:`` lines fail it)."""
    from vigil.flows.config.columns import missing_columns

    out = [f"media inputs: {len(section.inputs)}; watched entities: {len(section.watch)}"]
    for i, inp in enumerate(section.inputs):
        if isinstance(inp, PostReplayInput) and inp.fields:
            out += missing_columns(inp.fields, inp.paths, inp.format, f"media.inputs.{i}.fields")
    if section.inputs and not section.watch:
        out.append(
            "note: media.watch is empty: no mention counts, negative surges or hot "
            "issues; emerging stories still raise media_story alerts"
        )
    return out
