"""What ``vigil check-config`` checks in input files: the columns a mapping names.

Shared by the feeds whose inputs map columns (service queues, media); kept apart from
:mod:`vigil.flows.inputs` so a feed's config does not import another feed's parsers.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Mapping


def file_columns(paths: tuple[str, ...], fmt: str) -> tuple[str, list[str]] | None:
    """The first matched file of ``paths`` and its columns (the CSV header, or the keys of
    the first JSON line); ``None`` when no file exists or it cannot be read."""
    for pattern in paths:
        hits = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in hits:
            if not os.path.isfile(path):
                continue
            try:
                with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
                    if fmt == "csv":
                        return path, next(csv.reader(f), [])
                    first = f.readline()
                    row = json.loads(first) if first.strip() else {}
                    return path, list(row) if isinstance(row, dict) else []
            except (OSError, ValueError):
                return None
    return None


def missing_columns(
    wanted: Mapping[str, str | None], paths: tuple[str, ...], fmt: str, what: str
) -> list[str]:
    """``error:`` lines for each mapped column (setting -> column) absent from the file."""
    found = file_columns(paths, fmt)
    if found is None:
        return []
    path, columns = found
    have = set(columns)
    shown = ", ".join(columns[:30]) + (" ..." if len(columns) > 30 else "")
    return [
        f"error: {what}.{key}: column {col!r} is not in {path}; its columns are {shown}"
        for key, col in wanted.items()
        if col and col not in have
    ]
