"""Shared fixtures that start real servers on loopback ports (no mocks).

Fixtures
--------
free_port
    A callable returning a currently free TCP port on 127.0.0.1 (also importable as the
    module-level function :func:`free_port`).
http_receiver
    A real threaded HTTP server recording every request, with scripted replies, a "down"
    mode and de-duplication by ``Idempotency-Key`` (:class:`HttpReceiver`).
redis_server
    Session-scoped ``redis-server`` without persistence (:class:`RedisServer`).
prometheus_server, alertmanager_server
    Factories: call with a config (YAML text, a mapping, or a callable taking the port) to
    start ``prometheus`` / ``prometheus-alertmanager``; every instance is stopped after the
    test (:class:`PrometheusServer`, :class:`AlertmanagerServer`).

A missing server binary skips the test with a message saying what to install, unless the
environment variable ``CI`` is set (to anything but ``""``, ``0``, ``false`` or ``no``):
in CI a missing binary is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

# ---------------------------------------------------------------------------------------
# Ports and binaries


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    The port is released before returning, so another process could take it in between;
    on a test machine that is rare enough.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """The :func:`free_port` function, for tests that cannot import this module."""
    return free_port


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; skip the test if it is missing, or fail when running in CI.

    Parameters
    ----------
    name
        Executable to look up on ``PATH``.
    package
        Debian package that provides it, for the message.
    """
    path = shutil.which(name)
    if path is None:
        msg = f"{name!r} not found on PATH (install the Debian package {package!r})"
        if _in_ci():
            pytest.fail(f"{msg}; CI is set, so a missing server binary is an error")
        pytest.skip(msg)
    return path


