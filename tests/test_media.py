"""The media-mentions flow: text handling, analysis, the dataflow, and RSS end to end."""

from __future__ import annotations

import functools
import itertools
import json
import pickle
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from conftest import FeedServer
from prometheus_client import CollectorRegistry
from vigil.detectors.mention_volume import MentionVolume
from vigil.flows.config import parse_config
from vigil.flows.media.analysis import MediaAnalyzer
from vigil.flows.media.config import (
    HotIssueRule,
    MediaConfig,
    MediaRules,
    NegativeSurgeRule,
    VolumeDetectorConfig,
    VolumeRule,
    WatchEntity,
)
from vigil.flows.media.flow import build_flow, hash_author, make_parse_batch, parse_time
from vigil.flows.media.records import MediaItem, MediaTally
from vigil.flows.media.sentiment import LexiconScorer
from vigil.flows.media.text import WatchList, fold, minhash, terms, tokens

from vigil.records import DeadLetter, Detection

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
AIRLINE = DATA / "media" / "airline_twitter_mentions_2015-02"
AIRLINE_CSV = AIRLINE / "airline_mentions_2015-02-17_2015-02-24.csv"
DEMO_CSV = Path(__file__).resolve().parents[1] / "flows/demo_data/media/airline_tweets_sample.csv"

VAN_LAM = WatchEntity(
    id="van_lam", name="Huyện Văn Lâm", aliases=("Văn Lâm",), keywords=("cầu Như Quỳnh",)
)


# ---------------------------------------------------------------------------- matching
@pytest.mark.parametrize(
    "text",
    ["UBND huyện Văn Lâm họp", "tin van lam hom nay", "VĂN LÂM: ngập", "#VanLam"[:0] + "Van-Lam"],
)
def test_watched_name_matches_whatever_the_accents_and_case(text: str) -> None:
    wl = WatchList([("van_lam", ("Văn Lâm",), ())])
    assert [m.entity for m in wl.find(text)] == ["van_lam"]


@pytest.mark.parametrize("text", ["Vănlâm", "VanLams", "lâm nghiệp", "văn bản"])
def test_watched_name_never_matches_inside_another_word(text: str) -> None:
    wl = WatchList([("van_lam", ("Văn Lâm",), ()), ("lam", ("Lâm",), ())])
    assert [m.entity for m in wl.find(text) if m.entity == "van_lam"] == []
    if text == "Vănlâm":
        assert wl.find(text) == []


def test_a_single_syllable_name_matches_only_as_a_whole_word() -> None:
    wl = WatchList([("lam", ("Lâm",), ())])
    assert [m.entity for m in wl.find("ông Lâm phát biểu")] == ["lam"]
    assert wl.find("Lâmxyz và lâmnghiep") == []


def test_folding_does_not_merge_names_the_config_keeps_apart() -> None:
    # "Lâm" and "Lầm" fold to the same letters but are two names; "Lam Sơn" vs "Lâm Sơn" too.
    wl = WatchList(
        [("a", ("Lâm",), ()), ("b", ("Lầm",), ()), ("c", ("Lam Sơn",), ()), ("d", ("Lâm Sơn",), ())]
    )
    assert [m.entity for m in wl.find("ông LÂM nói")] == ["a"]
    assert [m.entity for m in wl.find("ông lầm nói")] == ["b"]
    assert [m.entity for m in wl.find("xã Lam Sơn")] == ["c"]
    assert [m.entity for m in wl.find("xã LÂM SƠN")] == ["d"]
    # Written without any diacritics it could be either: attributed to neither, and counted.
    assert wl.find("ong Lam noi") == []
    assert wl.ambiguous("ong Lam noi") == ["lam"]
    # A name with no rival keeps diacritic-insensitive matching.
    wl2 = WatchList([("a", ("Lâm",), ()), ("e", ("Như Quỳnh",), ())])
    assert [m.entity for m in wl2.find("nhu quynh")] == ["e"]


def test_keywords_count_as_mentions_and_aliases_are_not_story_terms() -> None:
    wl = WatchList([("van_lam", ("Văn Lâm",), ("cầu Như Quỳnh",))])
    [m] = wl.find("Sửa cầu Như Quỳnh")
    assert (m.entity, m.by) == ("van_lam", "keyword")
    assert "van" in wl.alias_words
    assert "van" not in terms([fold(t) for t in tokens("Văn Lâm ngập nặng")], wl.alias_words)


