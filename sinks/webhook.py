"""A signed webhook client with Alertmanager's retry policy.

Vigil POSTs alerts as JSON to an HTTP(S) endpoint. Each request carries these headers:

``Content-Type: application/json``
    The body is a JSON document (for alerts, an Alertmanager webhook v4 payload).
``Idempotency-Key: <key>``
    Stable for one logical delivery: every retry of the same body, and a replay of the
    same batch after a restart, carries the same key. Receivers should accept a key once
    and answer ``2xx`` to repeats without acting on them again.
``X-Vigil-Timestamp: <unix seconds>``
    When this attempt was signed, as an integer number of seconds since the epoch (UTC).
    Only sent when a secret is configured.
``X-Vigil-Signature: v1=<hex>``
    ``hex(HMAC-SHA256(secret, "<timestamp>." + body))``: the timestamp header's value as
    ASCII, a full stop, then the raw request body bytes. Only sent when a secret is
    configured. Every attempt is signed afresh with a new timestamp.

To verify a request, a receiver recomputes the HMAC over the *raw* body (before any JSON
parsing), compares it in constant time, and rejects timestamps too far from its own clock
(this bounds replays). :func:`verify_signature` does all three. The header may list several
comma-separated ``v1=`` values (e.g. while rotating secrets); one match is enough.

Retry policy (as Alertmanager's ``notify.Retrier``): transport errors, timeouts, ``429`` and
``5xx`` are retried with capped exponential backoff and full jitter, up to ``max_attempts``
attempts in all; any other ``4xx`` (and ``1xx``/``3xx``) is final. On ``429`` and ``503`` a
``Retry-After`` header (seconds or an HTTP date) replaces the backoff, capped at
``backoff_max_s``. :meth:`WebhookClient.post` never raises; it returns a
:class:`DeliveryResult` whose ``reason`` is a stable, low-cardinality string that can be a
metric label. Neither the secret nor the URL's path, query or credentials appear in logs,
``repr`` or results.

Examples
--------
A receiver checking a request (here signed by hand at t = 1700000000):

>>> import hashlib, hmac
>>> body = b'{"version": "4", "alerts": []}'
>>> mac = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
>>> headers = {"x-vigil-timestamp": "1700000000", "X-Vigil-Signature": "v1=" + mac}
>>> verify_signature(b"s3cret", headers, body, now=1700000010)
True
>>> verify_signature(b"s3cret", headers, body + b" ", now=1700000010)
False
>>> verify_signature(b"s3cret", headers, body, now=1700000000 + 3600)
False
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import httpx
from vigil.sinks.http11 import KeepAlivePool

__all__ = [
    "REASONS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryResult",
    "WebhookClient",
    "sign",
    "verify_signature",
]

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Vigil-Timestamp"
SIGNATURE_HEADER = "X-Vigil-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SCHEME = "v1"
_USER_AGENT = "vigil-webhook/0.1"
# The lean client sends what httpx sends besides the request's own headers.
_LEAN_HEADERS = f"Accept: */*\r\nConnection: keep-alive\r\nUser-Agent: {_USER_AGENT}\r\n".encode()

#: Every value :attr:`DeliveryResult.reason` can take (a bounded set: safe as a label).
REASONS: tuple[str, ...] = (
    "ok",
    "http_1xx",
    "http_3xx",
    "http_4xx",
    "http_429",
    "http_5xx",
    "timeout",
    "transport_error",
    "closed",
    "internal_error",
)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Outcome of one :meth:`WebhookClient.post`, after all its attempts.

    Parameters
    ----------
    ok
        Whether the receiver answered ``2xx``.
    status
        HTTP status of the last attempt, ``None`` if it got no response.
    attempts
        Number of requests sent (``0`` if the client was already closed).
    reason
        Why the last attempt ended, one of :data:`REASONS`: ``"ok"``, ``"http_4xx"``,
        ``"http_429"``, ``"http_5xx"``, ``"timeout"``, ``"transport_error"`` ...
    """

    ok: bool
    status: int | None
    attempts: int
    reason: str


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Vigil-Signature`` value for ``body`` signed at ``timestamp``.

    Parameters
    ----------
    secret
        Shared secret.
    timestamp
        Unix seconds, as sent in ``X-Vigil-Timestamp``.
    body
        Raw request body.

    Examples
    --------
    >>> sign(b"k", 1, b"{}")
    'v1=...'
    >>> len(sign(b"k", 1, b"{}")) == len("v1=") + 64
    True
    """
    mac = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"{_SCHEME}={mac.hexdigest()}"


def verify_signature(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = 300,
) -> bool:
    """Check a request's ``X-Vigil-Signature`` against its body and timestamp.

    Header names are matched case-insensitively; the digest is compared in constant time;
    a timestamp more than ``tolerance_s`` seconds away from ``now`` (in either direction)
    is rejected, which bounds how long a captured request can be replayed. Malformed or
    missing headers give ``False``; this function does not raise on bad input.

    Parameters
    ----------
    secret
        Shared secret the sender signs with.
    headers
        The request headers (a ``dict``, ``httpx.Headers``, ``email.message.Message`` ...).
    body
        The raw request body, exactly as received.
    now
        Current Unix time; defaults to :func:`time.time`.
    tolerance_s
        Largest accepted distance between ``now`` and the signed timestamp, in seconds.

    Returns
    -------
    bool
        ``True`` when one of the ``v1=`` signatures matches and the timestamp is fresh.
    """
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    ts_text = lowered.get(TIMESTAMP_HEADER.lower(), "").strip()
    sig_text = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not ts_text.isascii() or not ts_text.isdigit() or not sig_text:
        return False
    ts = int(ts_text)
    current = time.time() if now is None else now
    if not math.isfinite(current) or abs(current - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body).encode("ascii")
    matched = False
    for candidate in sig_text.split(","):
        # No early exit: every candidate is compared, so timing says nothing about which
        # one (if any) matched.
        matched |= hmac.compare_digest(expected, candidate.strip().encode("utf-8", "replace"))
    return matched


def status_reason(status: int) -> str:
    """A bounded reason for an HTTP status, safe as a metric label.

    >>> status_reason(204), status_reason(429), status_reason(503)
    ('ok', 'http_429', 'http_5xx')
    """
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "http_429"
    return f"http_{status // 100}xx"


def _safe_target(url: httpx.URL) -> str:
    """The URL without credentials, path or query (webhook paths often embed tokens)."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


