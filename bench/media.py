"""Media flow benchmark: NAB realTweets, airline negative surges, sentiment, throughput.

Usage::

    python bench/media.py             # everything (about 2 minutes)
    python bench/media.py --no-train  # skip training the sentiment model
    python bench/media.py --quick     # stories and throughput only

1. **NAB realTweets** (``../shared/datasets/nab``): the volume detector
   (:class:`vigil.detectors.mention_volume.MentionVolume`) runs over each of the five dev
   series, from a
   fresh detector, scoring each row before learning it (first 15 % probationary, as NAB).
   NAB standard scores per series (threshold chosen per series) and over the five files
   (one threshold), beside the shipped ``windowedGaussian`` and ``numenta`` results scored
   the same way with :mod:`vigil.flows.evaluation.nab`.
2. **Airline tweets**: the media analyzer over the 14,640 labelled tweets with the shipped
   lexicon; every negative surge per airline with its time and top terms.
3. **Stories**: a match-all replay of the airline tweets, item by item as a live feed:
   story ids against stories (reports linked when at most an hour apart and sharing a
   term), articles until each story is first flagged, early flags, and the same without a
   watch list.
4. **Sentiment**: ``vigil train sentiment`` on the airline tweets (80/20 stratified split).
5. **Throughput**: items/s of the whole bytewax flow (one worker, stories and lexicon
   sentiment on) on the tweets repeated to 5 copies, beside a plain Python loop doing the
   same parsing and analysis; wall clock, and CPU time of this process (the machine may be
   shared). Each runs with the garbage collector set as ``vigil run`` sets it (``flow_heap``).

The last line printed is one JSON object with the figures (``media_items_per_s``: the
flow's wall-clock items/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from vigil.detectors.mention_volume import MentionVolume  # noqa: E402
from vigil.flows.cli.runner import flow_heap  # noqa: E402
from vigil.flows.evaluation import nab  # noqa: E402
from vigil.flows.media.analysis import MediaAnalyzer  # noqa: E402
from vigil.flows.media.config import MediaConfig, WatchEntity  # noqa: E402
from vigil.flows.media.flow import build_flow, make_parse_batch  # noqa: E402
from vigil.flows.media.inputs import read_posts  # noqa: E402
from vigil.flows.media.sentiment import LexiconScorer  # noqa: E402

from vigil.records import Detection  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
NAB = DATA / "nab"
AIRLINE = DATA / "media" / "airline_twitter_mentions_2015-02"
AIRLINE_CSV = AIRLINE / "airline_mentions_2015-02-17_2015-02-24.csv"
FIELDS = {"published_at": "created_at_utc", "id": "tweet_id"}
AIRLINES = (
    ("united", "United", ("@united",)),
    ("usairways", "US Airways", ("@USAirways",)),
    ("american", "American", ("@AmericanAir",)),
    ("southwest", "Southwest", ("@SouthwestAir",)),
    ("jetblue", "JetBlue (labelled 'Delta')", ("@JetBlue",)),
    ("virgin", "Virgin America", ("@VirginAmerica",)),
)


# ---------------------------------------------------------------------------- NAB
def nab_tweets() -> dict[str, Any]:
    files = [f for f in (NAB / "dev_files.txt").read_text().split() if f.startswith("realTweets")]
    windows = nab.load_windows(NAB / "dev_combined_windows.json")
    ours: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    t0 = time.perf_counter()
    rows = 0
    for f in files:
        ts, values = nab.load_series(NAB / f)
        epoch = ts.astype("datetime64[s]").astype(np.int64).astype(float)
        det = MentionVolume(tz="UTC")  # NAB's timestamps are UTC; defaults otherwise
        n = len(values)
        prob = int(nab.probationary_length(n))
        sc = np.zeros(n)
        for i, (t, x) in enumerate(
            zip(epoch.tolist(), np.asarray(values, float).tolist(), strict=True)
        ):
            s = det.score_one(x, t)
            det.learn_one(x, t)
            sc[i] = s if i >= prob else 0.0
        ours[f] = (ts, sc)
        rows += n
    secs = time.perf_counter() - t0
    refs = {
        name: nab.load_corpus_results(NAB / "reference_results" / name, name, files)
        for name in ("windowedGaussian", "numenta")
    }
    table: dict[str, dict[str, float]] = {}
    for f in files:
        short = f.split("/")[1].removeprefix("Twitter_volume_").removesuffix(".csv")
        table[short] = {
            "ours": round(nab.score_corpus({f: ours[f]}, windows, "standard").score, 1),
            **{
                k: round(nab.score_corpus({f: v[f]}, windows, "standard").score, 1)
                for k, v in refs.items()
            },
        }
    corpus = {"ours": round(nab.score_corpus(ours, windows, "standard").score, 1)}
    corpus.update(
        {k: round(nab.score_corpus(v, windows, "standard").score, 1) for k, v in refs.items()}
    )
    print("NAB realTweets (dev), standard profile; per series: threshold chosen per series")
    print(f"  {'series':8} {'ours':>6} {'windowedGaussian':>17} {'numenta':>8}")
    for k, v in table.items():
        mark = "beats" if v["ours"] > v["windowedGaussian"] else "LOSES"
        print(f"  {k:8} {v['ours']:6.1f} {v['windowedGaussian']:17.1f} {v['numenta']:8.1f}  {mark}")
    print(
        f"  {'5 files':8} {corpus['ours']:6.1f} {corpus['windowedGaussian']:17.1f} "
        f"{corpus['numenta']:8.1f}  (one threshold)"
    )
    print(f"  detector speed: {rows / secs:,.0f} values/s")
    return {
        "per_series": table,
        "corpus": corpus,
        "beats_windowed_gaussian_on_every_series": all(
            v["ours"] > v["windowedGaussian"] for v in table.values()
        ),
    }


# ---------------------------------------------------------------------------- airline
def airline_cfg() -> MediaConfig:
    return MediaConfig(watch=tuple(WatchEntity(id=i, name=n, aliases=a) for i, n, a in AIRLINES))


def airline_rows() -> list[dict[str, Any]]:
    return [dict(r, source="twitter") for r in read_posts(str(AIRLINE_CSV), "csv")]


def analyse(rows: list[dict[str, Any]], cfg: MediaConfig) -> tuple[list[Any], int]:
    """The plain loop: the flow's parse and analysis without bytewax."""
    parse = make_parse_batch(
        cfg, scorer=LexiconScorer(), fields_by_source={"twitter": FIELDS},
        languages={"twitter": "en"},
    )  # fmt: skip
    an = MediaAnalyzer(cfg)
    out: list[Any] = []
    n = 0
    for i in range(0, len(rows), 500):
        for x in parse(rows[i : i + 500]):
            if isinstance(x, tuple):
                n += len(x[1])
                out.extend(an.process(x[1]))
    out.extend(an.flush())
    return out, n


