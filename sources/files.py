"""Follow text files like ``tail -F`` and emit each line as a :class:`~vigil.records.RawLine`.

One bytewax partition per file path. Each partition reads the file in binary, in large chunks,
splits on ``b"\\n"``, decodes UTF-8 with ``errors="replace"`` and strips one trailing
``"\\r"``. Its snapshot is a :class:`FileState` (inode, byte offset of the next unread complete
line), so bytewax recovery resumes reading exactly after the last emitted line.

The helpers :func:`decode_block` and :func:`oversize_line` are shared with the other sources
of this package, so that every source treats encodings and over-long lines the same way.
"""

from __future__ import annotations

import glob
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from vigil.records import RawLine

__all__ = [
    "OVERSIZE_PREFIX_CHARS",
    "FileState",
    "FileTailSource",
    "decode_block",
    "oversize_line",
]

OVERSIZE_PREFIX_CHARS = 512
"""How many characters of an over-long line are kept in the dead ``RawLine``."""

# 1 MiB per read: large enough that the per-read Python overhead vanishes against the
# per-line cost, small enough to keep the memory of a partition bounded.
_CHUNK_BYTES = 1 << 20


def oversize_line(fmt: str, origin: str, head: bytes, ref_ts: float) -> RawLine:
    """The one ``RawLine`` that stands for a line longer than the size limit.

    Parameters
    ----------
    fmt, origin, ref_ts
        As in :class:`~vigil.records.RawLine`.
    head
        The start of the line (at least the first few KiB are enough).

    Examples
    --------
    >>> r = oversize_line("ssh", "f.log", b"x" * 100_000, 0.0)
    >>> (len(r.text), r.oversize)
    (512, True)
    """
    # 4 bytes per character at most in UTF-8, so this many bytes always give 512 characters
    # unless the line itself is shorter.
    text = head[: 4 * OVERSIZE_PREFIX_CHARS].decode("utf-8", "replace")[:OVERSIZE_PREFIX_CHARS]
    return RawLine(fmt, origin, text, ref_ts, True)


def decode_block(
    block: bytes, fmt: str, origin: str, ref_ts: float, max_line_bytes: int
) -> list[RawLine]:
    """Split a block of complete lines into ``RawLine`` records.

    Parameters
    ----------
    block
        Bytes made of whole lines, the last one *without* its terminating ``b"\\n"``
        (so ``b"a\\nb"`` holds two lines and ``b""`` one empty line).
    fmt, origin, ref_ts
        Copied into every record.
    max_line_bytes
        Lines longer than this many bytes (without the newline) become a single record with
        ``oversize=True`` and the first 512 characters as text.

    Examples
    --------
    >>> [r.text for r in decode_block(b"a\\r\\nb\\xff\\n", "f", "o", 0.0, 100)]
    ['a', 'b\\ufffd', '']
    >>> [(r.text, r.oversize) for r in decode_block(b"ok\\n" + b"y" * 9, "f", "o", 0.0, 8)]
    [('ok', False), ('yyyyyyyyy', True)]
    """
    # Decoding the block at once is ~10x faster than line by line. It gives the same text:
    # b"\n" never occurs inside a multi-byte UTF-8 sequence, so a broken sequence is
    # replaced the same way whether or not the line around it was cut out first.
    text = block.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
    texts = text.split("\n")
    # A line of n characters holds at least n bytes (a replacement character stands for at
    # least one byte) and at most 4n, so only blocks with long lines need the exact check.
    # (+1 for a stripped "\r", which the exact check counts.)
    if len(block) > max_line_bytes and 4 * max(map(len, texts)) + 1 > max_line_bytes:
        return _decode_block_slow(block, fmt, origin, ref_ts, max_line_bytes)
    return list(map(RawLine, repeat(fmt), repeat(origin), texts, repeat(ref_ts)))


def _decode_block_slow(
    block: bytes, fmt: str, origin: str, ref_ts: float, max_line_bytes: int
) -> list[RawLine]:
    out: list[RawLine] = []
    for raw in block.split(b"\n"):
        if len(raw) > max_line_bytes:
            out.append(oversize_line(fmt, origin, raw, ref_ts))
        else:
            t = raw.decode("utf-8", "replace")
            out.append(RawLine(fmt, origin, t[:-1] if t.endswith("\r") else t, ref_ts))
    return out


@dataclass(frozen=True, slots=True)
class FileState:
    """Resume position of one followed file.

    Parameters
    ----------
    inode
        Inode of the file the offset refers to; ``None`` if the file did not exist yet.
    offset
        Byte offset of the next unread complete line.
    skipping
        ``True`` when ``offset`` lies inside an over-long line that was already reported:
        on resume the rest of that line, up to its newline, is skipped.
    """

    inode: int | None = None
    offset: int = 0
    skipping: bool = False


