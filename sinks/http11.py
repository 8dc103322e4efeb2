"""A lean HTTP/1.1 client for POSTs to one plain-``http`` endpoint over kept-alive sockets.

Delivering a burst of notifications, httpx spends about a millisecond of CPU per request
in Python (models, header validation, the pool's bookkeeping); under the GIL that is the
bound of the whole alerting process. This client writes the request in one ``sendall`` and
parses the answer's status line and headers itself: a few tens of microseconds.

It does only what webhook delivery needs, the way httpx does it: ``POST``, no redirects,
one timeout for connecting and for each read or write, connections kept alive (an idle
one that the server closed or wrote to is dropped before reuse, as httpcore does), bodies
by ``Content-Length``, chunked or until close, interim ``1xx`` answers skipped. Errors are
:class:`TimeoutError` (connect, read or write timed out) or :class:`OSError` (refused,
reset, a malformed answer: :class:`ProtocolError`). No TLS, proxies, cookies or
credentials in the URL: :class:`~vigil.sinks.webhook.WebhookClient` uses httpx for those.

Examples
--------
>>> KeepAlivePool.usable("http://127.0.0.1:9/hook", environ={})
True
>>> [KeepAlivePool.usable(u, environ={}) for u in ("https://h/x", "http://u:p@h/x")]
[False, False]
>>> KeepAlivePool.usable("http://h/x", environ={"HTTP_PROXY": "http://proxy:3128"})
False
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Mapping, Sequence

import httpx

_MAX_HEAD = 65536
_MAX_IDLE = 32  # several threads, each with a wave in flight
#: Most requests of one :meth:`KeepAlivePool.post_many` in flight at once.
WAVE = 8


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 as expected (a transport error)."""


class _Conn:
    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def stale(self) -> bool:
        """The server closed an idle connection (or sent something unasked)."""
        if self.buf:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _more(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            msg = "server closed the connection"
            raise ProtocolError(msg)
        return data

    def read_head(self) -> tuple[int, bytes, dict[str, str]]:
        """Status, HTTP version and headers (lower-case names) of the next answer."""
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > _MAX_HEAD:
                msg = "answer head too long"
                raise ProtocolError(msg)
            buf += self._more()
        head, self.buf = buf[:end], buf[end + 4 :]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            msg = "malformed status line"
            raise ProtocolError(msg)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                msg = "malformed header"
                raise ProtocolError(msg)
            key = name.strip().lower().decode("latin-1")
            val = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        return int(parts[1]), parts[0], headers

    def read_exact(self, n: int) -> None:
        """Consume ``n`` body bytes."""
        have = len(self.buf)
        while have < n:
            self.buf += self._more()
            have = len(self.buf)
        self.buf = self.buf[n:]

    def read_line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2 :]
                return line
            if len(self.buf) > _MAX_HEAD:
                msg = "chunk line too long"
                raise ProtocolError(msg)
            self.buf += self._more()

    def read_chunked(self) -> None:
        while True:
            size_text = self.read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as ex:
                msg = "malformed chunk size"
                raise ProtocolError(msg) from ex
            if size == 0:
                while self.read_line():  # trailers, up to the empty line
                    pass
                return
            self.read_exact(size + 2)

    def read_to_close(self) -> None:
        self.buf = b""
        while self.sock.recv(65536):
            pass


class KeepAlivePool:
    """Persistent connections to one ``http://host:port``, shared by threads.

    Parameters
    ----------
    url
        An URL for which :meth:`usable` is true.
    timeout_s
        Connect timeout, and timeout of each read and write.
    """

    def __init__(self, url: str, *, timeout_s: float) -> None:
        parsed = httpx.URL(url)
        self.host = parsed.host
        self.port = parsed.port or 80
        self.timeout_s = timeout_s
        target = parsed.raw_path or b"/"
        self._line = b"POST " + target + b" HTTP/1.1\r\nHost: " + parsed.netloc + b"\r\n"
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self.closed = False

    @staticmethod
    def usable(url: str, *, environ: Mapping[str, str]) -> bool:
        """Whether this client can do what httpx would: plain ``http``, no credentials in
        the URL, and no proxy in the environment (httpx honours ``HTTP_PROXY`` and
        ``ALL_PROXY``)."""
        parsed = httpx.URL(url)
        if parsed.scheme != "http" or not parsed.host or parsed.userinfo:
            return False
        return not any(k.lower() in ("http_proxy", "all_proxy") and v for k, v in environ.items())

    def _checkout(self) -> _Conn:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.stale():
                    return conn
                conn.close()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(sock)

    def _checkin(self, conn: _Conn) -> None:
        with self._lock:
            if not self.closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def post(self, headers: bytes, body: bytes) -> tuple[int, dict[str, str]]:
        """Send one POST (``headers``: ``b"Name: value\\r\\n"`` lines, without
        ``Host`` and ``Content-Length``) and read the whole answer; returns its status and
        headers. Raises :class:`TimeoutError` or :class:`OSError`."""
        out = self.post_many([(headers, body)])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def post_many(
        self, requests: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[int, dict[str, str]] | Exception]:
        """:meth:`post` for several requests at once, each on a connection of its own (up
        to :data:`WAVE` at a time): all are written, then the answers read, so the server
        works on them together and the caller waits once instead of once per request.
        Returns, in order, each one's status and headers or the error it ended with."""
        out: list[tuple[int, dict[str, str]] | Exception] = []
        for start in range(0, len(requests), WAVE):
            sent: list[_Conn | Exception] = []
            for headers, body in requests[start : start + WAVE]:
                try:
                    conn = self._checkout()
                except Exception as ex:
                    sent.append(ex)
                    continue
                try:
                    conn.sock.sendall(
                        b"".join(
                            (self._line, headers, b"Content-Length: %d\r\n\r\n" % len(body), body)
                        )
                    )
                except Exception as ex:
                    conn.close()
                    sent.append(ex)
                    continue
                sent.append(conn)
            for i, c in enumerate(sent):
                if isinstance(c, Exception):
                    out.append(c)
                    continue
                try:
                    out.append(self._answer(c))
                except Exception as ex:
                    c.close()
                    out.append(ex)
                except BaseException:
                    for rest in sent[i:]:
                        if isinstance(rest, _Conn):
                            rest.close()
                    raise
        return out

    def _answer(self, conn: _Conn) -> tuple[int, dict[str, str]]:
        """Read the answer to the request written on ``conn``, then keep or close it."""
        while True:
            status, version, head = conn.read_head()
            if 100 <= status < 200 and status != 101:
                continue  # interim answer (100 Continue): the final one follows
            break
        keep = version != b"HTTP/1.0" and "close" not in head.get("connection", "").lower()
        if status == 101:
            keep = False
        elif "chunked" in head.get("transfer-encoding", "").lower():
            conn.read_chunked()
        elif "content-length" in head:
            text = head["content-length"]
            if not text.isdigit():
                msg = "malformed content-length"
                raise ProtocolError(msg)
            conn.read_exact(int(text))
        elif status not in (204, 304):
            conn.read_to_close()
            keep = False
        if keep:
            self._checkin(conn)
        else:
            conn.close()
        return status, head

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