def test_copies_of_a_story_are_near_duplicates_and_other_stories_are_not() -> None:
    a = minhash([fold(t) for t in tokens("Mưa lớn gây ngập nặng trên quốc lộ 5 đoạn qua Văn Lâm")])
    b = minhash(
        [
            fold(t)
            for t in tokens("RT @baomoi: Mưa lớn gây ngập nặng trên quốc lộ 5 đoạn qua Văn Lâm")
        ]
    )
    c = minhash([fold(t) for t in tokens("Huyện Văn Lâm khánh thành trường học mới ở Lạc Hồng")])
    from vigil.flows.media.text import jaccard

    assert jaccard(a, b) >= 0.5 > jaccard(a, c)


def test_lexicon_sentiment_in_both_languages_with_negation() -> None:
    s = LexiconScorer()
    assert s.score("Dịch vụ công ở huyện rất tốt, cảm ơn", "vi")[0] == "positive"
    assert s.score("Người dân bức xúc vì rác thải bốc mùi", "vi")[0] == "negative"
    assert s.score("dich vu khong tot", "vi")[0] == "negative"  # unaccented, negated
    assert s.score("My flight was cancelled and nobody helps", "en")[0] == "negative"
    assert s.score("not bad at all, thanks", "en")[0] != "negative"


# ---------------------------------------------------------------------------- parsing
def _parse(rows: list[dict[str, Any]], cfg: MediaConfig | None = None) -> list[Any]:
    cfg = cfg or MediaConfig(watch=(VAN_LAM,))
    return make_parse_batch(cfg, scorer=LexiconScorer(), salt=b"s")(rows)


def test_parse_maps_fields_hashes_authors_and_matches_entities() -> None:
    out = _parse(
        [
            {
                "id": "1",
                "published_at": "2024-05-01T08:00:00+07:00",
                "title": "Ngập ở VĂN LÂM",
                "text": "Người dân bức xúc",
                "url": "https://x/1",
                "author": "Nguyễn A",
                "source": "press",
            }
        ]
    )
    [(_, [item])] = [o for o in out if isinstance(o, tuple)]
    assert item.ts == datetime(2024, 5, 1, 1, tzinfo=UTC).timestamp()
    assert item.entities == ("van_lam",)
    assert item.language == "vi"
    assert item.sentiment == "negative"
    assert item.author and "Nguyễn" not in item.author
    [mt] = [o for o in out if isinstance(o, MediaTally)]
    assert mt.mentions == {("van_lam", "press", "negative"): 1}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"title": "x"}, "missing field: published_at"),
        ({"title": "x", "published_at": "2024-05-01T08:00:00"}, "timestamp without time zone"),
        ({"title": "x", "published_at": "yesterday"}, "bad timestamp"),
        ({"published_at": 1714550400}, "empty item"),
        ({"_dead": "bad json", "payload": "{"}, "bad json"),
    ],
)
def test_each_bad_item_is_dead_lettered_with_a_stable_reason(
    row: dict[str, Any], reason: str
) -> None:
    out = _parse([row])
    [d] = [o for o in out if isinstance(o, DeadLetter)]
    assert d.reason == reason


def test_timestamps_in_seconds_milliseconds_iso_and_rfc2822() -> None:
    t = 1424158565.0
    assert parse_time(t) == parse_time(t * 1000) == t
    assert parse_time("Tue, 17 Feb 2015 07:36:05 GMT") == t
    assert parse_time("2015-02-17T07:36:05Z") == t


# ---------------------------------------------------------------------------- analysis
T0 = datetime(2024, 5, 1, tzinfo=UTC).timestamp()


def item(
    ts: float,
    text: str,
    *,
    ents: tuple[str, ...] = ("van_lam",),
    sentiment: str = "neutral",
    url: str = "",
    title: str = "",
) -> MediaItem:
    folded = [fold(t) for t in tokens(f"{title} {text}")]
    return MediaItem(
        ts=ts,
        source="press",
        item_id=str(ts),
        author="",
        title=title,
        text=text,
        url=url,
        language="vi",
        entities=ents,
        sentiment=sentiment,
        terms=tuple(sorted(terms(folded, frozenset({"van", "lam"})))),
        signature=minhash(folded),
    )


