"""Receive syslog messages over UDP and TCP; emit each as a :class:`~vigil.records.RawLine`.

The source only frames messages; it does not parse them. ``RawLine.text`` is the message as
received, ``<PRI>`` header included (the parsers understand RFC 3164 and RFC 5424 headers).

There is nothing to resume: a datagram not yet read when the dataflow stops is gone (UDP is
lossy by nature), and a TCP sender cannot be asked to send again. The snapshot is ``None``.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override
from vigil.sources.files import OVERSIZE_PREFIX_CHARS, oversize_line

from vigil.records import RawLine

__all__ = ["SyslogSource", "TcpFramer"]

ORIGIN_UDP = "syslog/udp"
ORIGIN_TCP = "syslog/tcp"

# RFC 6587 octet counting: "MSG-LEN SP SYSLOG-MSG", MSG-LEN = NONZERO-DIGIT *DIGIT.
# Nine digits is far beyond any sane message size; longer digit runs are plain text.
_OCTET_HEADER = re.compile(rb"([1-9][0-9]{0,8}) ")
_MAX_LEN_DIGITS = 9
_DIGITS = frozenset(b"0123456789")
# Enough bytes for the 512-character prefix of an oversize message.
_PREFIX_BYTES = 4 * OVERSIZE_PREFIX_CHARS
_RECV_BYTES = 65536  # a UDP datagram cannot be larger


def _text(msg: bytes | bytearray) -> str:
    """Decode one message and drop its line terminator, if any."""
    t = msg.decode("utf-8", "replace")
    if t.endswith("\n"):
        t = t[:-1]
    if t.endswith("\r"):
        t = t[:-1]
    return t


class TcpFramer:
    """Split one TCP connection's byte stream into syslog messages.

    Each frame is either octet-counted (RFC 6587 section 3.4.1: ``<len> <msg>``, detected
    by a run of digits followed by a space at the start of the frame) or terminated by a
    newline (section 3.4.2). Frames may be split across any number of reads, and the two
    framings may alternate on one connection.

    Parameters
    ----------
    fmt, origin
        Copied into each ``RawLine``.
    max_line_bytes
        A longer message becomes one ``RawLine(oversize=True)`` with its first 512
        characters; the rest of it is skipped, never split into more messages.

    Examples
    --------
    >>> f = TcpFramer("ssh", "syslog/tcp", 100)
    >>> [r.text for r in f.feed(b"<13>plain\\n11 <13>count", 1.0)]
    ['<13>plain']
    >>> [r.text for r in f.feed(b"ed<13>tail", 2.0)]
    ['<13>counted']
    >>> [r.text for r in f.finish(3.0)]
    ['<13>tail']
    """

    def __init__(self, fmt: str, origin: str, max_line_bytes: int) -> None:
        self._fmt = fmt
        self._origin = origin
        self._max = max_line_bytes
        self._buf = bytearray()
        self._skip_count = 0  # bytes left of an oversize octet-counted frame
        self._skip_line = False  # discarding an oversize newline-framed message

    def feed(self, data: bytes, ref_ts: float) -> list[RawLine]:
        """Add received bytes; return the messages they complete.

        Parameters
        ----------
        data
            Bytes just received on the connection.
        ref_ts
            Reception time, for ``RawLine.ref_ts``.
        """
        buf = self._buf
        buf += data
        out: list[RawLine] = []
        while buf:
            if self._skip_count:
                k = min(self._skip_count, len(buf))
                del buf[:k]  # O(1): bytearray deletes at the front without copying
                self._skip_count -= k
                continue
            if self._skip_line:
                nl = buf.find(b"\n")
                if nl < 0:
                    buf.clear()
                    break
                del buf[: nl + 1]
                self._skip_line = False
                continue
            if buf[0] in _DIGITS:
                m = _OCTET_HEADER.match(buf)
                if m is not None:
                    if not self._octet_frame(int(m.group(1)), m.end(), ref_ts, out):
                        break  # frame incomplete: wait for more bytes
                    continue
                n_digits = len(buf) - len(buf.lstrip(b"0123456789"))
                if n_digits == len(buf) and n_digits <= _MAX_LEN_DIGITS:
                    break  # maybe a length whose space has not arrived yet
            if not self._newline_frame(ref_ts, out):
                break
        return out

    def _octet_frame(self, n: int, head: int, ref_ts: float, out: list[RawLine]) -> bool:
        buf = self._buf
        if n > self._max:
            if len(buf) - head < min(n, _PREFIX_BYTES):
                return False
            out.append(oversize_line(self._fmt, self._origin, bytes(buf[head:]), ref_ts))
            del buf[:head]
            self._skip_count = n  # the loop discards the frame, also as it keeps arriving
            return True
        if len(buf) - head < n:
            return False
        out.append(RawLine(self._fmt, self._origin, _text(buf[head : head + n]), ref_ts))
        del buf[: head + n]
        return True

    def _newline_frame(self, ref_ts: float, out: list[RawLine]) -> bool:
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > self._max:
                out.append(oversize_line(self._fmt, self._origin, bytes(buf), ref_ts))
                buf.clear()
                self._skip_line = True
            return False
        if nl > self._max:
            out.append(oversize_line(self._fmt, self._origin, bytes(buf[:nl]), ref_ts))
        else:
            text = _text(buf[:nl])
            if text:  # blank lines carry no message (e.g. a newline after a counted frame)
                out.append(RawLine(self._fmt, self._origin, text, ref_ts))
        del buf[: nl + 1]
        return True

    def finish(self, ref_ts: float) -> list[RawLine]:
        """The connection closed: return its last message if it lacked a newline.

        A truncated octet-counted frame is dropped: it announced a length it did not
        deliver, so it is not a message.

        Parameters
        ----------
        ref_ts
            Reception time, for ``RawLine.ref_ts``.
        """
        buf = self._buf
        rest = b"" if self._skip_count or self._skip_line else bytes(buf)
        buf.clear()
        self._skip_count, self._skip_line = 0, False
        if not rest or _OCTET_HEADER.match(rest):
            return []
        return [RawLine(self._fmt, self._origin, _text(rest), ref_ts)]


def _bind(
    host: str, port: int, *, udp: bool, tcp: bool
) -> tuple[socket.socket | None, socket.socket | None, int]:
    """Bind UDP and TCP sockets on one port number; ``port=0`` picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    attempts = 20 if port == 0 and udp and tcp else 1
    for attempt in range(attempts):
        tsock = usock = None
        try:
            bound = port
            if tcp:
                tsock = socket.socket(family, socket.SOCK_STREAM)
                tsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tsock.bind((host, bound))
                tsock.listen(128)
                tsock.setblocking(False)
                bound = tsock.getsockname()[1]
            if udp:
                usock = socket.socket(family, socket.SOCK_DGRAM)
                # A larger kernel buffer absorbs bursts while the dataflow is busy
                # (the kernel caps it at net.core.rmem_max).
                usock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
                usock.bind((host, bound))
                usock.setblocking(False)
                bound = usock.getsockname()[1]
        except OSError as ex:
            for s in (tsock, usock):
                if s is not None:
                    s.close()
            # The TCP port picked by the kernel may be taken for UDP: pick another one.
            if ex.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                continue
            raise
        return usock, tsock, bound
    msg = "unreachable"  # pragma: no cover
    raise AssertionError(msg)  # pragma: no cover


