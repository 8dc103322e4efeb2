"""Tests for sinks.webhook: retry policy (MockTransport), signing (real HTTP receiver)."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from conftest import HttpReceiver, Reply
from hypothesis import given
from hypothesis import strategies as st
from vigil.sinks.webhook import (
    REASONS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryResult,
    WebhookClient,
    sign,
    verify_signature,
)

SECRET = b"correct horse battery staple"
T0 = 1_700_000_000.0


class MaxJitter(random.Random):
    """Jitter source that always draws the top of the range, so delays equal their caps."""

    def random(self) -> float:
        return 1.0


@dataclass
class Clock:
    """A wall clock that advances by ``step`` seconds on every read."""

    t: float = T0
    step: float = 0.0

    def __call__(self) -> float:
        value = self.t
        self.t += self.step
        return value


@dataclass
class Script:
    """MockTransport handler answering from a list of steps, recording every request.

    A step is a status, ``(status, headers)``, or an exception class to raise.
    """

    steps: list[Any]
    seen: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        step = self.steps.pop(0) if self.steps else 200
        if isinstance(step, type) and issubclass(step, Exception):
            msg = "scripted failure"
            if issubclass(step, httpx.RequestError):
                raise step(msg, request=request)
            raise step(msg)
        status, headers = step if isinstance(step, tuple) else (step, {})
        return httpx.Response(status, headers=headers)


def make_client(
    handler: Callable[[httpx.Request], httpx.Response],
    delays: list[float],
    **kwargs: Any,
) -> WebhookClient:
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("rng", MaxJitter())
    kwargs.setdefault("now", Clock())
    return WebhookClient(
        "https://hooks.example.test/alerts",
        transport=httpx.MockTransport(handler),
        sleep=delays.append,
        **kwargs,
    )


HTTP_DATE_IN_12S = email.utils.formatdate(T0 + 12, usegmt=True)

# (id, steps, expected result, expected sleeps). backoff_base_s=0.5, backoff_max_s=30,
# max_attempts=5 and jitter pinned to its maximum, so the n-th sleep is 0.5 * 2**(n-1).
RETRY_CASES = [
    # 503 then 200: delivered on the 2nd attempt after one backoff.
    ("503_then_200", [503, 200], DeliveryResult(True, 200, 2, "ok"), [0.5]),
    # 400: the receiver rejected the request; retrying cannot help (never retry 4xx).
    ("400_no_retry", [400], DeliveryResult(False, 400, 1, "http_4xx"), []),
    # 401/404 are 4xx too: final on the first attempt.
    ("401_no_retry", [401], DeliveryResult(False, 401, 1, "http_4xx"), []),
    ("404_no_retry", [404], DeliveryResult(False, 404, 1, "http_4xx"), []),
    # A redirect is not followed and not retried (a moved endpoint is a config error).
    ("301_no_retry", [301], DeliveryResult(False, 301, 1, "http_3xx"), []),
    # 429 is the one retried 4xx; its Retry-After (seconds) replaces the backoff.
    (
        "429_retry_after_seconds",
        [(429, {"Retry-After": "7"}), 200],
        DeliveryResult(True, 200, 2, "ok"),
        [7.0],
    ),
    # 503 with Retry-After as an HTTP date, 12 s after the injected clock.
    (
        "503_retry_after_http_date",
        [(503, {"Retry-After": HTTP_DATE_IN_12S}), 200],
        DeliveryResult(True, 200, 2, "ok"),
        [12.0],
    ),
    # Retry-After beyond backoff_max_s is capped at backoff_max_s (30).
    (
        "429_retry_after_capped",
        [(429, {"Retry-After": "3600"}), 200],
        DeliveryResult(True, 200, 2, "ok"),
        [30.0],
    ),
    # An unparsable Retry-After falls back to the jittered backoff.
    (
        "429_retry_after_garbage",
        [(429, {"Retry-After": "soon"}), 200],
        DeliveryResult(True, 200, 2, "ok"),
        [0.5],
    ),
    # Retry-After on a 500 is not honoured (only 429/503 define it): normal backoff.
    (
        "500_ignores_retry_after",
        [(500, {"Retry-After": "9"}), 200],
        DeliveryResult(True, 200, 2, "ok"),
        [0.5],
    ),
    # Connection refused/reset is a transport error: retried.
    (
        "transport_error_retried",
        [httpx.ConnectError, 200],
        DeliveryResult(True, 200, 2, "ok"),
        [0.5],
    ),
    # A timeout is retried too.
    (
        "timeout_retried",
        [httpx.ReadTimeout, httpx.ConnectTimeout, 200],
        DeliveryResult(True, 200, 3, "ok"),
        [0.5, 1.0],
    ),
    # Budget exhausted on 5xx: 5 attempts, 4 growing sleeps, the last status and reason.
    (
        "budget_exhausted_5xx",
        [500, 502, 503, 504, 500],
        DeliveryResult(False, 500, 5, "http_5xx"),
        [0.5, 1.0, 2.0, 4.0],
    ),
    # Budget exhausted on 429: reason says the receiver was throttling us.
    (
        "budget_exhausted_429",
        [429] * 5,
        DeliveryResult(False, 429, 5, "http_429"),
        [0.5, 1.0, 2.0, 4.0],
    ),
    # Budget exhausted on timeouts: no status, reason "timeout".
    (
        "budget_exhausted_timeout",
        [httpx.ReadTimeout] * 5,
        DeliveryResult(False, None, 5, "timeout"),
        [0.5, 1.0, 2.0, 4.0],
    ),
    # Budget exhausted on transport errors.
    (
        "budget_exhausted_transport",
        [httpx.ConnectError] * 5,
        DeliveryResult(False, None, 5, "transport_error"),
        [0.5, 1.0, 2.0, 4.0],
    ),
    # Retries then a 4xx: stop at once on the 4xx.
    ("5xx_then_4xx", [503, 422], DeliveryResult(False, 422, 2, "http_4xx"), [0.5]),
    # A bug below httpx (not a transport error) is not retried and does not escape.
    ("unexpected_exception", [RuntimeError], DeliveryResult(False, None, 1, "internal_error"), []),
]


@pytest.mark.parametrize(
    ("steps", "expected", "sleeps"),
    [pytest.param(s, e, d, id=i) for i, s, e, d in RETRY_CASES],
)
def test_retry_policy(steps: list[Any], expected: DeliveryResult, sleeps: list[float]) -> None:
    delays: list[float] = []
    script = Script(list(steps))
    with make_client(script, delays) as client:
        result = client.post(b"{}", idempotency_key="k")
    assert result == expected
    assert result.reason in REASONS
    assert delays == pytest.approx(sleeps)
    assert len(script.seen) == expected.attempts


def test_backoff_grows_then_is_capped() -> None:
    delays: list[float] = []
    with make_client(
        Script([503] * 8), delays, max_attempts=8, backoff_base_s=0.5, backoff_max_s=4.0
    ) as client:
        result = client.post(b"{}", idempotency_key="k")
    assert result == DeliveryResult(False, 503, 8, "http_5xx")
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    delays: list[float] = []
    with make_client(
        Script([503] * 10),
        delays,
        max_attempts=10,
        backoff_base_s=1.0,
        backoff_max_s=20.0,
        rng=random.Random(7),
    ) as client:
        client.post(b"{}", idempotency_key="k")
    caps = [min(20.0, 2.0**n) for n in range(9)]
    assert len(delays) == 9
    assert all(0.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule


def test_same_seed_same_delays() -> None:
    def run() -> list[float]:
        delays: list[float] = []
        with make_client(Script([503] * 5), delays, rng=random.Random(3)) as client:
            client.post(b"{}", idempotency_key="k")
        return delays

    assert run() == run()


def test_headers_and_fresh_signature_on_every_attempt() -> None:
    delays: list[float] = []
    script = Script([503, 503, 200])
    clock = Clock(step=5.0)
    body = b'{"alerts": []}'
    with make_client(script, delays, now=clock) as client:
        assert client.post(body, idempotency_key="batch-1").ok
    stamps = []
    for request in script.seen:
        assert request.method == "POST"
        assert request.content == body
        assert request.headers["content-type"] == "application/json"
        assert request.headers["idempotency-key"] == "batch-1"
        ts = int(request.headers[TIMESTAMP_HEADER])
        stamps.append(ts)
        assert request.headers[SIGNATURE_HEADER] == sign(SECRET, ts, body)
        assert verify_signature(SECRET, request.headers, body, now=ts)
    assert len(set(stamps)) == 3  # re-signed with a fresh timestamp each time


def test_unsigned_when_secret_is_none() -> None:
    script = Script([200])
    with make_client(script, [], secret=None) as client:
        assert client.post(b"{}", idempotency_key="k").ok
    (request,) = script.seen
    assert TIMESTAMP_HEADER not in request.headers
    assert SIGNATURE_HEADER not in request.headers
    assert request.headers["idempotency-key"] == "k"


def test_post_after_close_does_not_raise() -> None:
    client = make_client(Script([200]), [])
    client.close()
    assert client.post(b"{}", idempotency_key="k") == DeliveryResult(False, None, 0, "closed")


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("ftp://example.test/x", {}),  # not http(s)
        ("/relative/path", {}),  # no host
        ("http://example.test/", {"secret": b""}),  # empty secret: a config mistake
        ("http://example.test/", {"max_attempts": 0}),
        ("http://example.test/", {"backoff_base_s": -1.0}),
    ],
)
def test_constructor_rejects_bad_settings(url: str, kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("secret", SECRET)
    with pytest.raises(ValueError) as info:
        WebhookClient(url, **kwargs)
    assert "example.test" not in str(info.value)


def test_secret_and_url_token_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = "https://user:hunter2@hooks.example.test/T0KEN-path?sig=query-token"
    caplog.set_level(logging.DEBUG, logger="vigil.sinks.webhook")

    def refuse(request: httpx.Request) -> httpx.Response:
        msg = "connection refused"
        raise httpx.ConnectError(msg, request=request)

    with WebhookClient(
        url, secret=SECRET, transport=httpx.MockTransport(refuse), sleep=lambda _s: None
    ) as client:
        result = client.post(b"{}", idempotency_key="k")
        text = caplog.text + repr(client) + repr(result)
    assert result.reason == "transport_error"
    assert "hooks.example.test" in caplog.text  # the host is logged, so failures are traceable
    for secret in (SECRET.decode(), "hunter2", "T0KEN", "query-token", "user:"):
        assert secret not in text


# -- against the real HTTP receiver ---------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["lean", "httpx"])
def lean(request: pytest.FixtureRequest) -> bool:
    """Each real-receiver case runs with the lean HTTP/1.1 client and with httpx."""
    return bool(request.param)


@pytest.fixture
def real_client(http_receiver: HttpReceiver, lean: bool) -> Iterator[WebhookClient]:
    with WebhookClient(
        http_receiver.url, secret=SECRET, sleep=lambda _s: None, lean=lean
    ) as client:
        yield client


def test_verify_signature_accepts_what_post_sends(
    http_receiver: HttpReceiver, real_client: WebhookClient
) -> None:
    body = b'{"version": "4", "alerts": [{"labels": {"alertname": "x"}}]}'
    assert real_client.post(body, idempotency_key="k1").ok
    (request,) = http_receiver.wait_for(1)
    assert request.body == body
    assert verify_signature(SECRET, request.headers, request.body)
    # Header names in any case.
    lower = {k.lower(): v for k, v in request.headers.items()}
    upper = {k.upper(): v for k, v in request.headers.items()}
    assert verify_signature(SECRET, lower, request.body)
    assert verify_signature(SECRET, upper, request.body)


def test_verify_signature_rejects_tampering_wrong_secret_and_stale(
    http_receiver: HttpReceiver, real_client: WebhookClient
) -> None:
    body = b'{"alerts": []}'
    assert real_client.post(body, idempotency_key="k1").ok
    (request,) = http_receiver.wait_for(1)
    ts = int(request.headers[TIMESTAMP_HEADER])
    assert verify_signature(SECRET, request.headers, body, now=ts + 300)
    # Tampered body.
    assert not verify_signature(SECRET, request.headers, b'{"alerts": [1]}', now=ts)
    # Wrong secret.
    assert not verify_signature(b"not the secret", request.headers, body, now=ts)
    # Stale (replayed later) and from the future, outside the 300 s window.
    assert not verify_signature(SECRET, request.headers, body, now=ts + 301)
    assert not verify_signature(SECRET, request.headers, body, now=ts - 301)
    assert verify_signature(SECRET, request.headers, body, now=ts + 1000, tolerance_s=1000)
    # Timestamp header changed to look fresh: the signature no longer matches.
    forged = dict(request.headers) | {TIMESTAMP_HEADER: str(ts + 600)}
    assert not verify_signature(SECRET, forged, body, now=ts + 600)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {TIMESTAMP_HEADER: str(int(T0))},
        {SIGNATURE_HEADER: sign(SECRET, int(T0), b"{}")},
        {TIMESTAMP_HEADER: "not-a-number", SIGNATURE_HEADER: sign(SECRET, int(T0), b"{}")},
        {TIMESTAMP_HEADER: str(int(T0)), SIGNATURE_HEADER: "v0=" + "0" * 64},
        {TIMESTAMP_HEADER: str(int(T0)), SIGNATURE_HEADER: "garbage"},
        {TIMESTAMP_HEADER: str(int(T0)), SIGNATURE_HEADER: "v1=ÿ"},
    ],
)
def test_verify_signature_rejects_malformed_headers(headers: dict[str, str]) -> None:
    assert verify_signature(SECRET, headers, b"{}", now=T0) is False


def test_verify_signature_accepts_any_of_several_signatures() -> None:
    # During secret rotation a sender may list one signature per secret.
    ts = int(T0)
    both = f"{sign(b'old', ts, b'{}')},{sign(SECRET, ts, b'{}')}"
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: both}
    assert verify_signature(SECRET, headers, b"{}", now=T0)
    assert not verify_signature(b"third", headers, b"{}", now=T0)


@given(secret=st.binary(min_size=1, max_size=64), body=st.binary(max_size=512))
def test_sign_matches_reference_hmac_and_round_trips(secret: bytes, body: bytes) -> None:
    ts = int(T0)
    expected = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(secret, ts, body) == f"v1={expected}"
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}
    assert verify_signature(secret, headers, body, now=T0)
    assert not verify_signature(secret, headers, body + b"\x00", now=T0)


def test_real_receiver_503_twice_then_200(http_receiver: HttpReceiver, lean: bool) -> None:
    http_receiver.script([503, 503, 200])
    delays: list[float] = []
    with WebhookClient(http_receiver.url, secret=SECRET, sleep=delays.append, lean=lean) as client:
        result = client.post(b'{"n": 1}', idempotency_key="once")
    assert result == DeliveryResult(True, 200, 3, "ok")
    assert [r.status for r in http_receiver.requests] == [503, 503, 200]
    assert http_receiver.accepted == [b'{"n": 1}']
    assert len(delays) == 2


def test_real_receiver_retry_after_is_honoured(http_receiver: HttpReceiver, lean: bool) -> None:
    http_receiver.script([Reply(429, {"Retry-After": "2"}), 200])
    delays: list[float] = []
    with WebhookClient(http_receiver.url, secret=None, sleep=delays.append, lean=lean) as client:
        assert client.post(b"{}", idempotency_key="k").ok
    assert delays == [2.0]


def test_real_receiver_timeout(http_receiver: HttpReceiver, lean: bool) -> None:
    http_receiver.script([Reply(200, delay_s=2.0)])
    with WebhookClient(
        http_receiver.url,
        secret=SECRET,
        timeout_s=0.2,
        max_attempts=2,
        sleep=lambda _s: None,
        lean=lean,
    ) as client:
        result = client.post(b"{}", idempotency_key="k")
    # The first attempt timed out; the second (unscripted) one succeeded.
    assert result == DeliveryResult(True, 200, 2, "ok")


def test_real_receiver_dropped_connection_is_a_transport_error(
    http_receiver: HttpReceiver, lean: bool
) -> None:
    http_receiver.script([Reply(drop=True)] * 2)
    with WebhookClient(
        http_receiver.url, secret=SECRET, max_attempts=2, sleep=lambda _s: None, lean=lean
    ) as client:
        result = client.post(b"{}", idempotency_key="k")
    assert result == DeliveryResult(False, None, 2, "transport_error")


def test_real_receiver_down(http_receiver: HttpReceiver, lean: bool) -> None:
    http_receiver.down()
    with WebhookClient(
        http_receiver.url, secret=SECRET, max_attempts=3, sleep=lambda _s: None, lean=lean
    ) as client:
        result = client.post(b"{}", idempotency_key="k")
    assert result == DeliveryResult(False, None, 3, "transport_error")