BACKGROUND = [
    "trường học khai giảng năm học mới",
    "hội nghị nông nghiệp bàn về giống lúa",
    "giải bóng đá thiếu niên khai mạc",
    "chợ phiên cuối tuần đông khách",
    "lớp tập huấn phòng cháy cho thanh niên",
    "xã tổ chức hiến máu nhân đạo",
    "hợp tác xã thu hoạch dưa hấu",
    "thư viện mở cửa buổi tối",
]


def background(hours: float, every_s: float = 600.0, t0: float = T0) -> list[MediaItem]:
    n = int(hours * 3600 / every_s)
    return [item(t0 + i * every_s, f"{BACKGROUND[i % len(BACKGROUND)]} số {i}") for i in range(n)]


def quick_cfg(**rules: Any) -> MediaConfig:
    return MediaConfig(
        watch=(VAN_LAM, WatchEntity(id="nhu_quynh", aliases=("Như Quỳnh",))),
        allowed_lateness_s=0,
        rules=MediaRules(
            hot_issue=rules.get(
                "hot_issue",
                HotIssueRule(min_stories=4, z=3.0, warmup_s=3600, window_s=3600),
            ),
            negative_surge=rules.get("negative_surge", NegativeSurgeRule()),
            volume=rules.get("volume", VolumeRule()),
        ),
    )


FLOOD = [
    ("Ngập sâu quốc lộ 5 qua Văn Lâm", "Mưa lớn từ đêm qua khiến nước dâng cao, nhiều xe chết máy"),
    ("Quốc lộ 5 ngập sâu, VĂN LÂM ùn tắc", "Hàng trăm phương tiện phải quay đầu tìm đường khác"),
    ("Người dân van lam lội nước trên quốc lộ 5", "Cống thoát nước bị tắc nên nước rút chậm"),
    ("Văn Lâm: quốc lộ 5 ngập, học sinh nghỉ học", "Nhà trường cho học sinh nghỉ vì đường bị ngập"),
    ("Ngập quốc lộ 5: huyện Văn Lâm huy động máy bơm", "Lực lượng chức năng đang khắc phục sự cố"),
    ("Vì sao quốc lộ 5 đoạn Văn Lâm ngập mỗi khi mưa", "Chuyên gia chỉ ra nguyên nhân do san lấp"),
    ("Tài xế mắc kẹt trên quốc lộ 5 ngập ở Văn Lâm", "Nhiều người phải đẩy xe máy qua đoạn ngập"),
    ("Quốc lộ 5 qua van lam vẫn ngập sau 6 giờ", "Chính quyền khuyến cáo hạn chế đi qua khu vực"),
]


def flood(t0: float, n: int = 6, tag: str = "") -> list[MediaItem]:
    return [
        item(
            t0 + 120 * i,
            FLOOD[i % len(FLOOD)][1] + tag,
            title=FLOOD[i % len(FLOOD)][0],
            url=f"https://news.example/ngap-{i}{tag}",
            sentiment="negative",
        )
        for i in range(n)
    ]


def run_analyzer(an: MediaAnalyzer, items: list[MediaItem]) -> list[Any]:
    out = an.process(items)
    return out + an.flush()


def test_an_emerging_story_on_a_watched_entity_is_a_hot_issue_with_headlines_and_links() -> None:
    an = MediaAnalyzer(quick_cfg())
    out = run_analyzer(an, background(4) + flood(T0 + 4 * 3600))
    hot = [d for d in out if isinstance(d, Detection) and d.kind == "media_hot_issue"]
    assert [d.entity for d in hot] == ["van_lam"]
    d = hot[0]
    assert d.severity == "high" and d.feed == "media"
    extra = dict(d.extra)
    assert "ngap" in extra["top_terms"] and "quoc lo" in extra["top_terms"]
    assert "quốc lộ 5" in extra["headline_1"].casefold()
    assert extra["link_1"].startswith("https://news.example/ngap-")


def test_a_hot_issue_is_reported_again_at_most_once_per_window() -> None:
    an = MediaAnalyzer(quick_cfg())
    burst = [x for k in range(4) for x in flood(T0 + 4 * 3600 + k * 900, 8, tag=f" ({k})")]
    out = run_analyzer(an, background(4) + burst)
    hot = [d for d in out if isinstance(d, Detection) and d.kind == "media_hot_issue"]
    assert len(hot) == 1  # the burst lasts one window (an hour): one alert