class _SyslogPartition(StatefulSourcePartition[RawLine, None]):
    """Sockets served by one receiver thread, which feeds a queue drained by next_batch."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        fmt: str,
        udp: bool,
        tcp: bool,
        max_line_bytes: int,
        batch_size: int,
        poll_interval_s: float,
    ) -> None:
        self._fmt = fmt
        self._max = max_line_bytes
        self._batch_size = batch_size
        self._poll = timedelta(seconds=poll_interval_s)
        self._queue: queue.SimpleQueue[RawLine] = queue.SimpleQueue()
        self._next_awake: datetime | None = None
        self._udp, self._tcp, self.port = _bind(host, port, udp=udp, tcp=tcp)
        # The receiver blocks in select(); close() wakes it through this socket pair.
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        if self._udp is not None:
            self._sel.register(self._udp, selectors.EVENT_READ, self._on_udp)
        if self._tcp is not None:
            self._sel.register(self._tcp, selectors.EVENT_READ, self._on_accept)
        self._conns: dict[socket.socket, TcpFramer] = {}
        self._stop = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"syslog:{self.port}", daemon=True)
        self._thread.start()

    # -- receiver thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop:
                for key, _ in self._sel.select():
                    if key.data is None:  # woken up by close()
                        self._stop = True
                        break
                    key.data(key.fileobj)
        finally:
            for conn in list(self._conns):
                self._drop(conn)

    def _on_udp(self, sock: socket.socket) -> None:
        put = self._queue.put
        while True:  # drain every queued datagram per wake-up
            try:
                data = sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP errors reported on the socket: not fatal
                return
            now = time.time()
            if len(data) > self._max:
                put(oversize_line(self._fmt, ORIGIN_UDP, data, now))
            else:
                put(RawLine(self._fmt, ORIGIN_UDP, _text(data), now))

    def _on_accept(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self._conns[conn] = TcpFramer(self._fmt, ORIGIN_TCP, self._max)
        self._sel.register(conn, selectors.EVENT_READ, self._on_conn)

    def _on_conn(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # connection reset: treat as closed
        if not data:
            self._drop(conn)
            return
        for line in self._conns[conn].feed(data, time.time()):
            self._queue.put(line)

    def _drop(self, conn: socket.socket) -> None:
        framer = self._conns.pop(conn)
        for line in framer.finish(time.time()):
            self._queue.put(line)
        self._sel.unregister(conn)
        conn.close()

    # -- bytewax API --------------------------------------------------------------------

    @override
    def next_batch(self) -> list[RawLine]:
        out: list[RawLine] = []
        get = self._queue.get_nowait
        with contextlib.suppress(queue.Empty):
            while len(out) < self._batch_size:
                out.append(get())
        self._next_awake = None if out else datetime.now(UTC) + self._poll
        return out

    @override
    def next_awake(self) -> datetime | None:
        return self._next_awake

    @override
    def snapshot(self) -> None:
        return None

    @override
    def close(self) -> None:
        """Stop the receiver thread and close every socket. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=10)
        for s in (self._udp, self._tcp):
            if s is not None:
                self._sel.unregister(s)
                s.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


