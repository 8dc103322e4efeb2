"""Records of the media flow. Frozen, slotted, plain values (cheap to pickle)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MediaItem:
    """One article or post after parsing and enrichment.

    Parameters
    ----------
    ts
        Publication time, float epoch seconds (UTC).
    source
        Name of the input it came from (a bounded metric label).
    item_id
        The item's id (feed guid, tweet id), else its link, else a hash of its text.
    author
        Salted hash of the author (never the name itself); ``""`` when unknown.
    title, text, url, language
        As published; ``language`` is ``"vi"`` or ``"en"`` (declared or guessed).
    entities
        Ids of the watched entities it mentions.
    sentiment, sentiment_score
        ``"negative"``, ``"neutral"`` or ``"positive"``, and the scorer's score.
    terms
        Candidate story terms (folded words and two-word phrases).
    signature
        MinHash signature of its words, for near-duplicate grouping.
    ambiguous
        Names written without diacritics that could be several watched entities.
    publisher
        Who published it, from the input's ``source`` field when mapped (``""``: not
        mapped; the link's host stands in).
    """

    ts: float
    source: str
    item_id: str
    author: str
    title: str
    text: str
    url: str
    language: str
    entities: tuple[str, ...] = ()
    sentiment: str = "neutral"
    sentiment_score: float = 0.0
    terms: tuple[str, ...] = ()
    signature: bytes = b""
    ambiguous: int = 0
    publisher: str = ""


@dataclass(frozen=True, slots=True)
class EmergingStory:
    """A group of terms bursting together, with the items that carry them.

    ``story_id`` is stable while the story's leading term keeps bursting. ``terms`` holds
    the shown terms with their burst z-scores, ``term_counts`` the same terms with the
    number of stories in the window using each (largest first). ``publishers`` counts the
    member stories by publisher (the mapped ``source`` field, else the link's host, else
    the input name), ``inputs`` names the inputs they came from, and ``first_seen`` is the
    time of the earliest member. ``story_id`` stays the same for the life of the story;
    ``continues`` names the quiet story it took up again (``""``: none), ``recent`` counts
    its stories of the last 15 minutes and ``per_hour`` is their rate, and ``early`` says
    it was found before its bucket closed.
    """

    story_id: str
    ts: float
    window_s: float
    terms: tuple[tuple[str, float], ...]
    stories: int
    entities: tuple[tuple[str, int], ...]
    headlines: tuple[tuple[str, str], ...]  # (title, url)
    new: bool = True
    term_counts: tuple[tuple[str, int], ...] = ()
    publishers: tuple[tuple[str, int], ...] = ()
    inputs: tuple[str, ...] = ()
    first_seen: float | None = None
    continues: str = ""
    recent: int = 0
    early: bool = False
    per_hour: float = 0.0


@dataclass(slots=True)
class MediaTally:
    """Counts over one batch for the media metrics (O(batches), not O(items)).

    ``mentions`` maps (entity, source, sentiment) to items; ``items`` maps (source,
    ``"story"`` | ``"copy"``) to items; ``top_terms`` is the current top of bursting
    terms, ``None`` when unchanged.
    """

    mentions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    items: dict[tuple[str, str], int] = field(default_factory=dict)
    ambiguous: int = 0
    late: int = 0
    emerging: int = 0
    top_terms: tuple[tuple[str, float], ...] | None = None