@dataclass(slots=True)
class _Block:
    """Records read but not yet emitted, with what is needed to snapshot inside them."""

    items: list[RawLine]
    data: bytes  # the bytes the items came from, lines separated by b"\n"
    begin: FileState  # the state before any item is emitted; its offset is that of data[0]
    end: FileState  # the state once every item is emitted
    taken: int = 0  # items already emitted

    def state_after(self, k: int) -> FileState:
        """The state once the first ``k`` items are emitted."""
        if k == 0:
            return self.begin
        if k >= len(self.items):
            return self.end
        # One item per line of data: the offset is just after the k-th newline. This runs
        # once per snapshot, not per line, so the hot path keeps no per-line offsets.
        pos = -1
        find = self.data.find
        for _ in range(k):
            pos = find(b"\n", pos + 1)
        return FileState(self.begin.inode, self.begin.offset + pos + 1, False)


class _FileTailPartition(StatefulSourcePartition[RawLine, FileState]):
    def __init__(
        self,
        path: str,
        fmt: str,
        *,
        follow: bool,
        max_line_bytes: int,
        batch_size: int,
        poll_interval_s: float,
        start_at_end: bool,
        resume_state: FileState | None,
    ) -> None:
        self._path = path
        self._fmt = fmt
        self._follow = follow
        self._max = max_line_bytes
        self._batch_size = batch_size
        self._poll = timedelta(seconds=poll_interval_s)
        self._fd: int | None = None  # raw fd: no Python buffering on top of 1 MiB reads
        self._ino: int | None = None
        self._ref_ts = 0.0
        # Read side: where the next read starts, the partial line held back, and whether
        # we are discarding the rest of a line already reported as oversize.
        self._read_off = 0
        self._carry = b""
        self._skipping = False
        # Emit side: records waiting to be emitted and the state after the last emitted one.
        self._blocks: deque[_Block] = deque()
        self._state = FileState()
        self._eof = False
        self._next_awake: datetime | None = None
        self._open(resume_state, start_at_end)

    # -- opening, rotation, truncation --------------------------------------------------

    def _open(self, resume: FileState | None, at_end: bool) -> bool:
        """Open the path; position from ``resume`` when it still names this file."""
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            if not self._follow:
                self._eof = True
            return False
        st = os.fstat(fd)
        self._fd, self._ino, self._ref_ts = fd, st.st_ino, st.st_mtime
        off, skipping = 0, False
        if resume is not None and resume.inode == st.st_ino:
            # A resume offset beyond the end means the file was truncated meanwhile.
            if resume.offset <= st.st_size:
                off, skipping = resume.offset, resume.skipping
        elif resume is None and at_end and st.st_size > 0:
            off = st.st_size
            # Starting in the middle of a line: drop its tail instead of emitting a fragment.
            skipping = os.pread(fd, 1, off - 1) != b"\n"
        os.lseek(fd, off, os.SEEK_SET)
        self._read_off, self._carry, self._skipping = off, b"", skipping
        if not self._blocks:  # else the state moves on as the pending records are emitted
            self._state = FileState(self._ino, off, skipping)
        return True

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _at_eof(self) -> bool:
        """Handle the end of the current data; return whether anything changed."""
        if not self._follow:
            self._flush_carry()
            self._close_fd()
            self._eof = True
            return True
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return False  # rotated away and not recreated yet: keep the old handle
        if st.st_ino != self._ino:
            # Rotated by rename + recreate. The old handle was read to EOF just now, but a
            # writer may still have appended to it before the stat: drain it first.
            assert self._fd is not None
            data = os.read(self._fd, _CHUNK_BYTES)
            if data:
                self._ingest(data)
                return True
            self._flush_carry()  # the old file is complete: its last line is final
            self._close_fd()
            self._open(None, at_end=False)
            return True
        if st.st_size < self._read_off:
            # Truncated (copytruncate): start over; the held partial line is gone.
            assert self._fd is not None
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._read_off, self._carry, self._skipping = 0, b"", False
            self._state = FileState(self._ino, 0, False)
            self._ref_ts = st.st_mtime
            return True
        return False

    # -- reading ------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Read once; queue what it yields. Return whether any progress was made."""
        if self._fd is None and (self._eof or not self._open(None, at_end=False)):
            return False
        assert self._fd is not None
        data = os.read(self._fd, _CHUNK_BYTES)
        if not data:
            return self._at_eof()
        self._ingest(data)
        return True

    def _ingest(self, data: bytes) -> None:
        start = self._read_off - len(self._carry)
        self._read_off += len(data)
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return
            self._skipping = False
            start = self._read_off - len(data) + nl + 1
            data = data[nl + 1 :]
        elif self._carry:
            data = self._carry + data
        cut = data.rfind(b"\n")
        if cut >= 0:
            self._carry = data[cut + 1 :]
            block = data[:cut]
            items = decode_block(block, self._fmt, self._path, self._ref_ts, self._max)
            begin = FileState(self._ino, start, False)
            end = FileState(self._ino, start + cut + 1, False)
            self._blocks.append(_Block(items, block, begin, end))
            start = end.offset
        else:
            self._carry = data
        if len(self._carry) > self._max:
            # Report the line now, once; never hold more than max_line_bytes of it.
            line = oversize_line(self._fmt, self._path, self._carry, self._ref_ts)
            begin = FileState(self._ino, start, False)
            end = FileState(self._ino, self._read_off, True)
            self._blocks.append(_Block([line], b"", begin, end))
            self._carry, self._skipping = b"", True

    def _flush_carry(self) -> None:
        """Emit the held partial line as a line of its own (the file is complete)."""
        if self._carry:
            start = self._read_off - len(self._carry)
            items = decode_block(self._carry, self._fmt, self._path, self._ref_ts, self._max)
            begin = FileState(self._ino, start, False)
            end = FileState(self._ino, self._read_off, False)
            self._blocks.append(_Block(items, self._carry, begin, end))
            self._carry = b""

    # -- bytewax API --------------------------------------------------------------------

    @override
    def next_batch(self) -> list[RawLine]:
        progressed = bool(self._blocks) or self._fill()
        out: list[RawLine] = []
        blocks = self._blocks
        while blocks and len(out) < self._batch_size:
            b = blocks[0]
            n = self._batch_size - len(out)
            out.extend(b.items[b.taken : b.taken + n])
            b.taken = min(len(b.items), b.taken + n)
            if b.taken == len(b.items):
                blocks.popleft()
                self._state = b.end
        if not out and self._eof and not blocks:
            raise StopIteration
        # Poll again at once while there is data; wait a poll interval at the end of it.
        self._next_awake = None if progressed else datetime.now(UTC) + self._poll
        return out

    @override
    def next_awake(self) -> datetime | None:
        return self._next_awake

    @override
    def snapshot(self) -> FileState:
        if self._blocks:
            b = self._blocks[0]
            return b.state_after(b.taken)
        return self._state

    @override
    def close(self) -> None:
        self._close_fd()