class SyslogSource(FixedPartitionedSource[RawLine, None]):
    """Listen for syslog messages on UDP and TCP (one port number for both).

    A single partition named ``"syslog"``, so exactly one worker binds the sockets. A
    background thread receives into a queue, and ``next_batch`` drains it without blocking.

    UDP: one datagram is one message. TCP: any number of concurrent clients; each frame is
    octet-counted (RFC 6587, ``<len> <msg>``) or newline-terminated, detected per frame.
    A trailing newline is removed from each message; otherwise the text is exactly what was
    received, ``<PRI>`` header included. ``ref_ts`` is the reception time, ``origin`` is
    ``"syslog/udp"`` or ``"syslog/tcp"``.

    No resume state: messages sent while the dataflow is down are lost (UDP is lossy by
    nature; a TCP sender reconnects and carries on). The queue is unbounded, so a dataflow
    that falls behind grows in memory rather than dropping messages.

    Parameters
    ----------
    host
        Address to bind (an IPv6 address binds IPv6 sockets).
    port
        Port for both UDP and TCP; ``0`` picks a free one (see ``on_bound``).
    fmt
        Value of ``RawLine.fmt`` for every message.
    udp, tcp
        Which transports to listen on.
    max_line_bytes
        A longer message becomes one ``RawLine(oversize=True)`` with its first 512
        characters.
    batch_size
        Most messages returned by one ``next_batch``.
    poll_interval_s
        How long to wait before looking at the queue again after finding it empty.
    on_bound
        Called with the bound port once the sockets listen (the partition's ``port``
        attribute holds it too). Useful with ``port=0``.

    Examples
    --------
    >>> import socket
    >>> src = SyslogSource(port=0, tcp=False)
    >>> part = src.build_part("in", "syslog", None)
    >>> with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    ...     _ = s.sendto(b"<34>Oct 11 22:14:15 host su: hi\\n", ("127.0.0.1", part.port))
    >>> from bytewax.testing import poll_next_batch
    >>> [(r.origin, r.text) for r in poll_next_batch(part)]
    [('syslog/udp', '<34>Oct 11 22:14:15 host su: hi')]
    >>> part.close()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5514,
        *,
        fmt: str = "ssh",
        udp: bool = True,
        tcp: bool = True,
        max_line_bytes: int = 65536,
        batch_size: int = 1024,
        poll_interval_s: float = 0.05,
        on_bound: Callable[[int], None] | None = None,
    ) -> None:
        if not (udp or tcp):
            msg = "SyslogSource needs udp=True or tcp=True"
            raise ValueError(msg)
        self.host = host
        self.port = port
        self.fmt = fmt
        self.udp = udp
        self.tcp = tcp
        self.max_line_bytes = max_line_bytes
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.on_bound = on_bound

    @override
    def list_parts(self) -> list[str]:
        return ["syslog"]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SyslogPartition:
        part = _SyslogPartition(
            self.host,
            self.port,
            fmt=self.fmt,
            udp=self.udp,
            tcp=self.tcp,
            max_line_bytes=self.max_line_bytes,
            batch_size=self.batch_size,
            poll_interval_s=self.poll_interval_s,
        )
        if self.on_bound is not None:
            self.on_bound(part.port)
        return part
