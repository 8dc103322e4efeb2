"""Append-only JSON-lines files that survive being killed mid-write."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO


def open_append(path: str | Path) -> BinaryIO:
    """Open ``path`` for appending JSON lines (its folder must exist).

    A process killed with SIGKILL can leave a half-written last line. If the file does not
    end with a newline, one is written first, so the next record starts on a line of its
    own: the cut line is lost to readers, the new ones are not.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> _ = p.write_bytes(b'{"a": 1}\\n{"b": ')
    >>> with open_append(p) as fh:
    ...     _ = fh.write(b'{"c": 3}\\n')
    >>> p.read_bytes().splitlines()
    [b'{"a": 1}', b'{"b": ', b'{"c": 3}']
    """
    p = Path(path)
    fh = open(p, "ab")  # noqa: SIM115 - the caller closes it
    if fh.tell() > 0:
        with open(p, "rb") as r:
            r.seek(-1, 2)
            if r.read(1) != b"\n":
                fh.write(b"\n")
                fh.flush()
    return fh
