"""``vigil backtest``: replay history through the indicator flow's detectors and grade them.

::

    vigil backtest --config vigil.yaml --data history/ [--labels windows.json]
                   [--out backtest-out] [--series 'health.*'] [--feedback feedback.jsonl]
    vigil backtest --security auth.log --labels attack_episodes.csv [--format ssh] [--year Y]

Plugged into the CLI by :data:`vigil.flows.cli.CLI_PLUGINS`. See
:mod:`vigil.flows.evaluation.indicators`, and
:mod:`vigil.flows.evaluation.alerts` for the alert-level scoring of a security log (``--security``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vigil.flows.config import load_config, parse_config

from vigil.extras import have


def cmd_backtest(args: argparse.Namespace) -> int:
    if args.security:
        from vigil.flows.evaluation.alerts import cmd_backtest_alerts

        return cmd_backtest_alerts(args)
    from vigil.flows.evaluation.indicators import print_summary, run_backtest

    cfg = load_config(args.config) if args.config else parse_config({})
    bar = sys.stderr if sys.stderr.isatty() else None
    try:
        summary = run_backtest(
            cfg.indicators,
            args.data,
            labels=args.labels,
            feedback=args.feedback,
            out=args.out,
            series=args.series,
            plots=not args.no_plots,
            bar=bar,
        )
    except FileNotFoundError as ex:
        print(f"vigil backtest: {ex}", file=sys.stderr)
        return 2
    if not summary.get("series"):
        skipped = summary.get("files_skipped", 0)
        print(
            f"vigil backtest: no series in {', '.join(map(str, args.data))}"
            + (f" ({skipped} file(s) skipped: no time and value columns)" if skipped else ""),
            file=sys.stderr,
        )
        return 1
    print_summary(summary)
    if args.out:
        what = "CSV files" if args.no_plots or not have("matplotlib") else "CSV and PNG files"
        print(f"\nper-series {what} in {args.out}/", file=sys.stdout)
    short = {k: v for k, v in summary.items() if k != "per_series"}
    print(json.dumps({"summary": short}), file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add the ``backtest`` subcommand to the ``vigil`` parser's subparsers."""
    b = sub.add_parser(
        "backtest",
        help="replay recorded indicator series through the configured detectors and grade them",
        description=(
            "Replays history through the same dataflow and detector configuration as "
            "`vigil run indicators`; writes per-point CSV and a PNG per series; prints "
            "alerts, precision and recall against labels, and NAB scores for NAB windows."
        ),
    )
    b.add_argument(
        "--config",
        "-c",
        help="YAML configuration (its `indicators`, or with --security its `security`, section)",
    )
    mode = b.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--data",
        nargs="+",
        metavar="FILE_OR_DIR",
        help="indicator files (.csv, .jsonl) or folders searched recursively",
    )
    mode.add_argument(
        "--security",
        metavar="FILE",
        help="score the alerts of `vigil replay FILE` against episode labels (--labels CSV)",
    )
    b.add_argument(
        "--labels",
        help="anomaly windows: NAB combined_windows.json or CSV series,start,end; with "
        "--security, an episode CSV (src,start,end,kind or scanner,start_ts,end_ts)",
    )
    b.add_argument("--format", help="with --security: replay format (default: from the labels)")
    b.add_argument("--year", type=int, help="with --security: year of syslog lines")
    b.add_argument(
        "--feedback",
        help="responder feedback, JSON lines {series, verdict: true_positive|false_positive, "
        "ts | start+end}",
    )
    b.add_argument("--out", default="backtest-out", help="folder for CSV, PNG and summary.json")
    b.add_argument("--series", help="only series whose name matches this glob")
    b.add_argument("--no-plots", action="store_true", help="skip the PNGs (faster)")
    b.set_defaults(func=cmd_backtest)