def test_no_story_is_reported_during_the_warm_up() -> None:
    an = MediaAnalyzer(quick_cfg())
    out = run_analyzer(an, flood(T0))
    assert not [d for d in out if isinstance(d, Detection)]


def test_copies_count_as_copies_not_new_stories() -> None:
    an = MediaAnalyzer(quick_cfg())
    a = item(T0, "Mưa lớn gây ngập nặng trên quốc lộ 5 đoạn qua Văn Lâm sáng nay")
    b = item(T0 + 60, "RT @baomoi Mưa lớn gây ngập nặng trên quốc lộ 5 đoạn qua Văn Lâm sáng nay")
    c = item(T0 + 90, "Huyện tổ chức lễ hội truyền thống ở đình làng")
    out = run_analyzer(an, [a, b, c])
    counts: dict[tuple[str, str], int] = {}
    for o in out:
        if isinstance(o, MediaTally):
            for k, v in o.items.items():
                counts[k] = counts.get(k, 0) + v
    assert counts == {("press", "story"): 2, ("press", "copy"): 1}


def test_a_surge_in_the_share_of_negative_items_is_detected_with_top_terms() -> None:
    cfg = quick_cfg(negative_surge=NegativeSurgeRule(window_s=3600, min_items=10, min_negative=6))
    an = MediaAnalyzer(cfg)
    calm = [
        item(T0 + 300 * i, f"{BACKGROUND[i % 8]} {i}", sentiment="negative" if i % 5 == 0 else "")
        for i in range(12 * 12)
    ]
    t1 = T0 + 12 * 3600
    angry = [
        item(t1 + 200 * i, f"rác thải bốc mùi ở bãi rác lần {i}", sentiment="negative")
        for i in range(12)
    ]
    out = run_analyzer(an, calm + angry)
    [d] = [o for o in out if isinstance(o, Detection) and o.kind == "media_negative_surge"]
    assert d.entity == "van_lam" and d.observed > d.expected + 0.1
    assert "rac" in dict(d.extra)["top_terms"]


def test_mention_volume_anomaly_against_the_seasonal_baseline() -> None:
    det = VolumeDetectorConfig(learning_period=30, estimation_samples=20, tz="UTC")
    cfg = MediaConfig(
        watch=(VAN_LAM,),
        bucket_s=3600,
        allowed_lateness_s=0,
        rules=MediaRules(volume=VolumeRule(detector=det, min_count=3)),
    )
    an = MediaAnalyzer(cfg)
    items = [
        item(T0 + h * 3600 + k * 600, f"tin {h} {k}")
        for h in range(96)
        for k in range(1 + (h * 7) % 4)  # 1 to 4 an hour: quiet, but not flat
    ]
    items += [item(T0 + 96 * 3600 + k * 100, f"sự cố {k} nghiêm trọng") for k in range(30)]
    out = run_analyzer(an, items)
    vol = [o for o in out if isinstance(o, Detection) and o.kind == "media_volume_anomaly"]
    assert [d.entity for d in vol] == ["van_lam"]
    assert vol[0].observed == 30 and vol[0].expected is not None and vol[0].expected < 5


def test_snapshot_restore_gives_the_same_future() -> None:
    a = MediaAnalyzer(quick_cfg())
    first = background(4)
    a.process(first)
    b = MediaAnalyzer(quick_cfg())
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    rest = flood(T0 + 4 * 3600)
    ra = [o for o in run_analyzer(a, rest) if isinstance(o, Detection)]
    rb = [o for o in run_analyzer(b, rest) if isinstance(o, Detection)]
    assert ra == rb and ra