# ---------------------------------------------------------------------------------------
# HTTP receiver


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request.

    Parameters
    ----------
    status
        HTTP status code.
    headers
        Extra response headers (e.g. ``{"Retry-After": "1"}``).
    body
        Response body.
    delay_s
        Wait this long before answering (to provoke client timeouts).
    drop
        Close the connection without any response (a transport error for the client).
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it.

    ``headers`` is an ``httpx.Headers``: a case-insensitive ``Mapping[str, str]``.
    ``status`` is what the receiver answered (``None`` if it dropped the connection).
    """

    method: str
    path: str
    headers: httpx.Headers
    body: bytes
    time: float
    status: int | None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on server_close(), so no request outlives the fixture.
    daemon_threads = False
    block_on_close = True
    receiver: HttpReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) makes our late reply fail: expected, not noise.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds; a silent client cannot block teardown for longer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline()
                if not line:
                    msg = "chunked body cut short"
                    raise ConnectionResetError(msg)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    msg = "chunked body cut short"
                    raise ConnectionResetError(msg)
                chunks.append(chunk)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client went away mid-request (a killed worker): a real server never
            # answers, let alone accepts, half a body.
            msg = "body shorter than Content-Length"
            raise ConnectionResetError(msg)
        return body

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        headers = httpx.Headers(list(self.headers.items()))
        reply = self.server.receiver._record(self.command, self.path, headers, body)
        if reply.delay_s:
            self.server.receiver._stopping.wait(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 that records requests and de-duplicates deliveries.

    Every request is answered with the next scripted :class:`Reply` (see :meth:`script`),
    or ``200`` once the script is used up. A ``2xx`` answer *accepts* the body, unless a
    body with the same ``Idempotency-Key`` was accepted before: then it only counts as a
    duplicate (as a receiver following ``vigil.sinks.webhook``'s contract would behave).
    Requests without the header are always accepted.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._accepted: list[bytes] = []
        self._keys: set[str] = set()
        self._duplicates = 0
        self._script: list[Reply] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>/`` (any path is accepted)."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def is_up(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    def up(self) -> None:
        """Listen again (on the same port after :meth:`down`)."""
        if self._server is not None:
            return
        self._stopping.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"http-receiver-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def down(self) -> None:
        """Stop listening and close the socket: connections are refused until :meth:`up`."""
        if self._server is None:
            return
        self._stopping.set()  # wake any delayed reply
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def close(self) -> None:
        """Stop the server for good."""
        self.down()

    # -- behaviour ------------------------------------------------------------------------

    def script(self, replies: Iterable[int | Reply]) -> None:
        """Answer the next requests with these replies, in order (e.g. ``[503, 503, 200]``).

        Replaces any remaining script. Plain ints are statuses with an empty body.
        """
        with self._cond:
            self._script = [r if isinstance(r, Reply) else Reply(status=r) for r in replies]

    def _record(self, method: str, path: str, headers: httpx.Headers, body: bytes) -> Reply:
        with self._cond:
            reply = self._script.pop(0) if self._script else Reply()
            status = None if reply.drop else reply.status
            if status is not None and 200 <= status < 300:
                key = headers.get("idempotency-key")
                if key is None or key not in self._keys:
                    self._accepted.append(body)
                    if key is not None:
                        self._keys.add(key)
                else:
                    self._duplicates += 1
            self._requests.append(ReceivedRequest(method, path, headers, body, time.time(), status))
            self._cond.notify_all()
        return reply

    # -- observations ---------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def accepted(self) -> list[bytes]:
        """Bodies answered ``2xx``, one per distinct ``Idempotency-Key`` (a copy)."""
        with self._cond:
            return list(self._accepted)

    @property
    def duplicates(self) -> int:
        """How many ``2xx`` requests repeated an already accepted ``Idempotency-Key``."""
        with self._cond:
            return self._duplicates

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests arrived; return them.

        Raises
        ------
        AssertionError
            If fewer than ``n`` arrived within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout=timeout):
                msg = f"expected {n} request(s) within {timeout}s, got {len(self._requests)}"
                raise AssertionError(msg)
            return list(self._requests)


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """A fresh :class:`HttpReceiver`, stopped after the test."""
    receiver = HttpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


# ---------------------------------------------------------------------------------------
# Server processes


class ServerProcess:
    """A server binary run as a subprocess on a free loopback port.

    Output goes to ``<workdir>/server.log`` (see :meth:`log_tail`). Subclasses say how to
    build the command line and how to tell that the server is ready.
    """

    name = "server"
    startup_timeout_s = 60.0

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        """The command line."""
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Whether the server answers yet."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id, or ``None`` when stopped."""
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server's output."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def start(self) -> None:
        """Start the process and wait until it is ready (fails the test if it is not)."""
        if self.running:
            return
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                pytest.fail(f"{self.name} exited with {code} at startup:\n{self.log_tail()}")
            if self.is_ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"{self.name} not ready on port {self.port} after "
                    f"{self.startup_timeout_s}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            else:
                proc.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def signal(self, signum: int) -> None:
        """Send a signal to the process (e.g. ``signal.SIGHUP`` to reload config)."""
        if self._proc is not None:
            self._proc.send_signal(signum)


def _http_get_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


