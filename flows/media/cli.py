"""CLI of the media flow.

- ``vigil train sentiment --data FILE --out MODEL`` trains the scikit-learn sentiment model
  (:func:`vigil.flows.media.sentiment.train`), prints its held-out accuracy beside the
  shipped lexicon's, and ends with one JSON line. Use the model with
  ``media.sentiment: {kind: model, model_path: MODEL}``.
- ``vigil media stories [--config C | --file F] [--json]`` lists the emerging stories the
  flow wrote to its stories file (:mod:`vigil.flows.media.storyfile`): id, first seen,
  size, top terms, headlines and sources.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["cmd_media_stories", "cmd_train_sentiment", "register"]


def _train_subparsers(sub: Any) -> Any:
    """The ``train`` command's subcommands (another plugin may have created it)."""
    tr = sub.choices.get("train")
    if tr is None:
        tr = sub.add_parser("train", help="train models from labelled data")
        return tr.add_subparsers(dest="train", required=True, metavar="MODEL")
    for action in tr._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return tr.add_subparsers(dest="train", required=True, metavar="MODEL")


def cmd_train_sentiment(args: argparse.Namespace) -> int:
    from vigil.flows.media.sentiment import train

    try:
        rep = train(
            args.data,
            args.out,
            text_column=args.text_column,
            label_column=args.label_column,
            test_size=args.test_size,
            seed=args.seed,
            language=args.language,
        )
    except (OSError, ValueError) as ex:
        print(f"vigil train sentiment: {ex}", file=sys.stderr)
        return 1
    d = rep.as_dict()
    print(
        f"trained on {rep.train_rows} rows, held out {rep.test_rows} (stratified, seed "
        f"{args.seed}):\n"
        f"  model accuracy   {rep.accuracy:.3f}  (macro F1 {rep.macro_f1:.3f})\n"
        f"  lexicon accuracy {rep.lexicon_accuracy:.3f}\n"
        f"  majority class   {rep.majority_accuracy:.3f}\n"
        f"model (refitted on all {rep.rows} rows) -> {args.out}"
    )
    print(json.dumps({"train_sentiment": d, "model": args.out}))
    return 0


def _stories_file(args: argparse.Namespace) -> str | None:
    """The stories file named by ``--file``, else by the configuration; ``None`` when the
    configuration turns it off."""
    from vigil.flows.media.storyfile import stories_path

    if args.file:
        return str(args.file)
    if args.config:
        from vigil.flows.config import load_config

        cfg = load_config(args.config)
        p = stories_path(cfg.media.stories_file, cfg.alerts.file)
        return None if p is None else str(p)
    return str(stories_path("media_stories.jsonl", "vigil-out/alerts.jsonl"))


def cmd_media_stories(args: argparse.Namespace) -> int:
    from vigil.flows.media.storyfile import read_stories

    path = _stories_file(args)  # a bad configuration: one line per problem, from main()
    if path is None:
        print("vigil media stories: media.stories_file is null: no stories kept", file=sys.stderr)
        return 2
    try:
        stories, skipped = read_stories(Path(path))
    except FileNotFoundError:
        print(
            f"vigil media stories: no stories file at {path} (run the media flow first, "
            "or give --file)",
            file=sys.stderr,
        )
        return 1
    except OSError as ex:
        print(f"vigil media stories: cannot read {path}: {ex.strerror}", file=sys.stderr)
        return 1
    if args.limit > 0:
        stories = stories[-args.limit :]
    if args.as_json:
        for st in stories:
            print(json.dumps(st, ensure_ascii=False))
        return 0
    print(
        f"{len(stories)} stories in {path}" + (f" ({skipped} unreadable lines)" if skipped else "")
    )
    for st in stories:
        cont = f"  continues {st['continues']}" if st.get("continues") else ""
        early = "  flagged early" if st.get("early") else ""
        print(
            f"\n{st['story_id']}  first seen {st['first_seen'] or '-'}  size {st['size']}  "
            f"reports {st['reports']}{cont}{early}"
        )
        print(f"  terms:   {', '.join(st['terms'][:8]) or '-'}")
        srcs = ", ".join(f"{k} {v}" for k, v in list(st["sources"].items())[:5])
        print(f"  sources: {srcs or '-'}")
        for h in st["headlines"][:3]:
            print(f"  - {h['title']}" + (f"  {h['url']}" if h.get("url") else ""))
    return 0


def register(sub: Any) -> None:
    """Add ``vigil train sentiment`` and ``vigil media stories`` to the CLI (called by
    flows/cli/__init__.py)."""
    media = sub.choices.get("media") or sub.add_parser("media", help="media flow: stories")
    msub = media.add_subparsers(dest="media_cmd", required=True, metavar="COMMAND")
    st = msub.add_parser("stories", help="list the emerging stories the media flow found")
    src = st.add_mutually_exclusive_group()
    src.add_argument("--config", "-c", help="the configuration whose stories file to read")
    src.add_argument("--file", help="a stories file (default vigil-out/media_stories.jsonl)")
    st.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per story")
    st.add_argument("--limit", type=int, default=0, help="only the N latest stories")
    st.set_defaults(func=cmd_media_stories)
    ts = _train_subparsers(sub)
    p = ts.add_parser("sentiment", help="fit a sentiment model for the media flow")
    p.add_argument("--data", required=True, help="labelled CSV or JSON lines")
    p.add_argument("--out", required=True, help="where to write the model (joblib)")
    p.add_argument("--text-column", help="default: text, content, body or title")
    p.add_argument("--label-column", help="default: label, sentiment, airline_sentiment")
    p.add_argument("--test-size", type=float, default=0.2, help="held-out share (0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--language", default="en", help="language of the lexicon baseline")
    p.set_defaults(func=cmd_train_sentiment)