def test_a_snapshot_from_before_episodes_were_tracked_still_restores() -> None:
    cfg = quick_cfg(negative_surge=NegativeSurgeRule(window_s=3600, min_items=10, min_negative=6))
    calm = [
        item(T0 + 300 * i, f"{BACKGROUND[i % 8]} {i}", sentiment="negative" if i % 5 == 0 else "")
        for i in range(12 * 12)
    ]
    t1 = T0 + 12 * 3600
    angry = [
        item(t1 + 200 * i, f"rác thải bốc mùi ở bãi rác lần {i}", sentiment="negative")
        for i in range(12)
    ]
    a = MediaAnalyzer(cfg)
    a.process(calm)
    snap = pickle.loads(pickle.dumps(a.snapshot()))
    # What the previous version saved: no episodes, buckets without origins, stories
    # without their input. The surge's window reaches back into those buckets.
    object.__delattr__(snap, "episodes")
    for bk in (*(b for _, b in snap.open_buckets), *snap.term_window):
        for name in ("origins", "neg_origins", "first", "neg_first"):
            delattr(bk, name)
        for r in bk.stories:
            delattr(r, "source")
    b = MediaAnalyzer(cfg)
    b.restore(snap)
    dets = [o for o in run_analyzer(b, angry) if isinstance(o, Detection)]
    assert [d.kind for d in dets] == ["media_negative_surge"] and dets[0].start == dets[0].ts


def test_hot_issue_evidence_counts_stories_by_the_publisher_of_their_link() -> None:
    out = run_analyzer(MediaAnalyzer(quick_cfg()), background(4) + flood(T0 + 4 * 3600))
    [d] = [o for o in out if isinstance(o, Detection) and o.kind == "media_hot_issue"]
    assert dict(d.evidence)["sources"] == (("news.example", int(d.observed)),)
    assert d.log_source == "press"


def test_config_defaults_mirror_the_volume_detector_defaults() -> None:
    import inspect

    params = inspect.signature(MentionVolume.__init__).parameters
    for k, v in VolumeDetectorConfig().model_dump().items():
        assert params[k].default == v, k


# ---------------------------------------------------------------------------- dataflow
def test_flow_end_to_end_with_testing_source() -> None:
    rows = []
    for it in background(4) + flood(T0 + 4 * 3600):
        rows.append(
            {
                "id": it.item_id,
                "published_at": it.ts,
                "title": it.title,
                "text": it.text,
                "url": it.url,
                "source": "press",
            }
        )
    rows.append({"source": "press", "title": "no time"})
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    tele: list[Any] = []
    flow = build_flow(
        quick_cfg(),
        [TestingSource(rows, batch_size=16)],
        TestingSink(dets),
        TestingSink(dead),
        TestingSink(tele),
        environ={},
    )
    run_main(flow)
    assert sorted(d.kind for d in dets) == ["media_hot_issue", "media_story"]
    assert [d.reason for d in dead] == ["missing field: published_at"]


# ---------------------------------------------------------------------------- RSS end to end
def rss(items: list[MediaItem]) -> bytes:
    entries = "".join(
        f"<item><guid>{escape(it.item_id)}</guid><title>{escape(it.title or it.text[:60])}"
        f"</title><link>{escape(it.url or 'https://news.example/' + it.item_id)}</link>"
        f"<pubDate>{format_datetime(datetime.fromtimestamp(it.ts, UTC), usegmt=True)}</pubDate>"
        f"<description>{escape(it.text)}</description><author>tg@example.org (Tác giả)</author>"
        "</item>"
        for it in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Tin huyện</title><link>https://news.example/</link><language>vi</language>"
        f"{entries}</channel></rss>"
    ).encode()


def atom(items: list[MediaItem]) -> bytes:
    entries = "".join(
        f"<entry><id>urn:x:{escape(it.item_id)}</id><title>{escape(it.title or it.text[:60])}"
        f'</title><link href="{escape(it.url or "https://atom.example/" + it.item_id)}"/>'
        f"<updated>{datetime.fromtimestamp(it.ts, UTC).isoformat()}</updated>"
        f"<summary>{escape(it.text)}</summary></entry>"
        for it in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>Cổng thông tin</title><id>urn:x</id><updated>2024-01-01T00:00:00Z</updated>"
        f"{entries}</feed>"
    ).encode()


