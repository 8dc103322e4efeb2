"""Poll RSS and Atom feeds (feedparser) as a bytewax source.

Polling, conditional GET, backoff and de-duplication are those of
:class:`vigil.sources.http_poll.PollPartition`; this module only decodes a feed document into
item dicts::

    {"id", "published_at" (epoch seconds), "title", "text", "url", "author", "language"}

Entries without a date get the time they were fetched. HTML in summaries is reduced to
text. A document feedparser cannot make sense of at all (no feed, no entries and a parse
error) is reported as undecodable.
"""

from __future__ import annotations

import calendar
import html
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import feedparser  # type: ignore[import-untyped]
import httpx
from vigil.sources.http_poll import _PollSource

__all__ = ["RSSSource", "decode_feed"]

_TAG = re.compile(r"<[^>]+>")


def _text(s: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", s)).split())


def decode_feed(body: bytes, headers: Mapping[str, str], url: str) -> list[dict[str, Any]]:
    """The entries of an RSS/Atom document as item dicts.

    Parameters
    ----------
    body
        The document.
    headers
        Response headers (lower-case names); the content type helps feedparser.
    url
        Where it came from (resolves relative links).

    Examples
    --------
    >>> doc = '''<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
    ... <language>vi</language><item><guid>a1</guid><title>Ngập ở Văn Lâm</title>
    ... <link>https://x/a1</link><pubDate>Tue, 17 Feb 2015 07:36:05 GMT</pubDate>
    ... <description>&lt;p&gt;Mưa lớn&lt;/p&gt;</description></item></channel></rss>'''.encode()
    >>> [(e["id"], e["published_at"], e["text"], e["language"]) for e in decode_feed(doc, {}, "")]
    [('a1', 1424158565.0, 'Mưa lớn', 'vi')]
    """
    ctype = headers.get("content-type", "application/xml")
    parsed = feedparser.parse(
        body, response_headers={"content-type": ctype, "content-location": url}
    )
    if parsed.get("bozo") and not parsed.entries and not parsed.feed:
        exc = parsed.get("bozo_exception")
        msg = f"not a feed: {type(exc).__name__ if exc else 'unknown'}"
        raise ValueError(msg)
    lang = (parsed.feed.get("language") or "").split("-")[0].lower() or None
    fetched = time.time()
    out: list[dict[str, Any]] = []
    for e in parsed.entries:
        stamp = e.get("published_parsed") or e.get("updated_parsed")
        content = ""
        if e.get("content"):
            content = " ".join(c.get("value", "") for c in e.content)
        text = _text(e.get("summary") or content or "")
        out.append(
            {
                "id": e.get("id") or e.get("link") or "",
                "published_at": float(calendar.timegm(stamp)) if stamp else fetched,
                "title": _text(e.get("title", "")),
                "text": text,
                "url": e.get("link", ""),
                "author": e.get("author", ""),
                "language": lang,
            }
        )
    return out


class RSSSource(_PollSource):
    """Poll RSS/Atom feeds; one partition (and backoff, validators, seen ids) per feed.

    Parameters
    ----------
    urls
        Feed URLs.
    name
        The input's name (``source`` of its items).
    interval_s, timeout_s, max_backoff_s, max_polls
        Polling (see :class:`vigil.sources.http_poll.PollPartition`).
    client_factory
        ``timeout_s -> httpx.Client``.
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        name: str = "rss",
        *,
        interval_s: float = 300.0,
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

    def _decode(self, body: bytes, headers: Mapping[str, str], url: str) -> list[dict[str, Any]]:
        return decode_feed(body, headers, url)