class FileTailSource(FixedPartitionedSource[RawLine, FileState]):
    """Read text files line by line and, optionally, keep following them like ``tail -F``.

    One partition per path matched by ``patterns`` when the dataflow starts (sorted).
    Files created later that match a glob are not picked up; a plain path that does not
    exist yet is followed until it appears when ``follow=True``.

    Rotation by rename + recreate is detected by the path's inode changing: the old file is
    read to its end, then the new one from offset 0. A file that shrinks was truncated and is
    read again from 0. A partial last line is held until its newline arrives; with
    ``follow=False`` it is emitted as a line at end of file and the partition ends.

    The resume state is a :class:`FileState`. If the file at the path is no longer the one
    the state refers to (a different inode), it is read from the start. Lines appended to a
    rotated file while the dataflow was down are not read.

    Parameters
    ----------
    patterns
        Paths or glob patterns.
    fmt
        Value of ``RawLine.fmt`` for every line (which parser handles them).
    follow
        Keep polling for new data at end of file instead of ending the partition.
    max_line_bytes
        A longer line becomes one ``RawLine(oversize=True)`` holding its first 512
        characters; the rest of it is skipped.
    batch_size
        Most lines returned by one ``next_batch``.
    poll_interval_s
        Wait between polls once the end of the data is reached (``follow=True``).
    start_at_end
        Without resume state, start at the current end of each existing file (like
        ``tail -n0 -F``) instead of at its beginning.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = pathlib.Path(d, "a.log").write_bytes(b"one\\ntwo\\r\\nthree")
    ...     src = FileTailSource([f"{d}/*.log"], "ssh")
    ...     part = src.build_part("in", src.list_parts()[0], None)
    ...     print([r.text for r in part.next_batch()], part.snapshot().offset)
    ...     print([r.text for r in part.next_batch()], part.snapshot().offset)
    ...     part.close()
    ['one', 'two'] 9
    ['three'] 14
    """

    def __init__(
        self,
        patterns: Sequence[str],
        fmt: str,
        *,
        follow: bool = False,
        max_line_bytes: int = 65536,
        batch_size: int = 2048,
        poll_interval_s: float = 0.25,
        start_at_end: bool = False,
    ) -> None:
        if isinstance(patterns, str):
            msg = f"patterns must be a sequence of paths, not the string {patterns!r}"
            raise TypeError(msg)
        self.patterns = tuple(patterns)
        self.fmt = fmt
        self.follow = follow
        self.max_line_bytes = max_line_bytes
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.start_at_end = start_at_end

    @override
    def list_parts(self) -> list[str]:
        paths: set[str] = set()
        for pattern in self.patterns:
            matched = [p for p in glob.glob(pattern) if os.path.isfile(p)]
            paths.update(matched)
            if self.follow and not glob.has_magic(pattern) and not os.path.exists(pattern):
                paths.add(pattern)  # tail -F of a file that is not there yet
        return sorted(paths)

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: FileState | None
    ) -> _FileTailPartition:
        return _FileTailPartition(
            for_part,
            self.fmt,
            follow=self.follow,
            max_line_bytes=self.max_line_bytes,
            batch_size=self.batch_size,
            poll_interval_s=self.poll_interval_s,
            start_at_end=self.start_at_end,
            resume_state=resume_state,
        )