def test_rss_and_atom_polled_from_a_local_server_deliver_a_hot_issue_alert(
    feed_server: FeedServer, http_receiver: Any, tmp_path: Path
) -> None:
    import time

    now = time.time()
    t0 = now - 5 * 3600
    bg = background(4, t0=t0)
    feed_server.docs["/rss"] = (rss(bg[::2] + flood(t0 + 4 * 3600)), "application/rss+xml")
    feed_server.docs["/atom"] = (atom(bg[1::2]), "application/atom+xml")
    cfg = parse_config(
        {
            "media": {
                "inputs": [
                    {
                        "kind": "rss",
                        "name": "press",
                        "urls": [feed_server.url("/rss"), feed_server.url("/atom")],
                        "interval_s": 0.2,
                        "max_polls": 2,
                    }
                ],
                "watch": [{"id": "van_lam", "name": "Huyện Văn Lâm", "aliases": ["Văn Lâm"]}],
                "allowed_lateness_s": 0,
                "rules": {
                    "hot_issue": {"min_stories": 4, "z": 3.0, "warmup_s": 3600},
                },
            },
            "alerts": {
                "file": str(tmp_path / "alerts.jsonl"),
                "webhook": {"url": http_receiver.url},
            },
            "dead_letters": {"file": str(tmp_path / "dead.jsonl")},
            "metrics": {"enabled": False},
        }
    )
    from vigil.flows.main import build_flows

    reg = CollectorRegistry()
    flow, _io = build_flows(["media"], cfg, registry=reg, environ={"VIGIL_WEBHOOK_SECRET": "s3"})
    run_main(flow)

    http_receiver.wait_for(1, timeout=10)
    alerts = [a for body in http_receiver.accepted for a in json.loads(body)["alerts"]]
    hot = [a for a in alerts if a["labels"]["alertname"] == "media_hot_issue"]
    assert hot and hot[0]["labels"]["entity"] == "van_lam"
    assert hot[0]["labels"]["severity"] == "high"
    ann = hot[0]["annotations"]
    assert "quốc lộ 5" in ann["headline_1"].casefold()
    assert ann["link_1"].startswith("https://news.example/ngap-")
    # Conditional GET: the second poll of each feed sent the ETag and got 304.
    second = [r for r in feed_server.requests if "if-none-match" in r[1]]
    assert {r[0] for r in second} == {"/rss", "/atom"} and {r[2] for r in second} == {304}
    # Metrics: mentions by entity/source/sentiment, stories and copies, items read.
    assert reg.get_sample_value(
        "vigil_media_mentions_total",
        {"entity": "van_lam", "source": "press", "sentiment": "negative"},
    )
    stories = reg.get_sample_value("vigil_media_items_total", {"source": "press", "kind": "story"})
    copies = reg.get_sample_value("vigil_media_items_total", {"source": "press", "kind": "copy"})
    # The background repeats 8 texts with a number changed: near-duplicates, so copies.
    assert stories + copies == len(bg) + 6 and stories >= 8 + 6 and copies > 0
    assert reg.get_sample_value("vigil_media_emerging_stories_total") >= 1


def test_a_failing_feed_backs_off_and_recovers(feed_server: FeedServer) -> None:
    from vigil.sources.http_poll import PollPartition, default_client
    from vigil.sources.rss import decode_feed

    feed_server.docs["/rss"] = (rss(flood(T0, 2)), "application/rss+xml")
    feed_server.fail_next = 2
    clock = [1000.0]
    part = PollPartition(
        feed_server.url("/rss"),
        "press",
        decode_feed,
        interval_s=10,
        max_backoff_s=100,
        max_polls=None,
        resume=None,
        client=default_client(5),
        now=lambda: clock[0],
    )

    def poll() -> list[dict[str, Any]]:
        assert part.next_batch() == []  # starts the request on the helper thread
        deadline = time.monotonic() + 5
        while True:
            out = part.next_batch()  # never blocks: [] while in flight
            if out or part._future is None:
                return out
            assert time.monotonic() < deadline
            time.sleep(0.01)

    import time

    try:
        assert poll() == []  # 503
        first_wait = part.snapshot().next_poll - clock[0]
        clock[0] = part.snapshot().next_poll
        assert poll() == []  # 503 again: waits longer
        second_wait = part.snapshot().next_poll - clock[0]
        assert 16 <= first_wait <= 24 and 32 <= second_wait <= 48
        clock[0] = part.snapshot().next_poll
        got = poll()
        assert [g["id"].rsplit("/", 1)[-1] for g in got] == [str(T0), str(T0 + 120)]
        assert part.snapshot().failures == 0
        # The same items again are not emitted twice (de-duplicated by id).
        feed_server.docs["/rss"] = (rss(flood(T0, 3)), "application/rss+xml")
        clock[0] = part.snapshot().next_poll
        assert [g["id"].rsplit("/", 1)[-1] for g in poll()] == [str(T0 + 240)]
    finally:
        part.close()


