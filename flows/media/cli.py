"""CLI of the media flow: ``vigil train sentiment --data FILE --out MODEL``.

Trains the scikit-learn sentiment model (:func:`vigil.flows.media.sentiment.train`), prints its
held-out accuracy beside the shipped lexicon's, and ends with one JSON line. Use the model
with ``media.sentiment: {kind: model, model_path: MODEL}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["cmd_train_sentiment", "register"]


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


def register(sub: Any) -> None:
    """Add ``vigil train sentiment`` to the CLI (called by flows/cli/__init__.py)."""
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
