"""Poll HTTP endpoints on an interval: conditional GET, per-endpoint backoff, de-duplication.

:class:`PollPartition` is the shared machinery of :class:`HTTPJSONSource` (here) and
:class:`vigil.sources.rss.RSSSource`. It never blocks the worker: a request runs on a helper
thread, ``next_batch`` returns ``[]`` until it is done, and ``next_awake`` says when to look
again (the next poll, or shortly while a request is in flight).

- Conditional GET: the ``ETag`` and ``Last-Modified`` of the last ``200`` are sent back as
  ``If-None-Match`` and ``If-Modified-Since``; a ``304`` costs nothing.
- Backoff: after a transport error or an error status the next poll waits
  ``interval_s * 2**failures`` (capped at ``max_backoff_s``, +-20 % jitter), or the
  server's ``Retry-After`` if that is longer. A success resets it.
- De-duplication: an item's key is its id, else its link, else a hash of its content;
  the keys of the last ``max_seen`` items are remembered (and snapshotted, so a restart does
  not re-emit a feed's whole history).

Items are plain dicts (no domain meaning is given to them here). A response that cannot be
decoded becomes one dict ``{"_dead": reason, "origin": url, "payload": ...}``, which the flow
turns into a dead letter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

__all__ = ["HTTPJSONSource", "PollPartition", "PollState", "Response", "default_client"]

log = logging.getLogger(__name__)

USER_AGENT = "Vigil/0.1 (media monitor; +https://github.com/)"
_IN_FLIGHT_POLL_S = 0.05


def default_client(timeout_s: float) -> httpx.Client:
    """The HTTP client of a poller: redirects followed, a clear User-Agent."""
    return httpx.Client(
        timeout=timeout_s, follow_redirects=True, headers={"User-Agent": USER_AGENT}
    )


@dataclass(frozen=True, slots=True)
class Response:
    """What a poll got: a status and body, or a transport error (``error`` set)."""

    status: int = 0
    headers: Mapping[str, str] | None = None
    body: bytes = b""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PollState:
    """A poller's resume state: validators, seen keys, failures and next poll time."""

    etag: str | None = None
    modified: str | None = None
    seen: tuple[str, ...] = ()
    failures: int = 0
    next_poll: float = 0.0
    polls: int = 0


def item_key(item: Mapping[str, Any], id_fields: tuple[str, ...] = ("id", "url")) -> str:
    """De-duplication key: the first non-empty of ``id_fields``, else a content hash.

    >>> item_key({"id": "", "url": "https://x/1"}), item_key({"id": 7})
    ('https://x/1', '7')
    """
    for f in id_fields:
        v = item.get(f)
        if v not in (None, ""):
            return str(v)
    blob = json.dumps(item, sort_keys=True, default=str).encode()
    return "sha1:" + hashlib.sha1(blob, usedforsecurity=False).hexdigest()


Decoder = Callable[[bytes, Mapping[str, str], str], list[dict[str, Any]]]