# ---------------------------------------------------------------------------- real data
#: The six airlines of the tweets: every tweet @-mentions one of them, so the watch list
#: matches every item (as in the demo, which watches two of them).
AIRLINES = (
    ("united", ("@united",)),
    ("usairways", ("@USAirways",)),
    ("american", ("@AmericanAir",)),
    ("southwest", ("@SouthwestAir",)),
    ("jetblue", ("@JetBlue",)),
    ("virgin", ("@VirginAmerica",)),
)
#: One entity that every tweet mentions: all of a kind's detections are about it, which is
#: where one alert used to swallow every later episode.
MATCH_ALL = (("airlines", tuple(a for _, aliases in AIRLINES for a in aliases)),)
WATCH_LISTS = {"airlines": AIRLINES, "match_all": MATCH_ALL}
REPLAYS = {"sample": DEMO_CSV, "full": AIRLINE_CSV}


@functools.cache
def airline_replay(
    data: str, watch: str, *, authors: bool = False, batch: int = 500, restart: bool = False
) -> tuple[Detection, ...]:
    """The detections of a replay of the airline tweets (the flow's parse and analysis);
    ``restart``: resume from a pickled snapshot after every batch, as after a crash."""
    from vigil.flows.media.inputs import read_posts

    cfg = MediaConfig(watch=tuple(WatchEntity(id=i, aliases=a) for i, a in WATCH_LISTS[watch]))
    parse = make_parse_batch(
        cfg,
        scorer=LexiconScorer(),
        salt=b"test",
        fields_by_source={"twitter": {"published_at": "created_at_utc", "id": "tweet_id"}},
        languages={"twitter": "en"},
    )
    rows = [dict(r, source="twitter") for r in read_posts(str(REPLAYS[data]), "csv")]
    if authors:  # the tweets come without authors: give them some, to check none leaks
        rows = [dict(r, author=f"@traveller{i % 40}") for i, r in enumerate(rows)]
    an = MediaAnalyzer(cfg)
    out: list[Any] = []
    for i in range(0, len(rows), batch):
        for x in parse(rows[i : i + batch]):
            if isinstance(x, tuple):
                out.extend(an.process(x[1]))
        if restart:
            snap = pickle.loads(pickle.dumps(an.snapshot()))
            an = MediaAnalyzer(cfg)
            an.restore(snap)
    out.extend(an.flush())
    return tuple(o for o in out if isinstance(o, Detection))


def episodes(dets: tuple[Detection, ...]) -> dict[tuple[str, str, float], list[Detection]]:
    eps: dict[tuple[str, str, float], list[Detection]] = {}
    for d in dets:
        assert d.start is not None
        eps.setdefault((d.kind, d.entity, d.start), []).append(d)
    return eps


REPLAY_CASES = [
    pytest.param("sample", "airlines", id="sample-airlines"),
    pytest.param("sample", "match_all", id="sample-match_all"),
    pytest.param("full", "airlines", id="full-airlines", marks=pytest.mark.slow),
    pytest.param("full", "match_all", id="full-match_all", marks=pytest.mark.slow),
]


@pytest.mark.slow
def test_airline_negative_surges_are_found_with_their_top_terms() -> None:
    surges = [d for d in airline_replay("full", "airlines") if d.kind == "media_negative_surge"]
    day = {(d.entity, datetime.fromtimestamp(d.ts, UTC).strftime("%m-%d")) for d in surges}
    # The README's candidate bursts of cancellations: Southwest on 02-21 (UTC afternoon).
    assert ("southwest", "02-21") in day
    sw = [d for d in surges if d.entity == "southwest"]
    assert any("cancelled" in dict(d.extra)["top_terms"] for d in sw)


@pytest.mark.parametrize(("data", "watch"), REPLAY_CASES)
def test_airline_replay_episodes_of_one_kind_and_entity_never_overlap(
    data: str, watch: str
) -> None:
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (kind, entity, start), ds in episodes(airline_replay(data, watch)).items():
        assert len({d.hold_s for d in ds}) == 1 and ds[0].hold_s > 0
        spans.setdefault((kind, entity), []).append((start, ds[-1].ts + ds[0].hold_s))
    assert spans
    for ivs in spans.values():
        ivs.sort()
        for (_, end), (start, _) in itertools.pairwise(ivs):
            assert start > end


