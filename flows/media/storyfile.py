"""The stories file of the media flow: every story report as one JSON line, read back.

The flow appends one line per report of an emerging story (each closed bucket it bursts
in, and each early flag) to ``media.stories_file`` (``media_stories.jsonl`` beside the
alerts file by default). Lines of one story share its ``story_id``; :func:`read_stories`
folds them into one summary per story, which ``vigil media stories`` prints. Delivery is
at least once (a resumed flow may write a report again), which folding absorbs.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override
from vigil.flows.media.records import EmergingStory

__all__ = ["StoryFileSink", "read_stories", "stories_path", "story_line"]

log = logging.getLogger(__name__)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def story_line(s: EmergingStory) -> dict[str, Any]:
    """One report of a story as plain JSON values."""
    return {
        "story_id": s.story_id,
        "ts": _iso(s.ts),
        "first_seen": _iso(s.first_seen),
        "stories": s.stories,
        "new": s.new,
        "early": s.early,
        "continues": s.continues or None,
        "stories_last_15min": s.recent,
        "terms": [t for t, _ in s.terms],
        "term_counts": dict(s.term_counts),
        "headlines": [{"title": t, "url": u} for t, u in s.headlines],
        "sources": dict(s.publishers),
        "inputs": list(s.inputs),
        "entities": dict(s.entities),
    }


def stories_path(stories_file: str | None, alerts_file: str | None) -> Path | None:
    """Where the stories go: an absolute ``stories_file`` as is, a relative one beside the
    alerts file (``vigil-out/`` when alerts go to stdout or nowhere); ``None``: nowhere.

    >>> str(stories_path("media_stories.jsonl", "out/alerts.jsonl"))
    'out/media_stories.jsonl'
    >>> str(stories_path("media_stories.jsonl", "-")), stories_path(None, "a.jsonl")
    ('vigil-out/media_stories.jsonl', None)
    """
    if not stories_file:
        return None
    p = Path(stories_file)
    if p.is_absolute():
        return p
    base = Path(alerts_file).parent if alerts_file and alerts_file != "-" else Path("vigil-out")
    return base / p


class StoryFileSink(DynamicSink[Any]):
    """Appends every :class:`EmergingStory` it is given to a JSON-lines file (other items
    are ignored); never raises out of a write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.path)


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[str] | None = None

    @override
    def write_batch(self, items: list[Any]) -> None:
        lines = [
            json.dumps(story_line(s), ensure_ascii=False) for s in items if type(s) is EmergingStory
        ]
        if not lines:
            return
        try:
            if self._f is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            self._f.write("\n".join(lines) + "\n")
            self._f.flush()
        except OSError:
            log.exception("writing the media stories file failed", extra={"path": str(self.path)})

    @override
    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_stories(path: Path) -> tuple[list[dict[str, Any]], int]:
    """One summary per story of a stories file, in order of first report, and the number
    of lines skipped.

    Each holds the story's id, ``first_seen``, ``first_reported``, ``last_reported``,
    ``reports``, ``size`` (most stories in its window), the terms, headlines and sources
    of its latest report, ``continues`` and whether it was flagged ``early``. Lines that are
    not JSON objects with a ``story_id`` are skipped (and counted).

    Raises
    ------
    OSError
        The file cannot be read.
    """
    by_id: dict[str, dict[str, Any]] = {}
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                sid = r["story_id"]
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            cur = by_id.get(sid)
            if cur is None:
                cur = by_id[sid] = {
                    "story_id": sid,
                    "first_seen": r.get("first_seen"),
                    "first_reported": r.get("ts"),
                    "reports": 0,
                    "size": 0,
                    "early": bool(r.get("early")),
                    "continues": r.get("continues"),
                }
            cur["reports"] += 1
            cur["last_reported"] = r.get("ts")
            cur["size"] = max(cur["size"], int(r.get("stories") or 0))
            fs = r.get("first_seen")
            if fs and (cur["first_seen"] is None or fs < cur["first_seen"]):
                cur["first_seen"] = fs
            for k in ("terms", "headlines", "sources", "entities"):
                cur[k] = r.get(k) or ([] if k in ("terms", "headlines") else {})
    return list(by_id.values()), skipped
