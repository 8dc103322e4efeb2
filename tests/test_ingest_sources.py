"""``vigil ingest`` from CSV, JSON, RSS and HTTP sources into a real Redis bus.

The CLI runs as a user runs it (a subprocess). Feeds and endpoints are served by a real
HTTP server on 127.0.0.1 (:class:`test_media.FeedServer`: ETag validation, a request log),
serving real data: the demo's airline tweets (20-22 February 2015) as an RSS document and
as a JSON endpoint, Boston 311 cases as a JSON endpoint, NAB points as a JSON array.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
import redis
import yaml
from conftest import FeedServer, RedisServer
from test_bus_feeds import BOSTON, NAB_FILES, _vigil, boston_bus_section, boston_lines
from test_bus_media import SAMPLE, dead_key, det_key, media_section, run_media

pytestmark = pytest.mark.skipif(not BOSTON.exists(), reason="../shared/datasets not present")


def tweets() -> list[dict[str, str]]:
    with SAMPLE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def rss_doc(rows: list[dict[str, str]]) -> bytes:
    """The tweets as an RSS 2.0 channel (text as the description, no title)."""
    items = "".join(
        f"<item><guid>{r['tweet_id']}</guid><link>https://twitter.example/{r['tweet_id']}</link>"
        f"<pubDate>{format_datetime(datetime.fromisoformat(r['created_at_utc']), usegmt=True)}"
        f"</pubDate><description>{escape(r['text'])}</description></item>"
        for r in rows
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>tweets'
        f"</title><link>https://twitter.example/</link><language>en</language>{items}"
        "</channel></rss>"
    ).encode()


def one_input(**inp: Any) -> dict[str, Any]:
    """The airline media section with one input that maps no fields (RSS items)."""
    return {**media_section(), "inputs": [{"name": "twitter", **inp}]}


def entries(url: str, stream: str) -> list[dict[str, Any]]:
    r = redis.Redis.from_url(url)
    try:
        return [json.loads(f[b"text"]) for _, f in r.xrange(stream)]
    finally:
        r.close()


def guid_tail(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "id": e["id"].rsplit("/", 1)[-1]}


def summary_of(r: Any) -> dict[str, int]:
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stderr.strip().splitlines()[-1])["summary"])


def ingest(url: str, feed: str, *args: str) -> dict[str, int]:
    """``vigil ingest --to URL --feed FEED ARGS``: its summary (the run must succeed)."""
    return summary_of(_vigil("ingest", "--to", url, "--feed", feed, *args))


# ---------------------------------------------------------------- RSS
def test_an_rss_feed_polled_or_saved_reaches_the_media_flow_oldest_first(
    redis_server: RedisServer, feed_server: FeedServer, tmp_path: Path
) -> None:
    rows = tweets()
    # A feed lists its newest item first; the flow wants event-time order.
    doc = rss_doc(rows[::-1])
    feed_server.docs["/feed.xml"] = (doc, "application/rss+xml")
    # The same feed in event-time order (RSS dates are whole seconds: ties stay in the
    # order the feed lists them, as vigil ingest keeps them).
    second = lambda r: int(datetime.fromisoformat(r["created_at_utc"]).timestamp())  # noqa: E731
    feed_server.docs["/in-order.xml"] = (
        rss_doc(sorted(rows[::-1], key=second)),
        "application/rss+xml",
    )
    url = redis_server.url
    got = ingest(
        url,
        "media",
        "--stream",
        "rss",
        "--rss",
        feed_server.url("/feed.xml"),
        "--polls",
        "2",
        "--interval",
        "0.2",
    )
    assert got["written"] == len(rows)  # the second poll got 304: nothing sent twice
    polls = [(p, h.get("if-none-match") is not None, s) for p, h, s in feed_server.requests]
    assert polls == [("/feed.xml", False, 200), ("/feed.xml", True, 304)]
    sent = entries(url, "rss:0")
    times = [e["published_at"] for e in sent]
    assert times == sorted(times)
    assert {e["id"].rsplit("/", 1)[-1] for e in sent} == {r["tweet_id"] for r in rows}

    saved = tmp_path / "feed.xml"
    saved.write_bytes(doc)
    got = ingest(url, "media", "--stream", "f", "--rss", str(saved))
    assert got["written"] == len(rows)
    # The same items in the same order (feedparser resolves a guid against where it was).
    assert list(map(guid_tail, entries(url, "f:0"))) == list(map(guid_tail, sent))

    # What the flow makes of them: what it makes of the feed polled in order.
    direct = run_media(
        one_input(kind="rss", urls=[feed_server.url("/in-order.xml")], max_polls=1), False
    )
    from_bus = run_media(one_input(kind="redis_stream", url=url, stream="rss"), until_empty=True)
    assert len(direct[0]) >= 5
    assert sorted(map(det_key, from_bus[0])) == sorted(map(det_key, direct[0]))
    assert from_bus[1] == direct[1] == []


# ---------------------------------------------------------------- HTTP (JSON)
def test_a_json_endpoint_polled_gives_the_media_flow_what_the_file_gives(
    redis_server: RedisServer, feed_server: FeedServer, tmp_path: Path
) -> None:
    rows = tweets()
    body = json.dumps({"data": {"items": rows}}).encode()
    feed_server.docs["/api/posts"] = (body, "application/json")
    cfg = tmp_path / "vigil.yaml"
    bus = media_section(kind="redis_stream", url=redis_server.url, stream="http")
    cfg.write_text(yaml.safe_dump({"media": bus}))
    got = ingest(
        redis_server.url,
        "media",
        "-c",
        str(cfg),
        "--stream",
        "http",
        "--http",
        feed_server.url("/api/posts"),
        "--items-path",
        "data.items",
        "--polls",
        "2",
        "--interval",
        "0.2",
    )
    assert got == {"written": len(rows), "dropped": 0, "unreadable": 0}
    direct = run_media(media_section(kind="replay", paths=[str(SAMPLE)], format="csv"), False)
    from_bus = run_media(bus, until_empty=True)
    assert len(direct[0]) >= 10
    assert sorted(map(det_key, from_bus[0])) == sorted(map(det_key, direct[0]))
    assert sorted(map(dead_key, from_bus[1])) == sorted(map(dead_key, direct[1]))


def test_queue_rows_polled_keep_only_the_mapped_fields(
    redis_server: RedisServer, feed_server: FeedServer, tmp_path: Path
) -> None:
    with BOSTON.open(encoding="utf-8", newline="") as f:
        rows = [r for _, r in zip(range(300), csv.DictReader(f), strict=False)]
    feed_server.docs["/cases"] = (json.dumps(rows).encode(), "application/json")
    cfg = tmp_path / "q.yaml"
    section = boston_bus_section(redis_server.url, "polled")
    cfg.write_text(json.dumps({"service_queues": section}))
    got = ingest(
        redis_server.url,
        "service_queues",
        "-c",
        str(cfg),
        "--stream",
        "polled",
        "--http",
        feed_server.url("/cases"),
        "--polls",
        "1",
    )
    assert got["written"] == len(rows)
    sent = entries(redis_server.url, "polled:0")
    from vigil.flows.config import parse_config
    from vigil.flows.queues.mapping import mapped_fields

    inp = parse_config({"service_queues": section}).service_queues.inputs[0]
    keep = mapped_fields(inp.mapping)
    assert "case_title" in rows[0] and "case_title" not in keep  # a name that stays home
    assert sent == [{k: r[k] for k in keep if k in r} for r in rows]


# ---------------------------------------------------------------- CSV and JSON files
def test_csv_and_json_options_send_what_file_sends(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    cfg = tmp_path / "q.yaml"
    cfg.write_text(json.dumps({"service_queues": boston_bus_section(url, "csv")}))
    ingest(url, "service_queues", "-c", str(cfg), "--stream", "csv", "--csv", str(BOSTON))
    assert [
        json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in entries(url, "csv:0")
    ] == [x.text for x in boston_lines()]

    # Indicator points as JSON lines and as one JSON array: the same entries.
    with NAB_FILES[0].open(encoding="utf-8") as f:
        points = list(csv.DictReader(f))
    (tmp_path / "lines").mkdir()
    (tmp_path / "array").mkdir()
    as_lines = tmp_path / "lines" / "temp.json"
    as_lines.write_text("".join(json.dumps(p) + "\n" for p in points))
    as_array = tmp_path / "array" / "temp.json"
    as_array.write_text(json.dumps(points, indent=1))
    for path, stream in ((as_lines, "l"), (as_array, "a")):
        got = ingest(url, "indicators", "--stream", stream, "--json", str(path))
        assert got["written"] == len(points)
    assert entries(url, "l:0") == entries(url, "a:0") == points


def test_ingest_mistakes_are_one_line_and_exit_2(redis_server: RedisServer, tmp_path: Path) -> None:
    url = redis_server.url
    broken = tmp_path / "broken.json"
    broken.write_text('[{"a": 1},')
    for args, says in [
        (["--feed", "media"], "nothing to read"),
        (["--feed", "indicators", "--rss", "https://example.org/rss"], "--rss is for --feed media"),
        (["--feed", "media", "--http", "posts.json"], "expects an http(s):// URL"),
        (["--feed", "media", "--csv", str(tmp_path / "*.csv")], "matches no file"),
        (["--feed", "media", "--json", str(broken)], "is not one"),
        (["--csv", str(BOSTON)], "log lines come from --file or --syslog"),
        (["--feed", "media", "--syslog", "5514"], "--syslog receives log lines"),
        (["--feed", "media", "--http", "http://127.0.0.1:9/x", "--polls", "0"], "at least 1"),
        (["--feed", "service_queues", "--csv", str(BOSTON)], "needs --config"),
    ]:
        r = _vigil("ingest", "--to", url, *args)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_run_that_writes_nothing_says_so(redis_server: RedisServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("created_at_utc,tweet_id,text\n")
    r = _vigil("ingest", "--to", redis_server.url, "--feed", "media", "--csv", str(empty))
    assert r.returncode == 0 and "nothing to write" in r.stderr, r.stderr
    assert summary_of(r)["written"] == 0