@pytest.mark.parametrize(("data", "watch"), REPLAY_CASES)
def test_airline_replay_every_detection_of_an_episode_is_at_or_after_its_start(
    data: str, watch: str
) -> None:
    for (_, _, start), ds in episodes(airline_replay(data, watch)).items():
        assert ds[0].ts == start and ds[0].start_value == ds[0].observed
        assert all(d.ts >= start for d in ds)
        # ... and its first evidence came at or before the start.
        assert all(d.first_seen is not None and d.first_seen <= start for d in ds)


@pytest.mark.parametrize(("data", "watch"), REPLAY_CASES)
def test_a_detection_within_the_hold_of_the_last_one_continues_its_episode(
    data: str, watch: str
) -> None:
    last: dict[tuple[str, str], Detection] = {}
    for d in airline_replay(data, watch):
        prev = last.get((d.kind, d.entity))
        if prev is not None and d.ts - prev.ts <= prev.hold_s:
            assert d.start == prev.start and d.start_value == prev.start_value
            assert prev.peak is not None and d.peak is not None and d.peak >= prev.peak
        else:
            assert d.start == d.ts  # the first, or after the hold ran out: a new episode
        last[(d.kind, d.entity)] = d


@pytest.mark.parametrize("data", ["sample", pytest.param("full", marks=pytest.mark.slow)])
def test_a_match_all_watch_list_gives_several_hot_issue_episodes(data: str) -> None:
    hot = [d for d in airline_replay(data, "match_all") if d.kind == "media_hot_issue"]
    eps = list(episodes(tuple(hot)).values())
    # Bursts hours apart are episodes of their own; a story that keeps bursting is one.
    assert len(eps) > 1
    assert len(eps) < len(hot)


def test_the_first_detection_of_an_episode_states_its_start_value() -> None:
    stated = {
        "media_hot_issue": lambda v: f"{v:g} stories within",
        "media_story": lambda v: f"{v:g} stories within",
        "media_negative_surge": lambda v: f"negative ({v:.0%})",
        "media_volume_anomaly": lambda v: f"{v:g} mentions of",
    }
    dets = airline_replay("sample", "match_all") + airline_replay("sample", "airlines")
    firsts = [ds[0] for ds in episodes(dets).values()]
    assert {d.kind for d in firsts} == set(stated)
    for d in firsts:
        assert not d.is_update and d.start_value is not None
        assert stated[d.kind](d.start_value) in d.description, d.description


def test_an_update_says_when_and_at_what_its_episode_began() -> None:
    updates = [d for d in airline_replay("sample", "airlines") if d.is_update]
    assert updates
    for d in updates:
        assert d.start is not None
        since = datetime.fromtimestamp(d.start, UTC).strftime("%Y-%m-%d %H:%M UTC")
        assert f"Ongoing since {since}: began at " in d.description


def test_evidence_is_bounded_sorted_and_names_inputs_not_authors() -> None:
    dets = airline_replay("sample", "airlines", authors=True)
    hashes = {hash_author(f"@traveller{i}", b"test") for i in range(40)}
    assert dets and {d.log_source for d in dets} == {"twitter"}
    counted = {  # what the publishers of each kind's evidence add up to
        "media_hot_issue": lambda d: d.observed,
        "media_story": lambda d: d.observed,
        "media_negative_surge": lambda d: int(dict(d.extra)["negative"]),
        "media_volume_anomaly": lambda d: d.observed,
    }
    for d in dets:
        ev = dict(d.evidence)
        assert [p for p, _ in ev["sources"]] == ["twitter"]  # tweets carry no link: the input
        assert sum(n for _, n in ev["sources"]) == counted[d.kind](d)
        for _, items in d.evidence:
            counts = [n for _, n in items]
            assert 0 < len(items) <= 10 and counts == sorted(counts, reverse=True)
            assert min(counts) > 0
        shown = repr((d.evidence, d.log_source, d.extra, d.description))
        assert "traveller" not in shown and not any(h in shown for h in hashes)


def test_episodes_survive_a_snapshot_and_restore_at_every_batch() -> None:
    resumed = airline_replay("sample", "airlines", batch=100, restart=True)
    assert resumed == airline_replay("sample", "airlines", batch=100)
    assert any(d.is_update for d in resumed)  # episodes did span restarts