class PollPartition(StatefulSourcePartition[dict[str, Any], PollState]):
    """Polls one URL; emits the new items of each successful response.

    Parameters
    ----------
    url
        What to poll.
    name
        The input's name, copied into each item as ``source``.
    decode
        ``(body, headers, url) -> items``; raises ``ValueError`` on an undecodable body.
    interval_s, max_backoff_s
        Poll period, and the longest wait after failures.
    max_polls
        Stop (end of input) after this many polls; ``None`` polls forever.
    resume
        State from a snapshot, or ``None``.
    client
        The HTTP client (owned: closed in :meth:`close`).
    id_fields
        Item fields tried, in order, as the de-duplication key.
    max_seen
        Keys remembered for de-duplication.
    now
        Wall clock (injected for tests).
    """

    def __init__(
        self,
        url: str,
        name: str,
        decode: Decoder,
        *,
        interval_s: float,
        max_backoff_s: float,
        max_polls: int | None,
        resume: PollState | None,
        client: httpx.Client,
        id_fields: tuple[str, ...] = ("id", "url"),
        max_seen: int = 5000,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.name = name
        self._decode = decode
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.max_polls = max_polls
        self._client = client
        self._id_fields = id_fields
        self._max_seen = max_seen
        self._now = now
        st = resume or PollState()
        self._etag, self._modified = st.etag, st.modified
        self._seen: OrderedDict[str, None] = OrderedDict.fromkeys(st.seen)
        self._failures = st.failures
        self._next_poll = st.next_poll
        self._polls = st.polls
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vigil-poll")
        self._future: Future[Response] | None = None
        self._rng = random.Random(url)  # jitter, reproducible per URL

    # ------------------------------------------------------------------ bytewax
    @override
    def next_batch(self) -> list[dict[str, Any]]:
        fut = self._future
        if fut is not None:
            if not fut.done():
                return []
            self._future = None
            return self._handle(fut.result(), self._now())
        if self.max_polls is not None and self._polls >= self.max_polls:
            raise StopIteration
        if self._now() >= self._next_poll:
            self._polls += 1
            self._future = self._pool.submit(self._fetch)
        return []

    @override
    def next_awake(self) -> datetime | None:
        if self._future is not None or (
            self.max_polls is not None and self._polls >= self.max_polls
        ):
            return datetime.now(UTC) + timedelta(seconds=_IN_FLIGHT_POLL_S)
        return datetime.fromtimestamp(self._next_poll, UTC)

    @override
    def snapshot(self) -> PollState:
        return PollState(
            self._etag,
            self._modified,
            tuple(self._seen),
            self._failures,
            self._next_poll,
            self._polls,
        )

    @override
    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # ------------------------------------------------------------------ polling
    def _fetch(self) -> Response:
        headers = {}
        if self._etag:
            headers["If-None-Match"] = self._etag
        if self._modified:
            headers["If-Modified-Since"] = self._modified
        try:
            r = self._client.get(self.url, headers=headers)
        except httpx.HTTPError as ex:
            return Response(error=type(ex).__name__)
        return Response(r.status_code, dict(r.headers), r.content)

    def _backoff(self, now: float, retry_after: str | None) -> None:
        self._failures += 1
        wait = min(self.max_backoff_s, self.interval_s * 2**self._failures)
        wait *= self._rng.uniform(0.8, 1.2)
        if retry_after and retry_after.strip().isdigit():
            wait = max(wait, min(float(retry_after), self.max_backoff_s))
        self._next_poll = now + wait

    def _handle(self, r: Response, now: float) -> list[dict[str, Any]]:
        if r.error is not None or r.status >= 400 or r.status == 0:
            self._backoff(now, (r.headers or {}).get("retry-after"))
            log.warning(
                "poll failed",
                extra={
                    "url": self.url,
                    "reason": r.error or f"HTTP {r.status}",
                    "failures": self._failures,
                    "retry_in_s": round(self._next_poll - now, 1),
                },
            )
            return []
        self._failures = 0
        self._next_poll = now + self.interval_s
        if r.status == 304:
            return []
        hdrs = {k.lower(): v for k, v in (r.headers or {}).items()}
        self._etag = hdrs.get("etag", self._etag)
        self._modified = hdrs.get("last-modified", self._modified)
        try:
            items = self._decode(r.body, hdrs, self.url)
        except ValueError as ex:
            return [
                {
                    "_dead": f"undecodable response: {type(ex).__name__}",
                    "origin": self.url,
                    "payload": r.body[:512].decode("utf-8", "replace"),
                }
            ]
        out = []
        for it in items:
            key = item_key(it, self._id_fields)
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > self._max_seen:
                self._seen.popitem(last=False)
            it.setdefault("source", self.name)
            it["origin"] = self.url
            out.append(it)
        return out


class _PollSource(FixedPartitionedSource[dict[str, Any], PollState]):
    """One partition per URL (so each URL keeps its own validators and backoff)."""

    def __init__(
        self,
        urls: tuple[str, ...],
        name: str,
        *,
        interval_s: float,
        timeout_s: float,
        max_backoff_s: float,
        max_polls: int | None,
        client_factory: Callable[[float], httpx.Client] | None,
    ) -> None:
        self.urls = urls
        self.name = name
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.max_polls = max_polls
        self.client_factory = client_factory or default_client

    def _decode(self, body: bytes, headers: Mapping[str, str], url: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    _id_fields: tuple[str, ...] = ("id", "url")

    @override
    def list_parts(self) -> list[str]:
        return list(self.urls)

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: PollState | None
    ) -> PollPartition:
        return PollPartition(
            for_part,
            self.name,
            self._decode,
            interval_s=self.interval_s,
            max_backoff_s=self.max_backoff_s,
            max_polls=self.max_polls,
            resume=resume_state,
            client=self.client_factory(self.timeout_s),
            id_fields=self._id_fields,
        )


def _walk(doc: Any, path: str | None) -> Any:
    if not path:
        return doc
    for part in path.split("."):
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


class HTTPJSONSource(_PollSource):
    """Poll URLs returning JSON; each element of the list at ``items_path`` is an item.

    Parameters
    ----------
    urls
        Endpoints (one partition each).
    name
        The input's name (``source`` of its items).
    items_path
        Dotted path to the list of items (``"data.items"``); ``None``: the document is
        the list.
    id_fields
        Fields tried, in order, as each item's de-duplication key.
    interval_s, timeout_s, max_backoff_s, max_polls
        Polling (see :class:`PollPartition`).
    client_factory
        ``timeout_s -> httpx.Client`` (tests may pass a client on a ``MockTransport``).
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        name: str = "http_json",
        *,
        items_path: str | None = None,
        id_fields: tuple[str, ...] = ("id", "url"),
        interval_s: float = 60.0,
        timeout_s: float = 10.0,
        max_backoff_s: float = 3600.0,
        max_polls: int | None = None,
        client_factory: Callable[[float], httpx.Client] | None = None,
    ) -> None:
        super().__init__(
            urls,
            name,
            interval_s=interval_s,
            timeout_s=timeout_s,
            max_backoff_s=max_backoff_s,
            max_polls=max_polls,
            client_factory=client_factory,
        )
        self.items_path = items_path
        self._id_fields = id_fields

    def _decode(self, body: bytes, headers: Mapping[str, str], url: str) -> list[dict[str, Any]]:
        doc = _walk(json.loads(body), self.items_path)  # JSONDecodeError is a ValueError
        if not isinstance(doc, list):
            msg = f"no list at {self.items_path or 'the top level'}"
            raise ValueError(msg)
        return [dict(x) for x in doc if isinstance(x, dict)]