class WebhookClient:
    """POST signed JSON bodies to one URL, retrying as Alertmanager does.

    Parameters
    ----------
    url
        Endpoint (``http`` or ``https``). Only its scheme, host and port are ever logged.
    secret
        HMAC-SHA256 key. ``None`` sends no signature headers.
    timeout_s
        Timeout of each attempt (connect, read, write and pool), in seconds.
    max_attempts
        Most requests sent per :meth:`post`, the first one included.
    backoff_base_s, backoff_max_s
        Before attempt ``n + 1`` the client sleeps a uniformly random time in
        ``[0, min(backoff_max_s, backoff_base_s * 2 ** (n - 1))]`` (full jitter), or the
        ``Retry-After`` of a ``429``/``503`` answer capped at ``backoff_max_s``.
    transport
        httpx transport; tests pass ``httpx.MockTransport``.
    lean
        Plain ``http`` URLs without a proxy or credentials (and no ``transport``) are sent
        by :class:`~vigil.sinks.http11.KeepAlivePool`, a lean client on kept-alive sockets
        (a tenth of httpx's CPU per request); ``https``, proxies, credentials and header
        values that are not printable ASCII go through httpx. ``False``: always httpx.
    sleep, now, rng
        Seams for tests: the sleep function, the wall clock (Unix seconds) used for
        timestamps and ``Retry-After`` dates, and the jitter's random source.

    Examples
    --------
    >>> def handler(request):
    ...     return httpx.Response(200)
    >>> with WebhookClient("http://hooks.test/x", secret=b"k",
    ...                    transport=httpx.MockTransport(handler)) as client:
    ...     client.post(b"{}", idempotency_key="abc")
    DeliveryResult(ok=True, status=200, attempts=1, reason='ok')
    """

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lean: bool = True,
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            # Do not echo the URL: it may hold a token.
            msg = f"webhook url must be an absolute http(s) URL, got scheme {parsed.scheme!r}"
            raise ValueError(msg)
        if secret is not None and not secret:
            msg = "webhook secret must be non-empty bytes, or None for unsigned requests"
            raise ValueError(msg)
        if max_attempts < 1:
            msg = f"max_attempts must be >= 1, got {max_attempts!r}"
            raise ValueError(msg)
        if backoff_base_s < 0 or backoff_max_s < 0:
            msg = f"backoff must be >= 0, got {backoff_base_s!r} and {backoff_max_s!r}"
            raise ValueError(msg)
        self.url = url
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._url = parsed
        self._secret = secret
        self._sleep = sleep
        self._now = now
        self._rng = rng if rng is not None else random.Random()
        self._target = _safe_target(parsed)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT},
        )
        self._pool = (
            KeepAlivePool(url, timeout_s=timeout_s)
            if lean and transport is None and KeepAlivePool.usable(url, environ=os.environ)
            else None
        )

    def __repr__(self) -> str:
        signed = "signed" if self._secret is not None else "unsigned"
        return f"WebhookClient({self._target!r}, {signed}, max_attempts={self.max_attempts})"

    def __enter__(self) -> WebhookClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def target(self) -> str:
        """The endpoint's ``scheme://host:port``, safe to log."""
        return self._target

    def close(self) -> None:
        """Release pooled connections. Later :meth:`post` calls return reason ``"closed"``."""
        self._client.close()
        if self._pool is not None:
            self._pool.close()

    def _headers(self, body: bytes, idempotency_key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: idempotency_key}
        if self._secret is not None:
            ts = int(self._now())
            headers[TIMESTAMP_HEADER] = str(ts)
            headers[SIGNATURE_HEADER] = sign(self._secret, ts, body)
        return headers

    def _send(self, body: bytes, idempotency_key: str) -> tuple[int, str | None]:
        """One attempt: the status and ``Retry-After`` of the answer. Raises httpx's
        errors, or :class:`TimeoutError` / :class:`OSError` from the lean client."""
        if self._pool is None or not _lean_key(idempotency_key):
            headers = self._headers(body, idempotency_key)
            response = self._client.post(self._url, content=body, headers=headers)
            return response.status_code, response.headers.get("retry-after")
        status, head = self._pool.post(self._lean_headers(body, idempotency_key), body)
        return status, head.get("retry-after")

    def _lean_headers(self, body: bytes, idempotency_key: str) -> bytes:
        lines = [_LEAN_HEADERS]
        lines.extend(
            f"{k}: {v}\r\n".encode("ascii") for k, v in self._headers(body, idempotency_key).items()
        )
        return b"".join(lines)

    def _outcome(
        self, sent: tuple[int, str | None] | Exception
    ) -> tuple[int | None, str, bool, float | None]:
        """Status, reason, whether to retry and the server's wait, of one attempt's answer
        (status and ``Retry-After``) or error."""
        if isinstance(sent, httpx.TimeoutException | TimeoutError):
            return None, "timeout", True, None
        if isinstance(sent, httpx.TransportError | OSError):
            return None, "transport_error", True, None
        if isinstance(sent, Exception):  # never raise out of post(): log the type only
            log.warning("webhook %s: unexpected %s", self._target, type(sent).__name__)
            return None, "internal_error", False, None
        status, retry_after = sent
        if 200 <= status < 300:
            return status, "ok", False, None
        wait = self._retry_after(retry_after) if status in (429, 503) else None
        return status, status_reason(status), status == 429 or 500 <= status < 600, wait

    def _failed(self, attempt: int, reason: str, status: int | None) -> DeliveryResult:
        log.warning(
            "webhook %s: delivery failed after %d attempt(s): %s (status %s)",
            self._target,
            attempt,
            reason,
            status,
        )
        return DeliveryResult(ok=False, status=status, attempts=attempt, reason=reason)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""
        # min() before the power would overflow for absurd attempt counts.
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt - 1, 64))
        return self._rng.random() * ceiling

    def _retry_after(self, value: str | None) -> float | None:
        """Seconds to wait from a ``Retry-After`` header, or ``None`` if absent/invalid."""
        if value is None:
            return None
        value = value.strip()
        if value.isascii() and value.isdigit():
            return float(int(value))
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - self._now())

    def post(self, body: bytes, *, idempotency_key: str) -> DeliveryResult:
        """Deliver ``body``, retrying per the module's policy. Never raises.

        Parameters
        ----------
        body
            JSON bytes, sent as-is and signed as-is.
        idempotency_key
            Sent unchanged with every attempt, so the receiver can drop repeats.

        Returns
        -------
        DeliveryResult
            ``ok`` with the final status, the number of attempts and a stable reason.
        """
        if self._client.is_closed:
            return DeliveryResult(ok=False, status=None, attempts=0, reason="closed")
        status: int | None = None
        reason = "internal_error"
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            try:
                sent: tuple[int, str | None] | Exception = self._send(body, idempotency_key)
            except Exception as ex:
                sent = ex
            status, reason, retryable, wait = self._outcome(sent)
            if reason == "ok":
                return DeliveryResult(ok=True, status=status, attempts=attempt, reason="ok")
            if not retryable or attempt >= self.max_attempts:
                break
            delay = self._backoff(attempt) if wait is None else min(wait, self.backoff_max_s)
            log.debug(
                "webhook %s: attempt %d failed (%s), retrying in %.2fs",
                self._target,
                attempt,
                reason,
                delay,
            )
            self._sleep(delay)
        return self._failed(attempt, reason, status)

    def post_many(self, requests: Sequence[tuple[bytes, str]]) -> list[DeliveryResult]:
        """:meth:`post` for several (body, idempotency key) pairs, in order. With one
        attempt per post and the lean client they are sent together, each on a kept-alive
        connection of its own (see :meth:`~vigil.sinks.http11.KeepAlivePool.post_many`);
        the outcome of each is what :meth:`post` would have returned."""
        pool = self._pool
        if (
            pool is None
            or self.max_attempts != 1
            or len(requests) < 2
            or self._client.is_closed
            or not all(_lean_key(k) for _b, k in requests)
        ):
            return [self.post(body, idempotency_key=key) for body, key in requests]
        out = []
        for answer in pool.post_many([(self._lean_headers(b, k), b) for b, k in requests]):
            sent = (
                answer
                if isinstance(answer, Exception)
                else (answer[0], answer[1].get("retry-after"))
            )
            status, reason, _retryable, _wait = self._outcome(sent)
            out.append(
                DeliveryResult(ok=True, status=status, attempts=1, reason="ok")
                if reason == "ok"
                else self._failed(1, reason, status)
            )
        return out


def _lean_key(key: str) -> bool:
    """Whether the lean client may send ``key`` as a header value as is (httpx would
    reject or encode anything else its own way)."""
    return key.isascii() and key.isprintable()
