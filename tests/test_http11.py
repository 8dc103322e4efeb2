"""The lean HTTP/1.1 client (sinks.http11) against a raw-socket server that answers each
request with scripted bytes: every way an answer can be framed, kept-alive connections
the server closed while idle, and malformed answers (transport errors, never a hang)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from vigil.sinks.http11 import KeepAlivePool, ProtocolError
from vigil.sinks.webhook import DeliveryResult, WebhookClient, verify_signature


class RawServer:
    """Accepts connections; answers the n-th request with ``answers[n]`` (bytes), then
    closes the connection if the answer is followed by ``None`` in the script."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection no, head, body)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._conns = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?t=1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns += 1
                n = self._conns
            threading.Thread(target=self._handle, args=(conn, n), daemon=True).start()

    def _handle(self, conn: socket.socket, n: int) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                with self._lock:
                    self.requests.append((n, head, body))
                    answer = self.answers.pop(0) if self.answers else OK
                    close = bool(self.answers) and self.answers[0] is None
                    if close:
                        self.answers.pop(0)
                conn.sendall(answer or b"")
                if close:
                    return

    def close(self) -> None:
        self.sock.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    srv = RawServer(getattr(request, "param", []))
    yield srv
    srv.close()


def post(pool: KeepAlivePool, body: bytes = b"{}") -> int:
    return pool.post(b"Content-Type: application/json\r\n", body)[0]


CHUNKED = b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200),
        (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED, 201),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204),
        (b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok", 202),
    ],
    ids=["content-length", "chunked", "100-continue", "lower-case"],
)
def test_framed_answers_keep_the_connection(server: RawServer, answer: bytes, status: int) -> None:
    server.answers = [answer, answer]
    pool = KeepAlivePool(server.url, timeout_s=2)
    try:
        assert (post(pool), post(pool)) == (status, status)
        assert [n for n, _h, _b in server.requests] == [1, 1]  # one connection, reused
    finally:
        pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_answers_that_end_the_connection_open_a_new_one(server: RawServer, answer: bytes) -> None:
    server.answers = [answer, None, OK]
    pool = KeepAlivePool(server.url, timeout_s=2)
    try:
        assert post(pool) == 200
        assert post(pool) == 200
        assert [n for n, _h, _b in server.requests] == [1, 2]
    finally:
        pool.close()


def test_body_until_close(server: RawServer) -> None:
    server.answers = [b"HTTP/1.1 500 Oops\r\n\r\nsomething broke", None]
    pool = KeepAlivePool(server.url, timeout_s=2)
    try:
        assert post(pool) == 500
        assert post(pool) == 200
        assert [n for n, _h, _b in server.requests] == [1, 2]
    finally:
        pool.close()


def test_a_connection_the_server_closed_while_idle_is_not_reused(server: RawServer) -> None:
    server.answers = [OK, None]  # answered, then closed: the client does not know yet
    with WebhookClient(server.url, secret=b"k", sleep=lambda _s: None, max_attempts=1) as c:
        assert c.post(b"{}", idempotency_key="a").ok
        for _ in range(100):  # wait until the close has reached our socket
            pool = c._pool
            assert pool is not None
            if pool._idle and pool._idle[0].stale():
                break
            threading.Event().wait(0.01)
        assert c.post(b"{}", idempotency_key="b") == DeliveryResult(True, 200, 1, "ok")
    assert [n for n, _h, _b in server.requests] == [1, 2]


@pytest.mark.parametrize(
    "server",
    [[b"garbage\r\n\r\n"], [b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n"], [b"HTTP/1.1 2"]],
    indirect=True,
    ids=["status-line", "content-length", "truncated"],
)
def test_malformed_answers_are_transport_errors(server: RawServer) -> None:
    server.answers.append(None)
    with WebhookClient(server.url, secret=None, sleep=lambda _s: None, max_attempts=1) as c:
        assert c.post(b"{}", idempotency_key="k").reason == "transport_error"
    pool = KeepAlivePool(server.url, timeout_s=2)
    server.answers = [b"HTTP/1.1 200 OK\r\nBad header line\r\n\r\n", None]
    try:
        with pytest.raises(ProtocolError):
            post(pool)
    finally:
        pool.close()


def test_request_is_what_httpx_would_send(server: RawServer) -> None:
    """Same request line, host, body and signed headers from both clients."""
    seen = []
    for lean in (True, False):
        with WebhookClient(server.url, secret=b"k", lean=lean) as c:
            assert c.post(b'{"a": 1}', idempotency_key="id-1").ok
        _n, head, body = server.requests[-1]
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        assert verify_signature(b"k", headers, body)
        keep = ("host", "content-type", "content-length", "idempotency-key", "user-agent")
        seen.append(
            (lines[0], body, {k.lower(): v for k, v in headers.items() if k.lower() in keep})
        )
    assert seen[0] == seen[1]
    assert seen[0][0] == "POST /hook?t=1 HTTP/1.1"


def test_httpx_is_used_where_the_lean_client_cannot_go() -> None:
    for url, env in [
        ("https://hooks.test/x", {}),
        ("http://user:pw@hooks.test/x", {}),
        ("http://hooks.test/x", {"all_proxy": "socks5://p:1080"}),
    ]:
        assert not KeepAlivePool.usable(url, environ=env)
    assert KeepAlivePool.usable("http://hooks.test/x", environ={"NO_PROXY": "*"})
