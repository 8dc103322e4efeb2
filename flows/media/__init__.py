"""The media-mentions feed: articles and posts in; mentions, stories and alerts out.

Modules: ``config`` (its section), ``records``, ``inputs`` (RSS, HTTP, recorded posts),
``text`` (folding, watch list, near-duplicates), ``sentiment``, ``analysis`` (stories,
volumes, surges), ``episodes`` (buckets, episodes, evidence), ``stories`` (term baselines,
emerging stories, early flags), ``tracks`` (story ids, story alerts), ``storyfile`` (the
stories file), ``metrics``, ``flow`` (``attach``), ``cli`` (``vigil train sentiment``,
``vigil media stories``).
"""

from __future__ import annotations

from vigil.flows.feed import FeedSpec
from vigil.flows.media.cli import register
from vigil.flows.media.config import MediaConfig, explain
from vigil.flows.media.flow import attach

FEED = FeedSpec(
    name="media",
    config=MediaConfig,
    summary="news and social posts: mentions, stories, negative surges",
    attach_fn=attach,
    explain_fn=explain,
    commands_fn=register,
)