class RedisServer(ServerProcess):
    """``redis-server`` with no persistence: a restart starts empty.

    Attributes
    ----------
    url
        ``redis://127.0.0.1:<port>/0``.
    """

    name = "redis-server"
    startup_timeout_s = 20.0

    @property
    def url(self) -> str:
        """Connection URL for database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        """The command line."""
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip

    def command(self, *args: str) -> bytes:
        """Send one command (inline protocol) and return the raw first reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(" ".join(args).encode() + b"\r\n")
            return s.makefile("rb").readline().rstrip(b"\r\n")

    def is_ready(self) -> bool:
        """PING answers PONG."""
        try:
            return self.command("PING") == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        """Delete every key (the server is shared by the whole session)."""
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            msg = f"FLUSHALL failed: {reply!r}"
            raise RuntimeError(msg)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` for the session; call ``.flushall()`` to start clean."""
    binary = require_binary("redis-server", "redis-server")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class AofRedisServer(RedisServer):
    """``redis-server`` with the append-only file on and fsync'ed at every write: a restart
    (:meth:`restart`, or :meth:`stop` then :meth:`start`) brings every key back."""

    def argv(self) -> list[str]:
        """The command line."""
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--dir", str(self.workdir),
        ]  # fmt: skip


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedisServer]:
    """A fresh AOF-backed ``redis-server`` per test (tests restart it)."""
    d = tmp_path / "redis"
    d.mkdir()
    server = AofRedisServer(require_binary("redis-server", "redis-server"), d)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# YAML text, a mapping, or a callable given the port that returns either; None = default.
ConfigArg = str | Mapping[str, Any] | Callable[[int], Any] | None


class _HttpServerProcess(ServerProcess):
    config_name = "config.yml"
    default_config: Mapping[str, Any] = {}

    def __init__(
        self, binary: str, workdir: Path, config: ConfigArg, extra_args: Sequence[str]
    ) -> None:
        super().__init__(binary, workdir)
        self.config_path = workdir / self.config_name
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.extra_args = list(extra_args)
        self.write_config(config)

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, config: ConfigArg) -> None:
        """Write the config file (YAML text, a mapping, or a callable given the port).

        After a change call :meth:`reload` (or :meth:`restart`).
        """
        value: Any = config(self.port) if callable(config) else config
        if value is None:
            value = self.default_config
        text = value if isinstance(value, str) else yaml.safe_dump(dict(value))
        self.config_path.write_text(text)

    def reload(self) -> None:
        """Re-read the config file (SIGHUP)."""
        self.signal(signal.SIGHUP)

    def is_ready(self) -> bool:
        """``GET /-/ready`` answers 200."""
        return _http_get_status(self.port, "/-/ready") == 200


class PrometheusServer(_HttpServerProcess):
    """``prometheus`` with its TSDB in a temporary directory."""

    name = "prometheus"
    config_name = "prometheus.yml"
    default_config: Mapping[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
    }

    def argv(self) -> list[str]:
        """The command line."""
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *self.extra_args,
        ]


class AlertmanagerServer(_HttpServerProcess):
    """``prometheus-alertmanager`` with clustering off and storage in a temporary directory."""

    name = "prometheus-alertmanager"
    config_name = "alertmanager.yml"
    default_config: Mapping[str, Any] = {
        "route": {"receiver": "null"},
        "receivers": [{"name": "null"}],
    }

    def argv(self) -> list[str]:
        """The command line."""
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            *self.extra_args,
        ]


@contextlib.contextmanager
def _factory(
    cls: type[_HttpServerProcess],
    binary: str,
    package: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Any]]:
    path = require_binary(binary, package)  # skip (or fail in CI) before the test runs
    started: list[_HttpServerProcess] = []

    def start(config: ConfigArg = None, *, extra_args: Sequence[str] = ()) -> Any:
        server = cls(path, tmp_path_factory.mktemp(binary), config, extra_args)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def prometheus_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: ``prometheus_server(config=None, *, extra_args=()) -> PrometheusServer``.

    ``config`` is YAML text, a mapping, or a callable receiving the chosen port (for a
    self-scrape job). Each started server is stopped after the test.
    """
    with _factory(PrometheusServer, "prometheus", "prometheus", tmp_path_factory) as start:
        yield start


@pytest.fixture
def alertmanager_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., AlertmanagerServer]]:
    """Factory: ``alertmanager_server(config=None, *, extra_args=()) -> AlertmanagerServer``.

    The default config routes everything to a receiver named ``"null"`` with no
    integrations. Each started server is stopped after the test.
    """
    with _factory(
        AlertmanagerServer, "prometheus-alertmanager", "prometheus-alertmanager", tmp_path_factory
    ) as start:
        yield start


# ---------------------------------------------------------------- feed documents over HTTP
class FeedServer:
    """A real HTTP server on 127.0.0.1 serving feed documents with ETag validation."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self.fail_next = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                if outer.fail_next:
                    outer.fail_next -= 1
                    status, body, ctype = 503, b"busy", "text/plain"
                elif self.path not in outer.docs:
                    status, body, ctype = 404, b"", "text/plain"
                else:
                    body, ctype = outer.docs[self.path]
                    etag = f'"{hash(body) & 0xFFFFFFFF:x}"'
                    status = 304 if hdrs.get("if-none-match") == etag else 200
                outer.requests.append((self.path, hdrs, status))
                self.send_response(status)
                if status in (200, 304) and self.path in outer.docs:
                    self.send_header("ETag", etag)
                if status == 200:
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_header("Content-Length", "0" if status != 503 else str(len(body)))
                    self.end_headers()
                    if status == 503:
                        self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    s = FeedServer()
    try:
        yield s
    finally:
        s.close()