def airline_surges() -> dict[str, Any]:
    out, _ = analyse(airline_rows(), airline_cfg())
    dets = [o for o in out if isinstance(o, Detection)]
    surges = [d for d in dets if d.kind == "media_negative_surge"]
    print("\nAirline tweets 2015-02-17..24: negative surges (lexicon sentiment, 3 h windows)")
    listed = []
    for d in surges:
        ex = dict(d.extra)
        when = datetime.fromtimestamp(d.ts, UTC).strftime("%Y-%m-%d %H:%M")
        print(
            f"  {when}Z  {d.entity:9} {ex['negative']:>3}/{ex['mentions']:<3} negative "
            f"({d.observed:.0%}, usual {d.expected:.0%})  {ex['top_terms']}"
        )
        listed.append(
            {
                "ts": when,
                "airline": d.entity,
                "share": d.observed,
                "usual": d.expected,
                "top_terms": ex["top_terms"],
            }
        )
    kinds: dict[str, int] = {}
    for d in dets:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    print(f"  all detections: {kinds}")
    return {"negative_surges": listed, "detections_by_kind": kinds}


# ---------------------------------------------------------------------------- stories
def _story_chains(reports: list[Any]) -> list[list[Any]]:
    """Reports of one story by an independent referee: at most an hour apart, sharing a
    shown term (union-find over time-ordered reports)."""
    parent = list(range(len(reports)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(reports):
        ta = {t for t, _ in a.terms}
        for j in range(i + 1, len(reports)):
            if reports[j].ts - a.ts > 3600:
                break
            if ta & {t for t, _ in reports[j].terms}:
                parent[find(i)] = find(j)
    chains: dict[int, list[Any]] = {}
    for i, r in enumerate(reports):
        chains.setdefault(find(i), []).append(r)
    return list(chains.values())


def story_replay(watch: tuple[WatchEntity, ...]) -> dict[str, Any]:
    import bisect
    import statistics

    from vigil.flows.media.records import EmergingStory

    cfg = MediaConfig(watch=watch)
    parse = make_parse_batch(
        cfg, scorer=LexiconScorer(), fields_by_source={"twitter": FIELDS},
        languages={"twitter": "en"},
    )  # fmt: skip
    rows = airline_rows()
    an = MediaAnalyzer(cfg)
    out: list[Any] = []
    items: list[Any] = []
    emitted: dict[int, float] = {}
    for i in range(0, len(rows), 500):
        for x in parse(rows[i : i + 500]):
            if isinstance(x, tuple):
                for it in x[1]:  # item by item, as a live feed: when is each story flagged?
                    items.append(it)
                    for o in an.process([it]):
                        out.append(o)
                        emitted[id(o)] = it.ts
    out.extend(an.flush())
    reports = sorted((o for o in out if isinstance(o, EmergingStory)), key=lambda s: s.ts)
    chains = _story_chains(reports)
    times = [it.ts for it in items]
    until = []
    for c in chains:
        s = min(c, key=lambda r: emitted.get(id(r), r.ts))
        terms = {t for t, _ in s.terms}
        lo = bisect.bisect_left(times, s.first_seen)
        hi = bisect.bisect_right(times, emitted.get(id(s), s.ts))
        until.append(sum(1 for it in items[lo:hi] if terms.intersection(it.terms)))
    kinds: dict[str, int] = {}
    for d in out:
        if isinstance(d, Detection):
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
    firsts = {s.story_id: s for s in reversed(reports)}
    return {
        "story_reports": len(reports),
        "story_ids": len({s.story_id for s in reports}),
        "stories": len(chains),
        "ids_per_story_max": max((len({s.story_id for s in c}) for c in chains), default=0),
        "articles_until_flagged_median": statistics.median(until) if until else None,
        "articles_until_flagged_max": max(until, default=None),
        "flagged_within_20_articles": sum(1 for n in until if n <= 20),
        "flagged_early": sum(1 for s in firsts.values() if s.early),
        "continuing_a_quiet_story": sum(1 for s in firsts.values() if s.continues),
        "detections_by_kind": kinds,
    }


def stories() -> dict[str, Any]:
    everyone = (WatchEntity(id="airlines", aliases=tuple(a for *_, al in AIRLINES for a in al)),)
    res = {"match_all": story_replay(everyone), "no_watch_list": story_replay(())}
    print(
        "\nStories in the airline tweets (item by item; one story = reports <= 1 h apart "
        "sharing a term)"
    )
    for name, r in res.items():
        print(
            f"  {name:13} {r['story_ids']} story ids for {r['stories']} stories "
            f"(at most {r['ids_per_story_max']} per story, {r['story_reports']} reports); "
            f"flagged after {r['articles_until_flagged_median']} articles (median, max "
            f"{r['articles_until_flagged_max']}), {r['flagged_within_20_articles']} within 20, "
            f"{r['flagged_early']} before their bucket closed; {r['detections_by_kind']}"
        )
    return res


# ---------------------------------------------------------------------------- sentiment
def sentiment() -> dict[str, Any]:
    from vigil.flows.media.sentiment import train

    with tempfile.TemporaryDirectory() as d:
        rep = train(AIRLINE_CSV, Path(d) / "m.joblib", seed=0)
    print(
        f"\nSentiment on held-out airline tweets ({rep.test_rows} rows): model accuracy "
        f"{rep.accuracy:.3f} (macro F1 {rep.macro_f1:.3f}); lexicon {rep.lexicon_accuracy:.3f}; "
        f"majority class {rep.majority_accuracy:.3f}"
    )
    return rep.as_dict()


# ---------------------------------------------------------------------------- throughput
def throughput(copies: int = 5) -> dict[str, Any]:
    from bytewax.testing import TestingSink, TestingSource, run_main

    base = airline_rows()
    rows = []
    for k in range(copies):  # later copies shifted by the data's span: a longer stream
        shift = k * 8 * 86_400
        for r in base:
            rr = dict(r)
            rr["created_at_utc"] = datetime.fromisoformat(r["created_at_utc"]).timestamp() + shift
            rr["tweet_id"] = f"{r['tweet_id']}-{k}"
            rows.append(rr)
    cfg = airline_cfg()
    # Both runs use the collector settings `vigil run` uses (a frozen heap: full collections
    # would otherwise walk the 73,200 input rows and the imports again and again).
    with flow_heap():
        t0, c0 = time.perf_counter(), time.process_time()
        _, n = analyse(rows, cfg)
    loop_s, loop_cpu = time.perf_counter() - t0, time.process_time() - c0
    dets: list[Any] = []
    dead: list[Any] = []
    tele: list[Any] = []
    from vigil.flows.media.config import PostReplayInput

    cfg_flow = cfg.model_copy(
        update={
            "inputs": (PostReplayInput(name="twitter", paths=(str(AIRLINE_CSV),), fields=FIELDS),)
        }
    )
    flow = build_flow(
        cfg_flow,
        [TestingSource(rows, batch_size=500)],
        TestingSink(dets),
        TestingSink(dead),
        TestingSink(tele),
        environ={"VIGIL_AUTHOR_SALT": "bench"},
    )
    with flow_heap():
        t0, c0 = time.perf_counter(), time.process_time()
        run_main(flow)
    flow_s, flow_cpu = time.perf_counter() - t0, time.process_time() - c0
    res = {
        "items": len(rows),
        "flow_items_per_s": round(len(rows) / flow_s, 1),
        "plain_loop_items_per_s": round(n / loop_s, 1),
        "flow_items_per_cpu_s": round(len(rows) / flow_cpu, 1),
        "plain_loop_items_per_cpu_s": round(n / loop_cpu, 1),
        "story_alerts": sum(1 for d in dets if d.kind == "media_story"),
    }
    res["flow_vs_loop"] = round(res["flow_items_per_s"] / res["plain_loop_items_per_s"], 3)
    print(
        f"\nThroughput over {len(rows):,} items (stories and sentiment on): bytewax flow "
        f"{res['flow_items_per_s']:,.0f} items/s (1 worker), plain loop "
        f"{res['plain_loop_items_per_s']:,.0f} items/s (ratio {res['flow_vs_loop']:.2f}); "
        f"per CPU second {res['flow_items_per_cpu_s']:,.0f} and "
        f"{res['plain_loop_items_per_cpu_s']:,.0f}"
    )
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-train", action="store_true", help="skip the sentiment model")
    ap.add_argument("--copies", type=int, default=5, help="copies of the tweets for throughput")
    ap.add_argument("--quick", action="store_true", help="stories and throughput only")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {}
    if not args.quick:
        report["nab_realtweets"] = nab_tweets()
        report["airline"] = airline_surges()
    report["stories"] = stories()
    if not (args.no_train or args.quick):
        report["sentiment"] = sentiment()
    report["throughput"] = throughput(args.copies)
    report["media_items_per_s"] = report["throughput"]["flow_items_per_s"]
    print(f"\nmedia flow: {report['media_items_per_s']:,.0f} items/s")
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
