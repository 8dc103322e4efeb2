"""The ``vigil`` command line.

::

    vigil run security --config vigil.yaml [--workers N]
    vigil demo [--speed X] [--follow]
    vigil replay FILE... --format ssh [--speed 60|max] [--config FILE]
    vigil check-config FILE
    vigil --version

The pieces: :mod:`.output` (what a person reads), :mod:`.runner` (checks, run, clean
stop), :mod:`.demo`, and one module per shared subcommand group (:data:`CLI_PLUGINS`); a
feed's own subcommands come with the feed (``Feed.commands``). :func:`main` is the one
place errors become messages: a user's mistake is one line and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import typing
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from vigil.flows.cli.demo import DEMO_FEEDS, _demo_yaml, cmd_demo, demo_flows
from vigil.flows.cli.output import LOG_LEVELS, alert_printer, print_summary, setup_logging
from vigil.flows.cli.runner import (
    check_inputs,
    execute,
    failed,
    recovery_config,
    run_flows,
    run_hints,
)
from vigil.flows.config import (
    AlertsConfig,
    VigilConfig,
    WebhookConfig,
    load_config,
    parse_config,
)
from vigil.flows.errors import VigilError
from vigil.flows.feed import feed_names, feeds
from vigil.flows.inputs import Format, ReplayInput

from vigil.extras import MissingExtra

FORMATS: tuple[str, ...] = typing.get_args(Format)

__all__ = [
    "DEMO_FEEDS",
    "_demo_yaml",
    "alert_printer",
    "demo_flows",
    "execute",
    "main",
    "make_parser",
    "recovery_config",
    "run_flows",
    "setup_logging",
]

log = logging.getLogger("vigil")

#: Modules of the shared subcommands, each with ``register(subparsers)``.
CLI_PLUGINS = (
    "vigil.flows.cli.alerts",
    "vigil.flows.cli.backtest",
    "vigil.flows.cli.bus",
    "vigil.flows.cli.dashboards",
    "vigil.flows.cli.incidents",
)
#: Exit codes: 1 = a run failed or did nothing, 2 = a usage or configuration mistake,
#: 70 = a bug in Vigil (EX_SOFTWARE).
EXIT_FAILED, EXIT_USAGE, EXIT_BUG = 1, 2, 70


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        f = float(value)
    except ValueError as ex:
        msg = f"speed must be a positive number or 'max', got {value!r}"
        raise argparse.ArgumentTypeError(msg) from ex
    if not f > 0:
        msg = f"speed must be > 0, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return f


def _load(path: str | None) -> VigilConfig:
    return load_config(path) if path else parse_config({})


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        msg = f"must be a whole number >= 1, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return n


def _finish(
    summary: dict[str, Any],
    args: argparse.Namespace,
    cfg: VigilConfig,
    fmt: str | None = None,
) -> int:
    """Print the summary (and what to try next); 1 when the run did nothing useful."""
    where = {
        "alerts": str(cfg.alerts.file or "-"),
        "dead letters": str(cfg.dead_letters.file or "-"),
    }
    hints = run_hints(summary, fmt)
    print_summary(summary, as_json=args.json, where=where, hints=hints)
    return EXIT_FAILED if failed(summary) else 0


def cmd_run(args: argparse.Namespace) -> int:
    have = feed_names()
    unknown = [f for f in args.flows if f not in have]
    if unknown:
        msg = f"unknown flow(s) {', '.join(unknown)}; available: {', '.join(have)}"
        raise UsageError(msg)
    cfg = load_config(args.config)
    empty = [f for f in args.flows if f != "health" and not getattr(cfg, f).inputs]
    if empty:
        msg = f"{args.config} has no inputs for {', '.join(empty)} (add {empty[0]}.inputs)"
        raise UsageError(msg)
    if args.processes > 1:  # a local cluster: this process only supervises (flows/cli/bus.py)
        from vigil.flows.cli.bus import run_local_cluster

        return run_local_cluster(args)
    addresses = args.addresses.replace(",", ";").split(";") if args.addresses else None
    summary = run_flows(
        cfg,
        args.flows,
        workers=args.workers,
        recovery_dir=args.recovery_dir,
        snapshot_interval_s=args.snapshot_interval,
        process_id=args.process_id,
        addresses=addresses,
    )
    return _finish(summary, args, cfg)


def replay_state(raw: dict[str, Any], state: str | None) -> dict[str, Any]:
    """A replay's alert state: a fresh folder (cleared at start) unless ``state`` names a
    folder or a ``redis://`` URL to reuse. The configuration's Redis is not used unless
    named: a replay must not touch live alerts. Prints which store it uses."""
    from vigil.flows.alerting_wiring import state_dir

    al = raw.setdefault("alerting", {})
    st = al.setdefault("state", {})
    st["redis_url"] = None
    st["redis_url_env"] = None
    if state and state.startswith(("redis://", "rediss://", "unix://")):
        st["redis_url"], st["reset"] = state, False
        print(f"alert state: Redis {state.split('@')[-1]} (reused)", file=sys.stderr)
    elif state:
        st["dir"], st["reset"] = state, False
        print(f"alert state: {state} (reused)", file=sys.stderr)
    else:
        st["reset"] = True
        cfg = parse_config(raw)
        print(f"alert state: {state_dir(cfg)} (fresh; --state DIR keeps one)", file=sys.stderr)
        f = cfg.alerts.file
        if f and f != "-" and Path(f).exists():
            Path(f).unlink()  # fresh state, fresh alerts: no lines left from an older run
    return raw


def cmd_replay(args: argparse.Namespace) -> int:
    if args.to:  # producer mode: into the bus, no flow
        from vigil.flows.cli.bus import replay_to_bus

        return replay_to_bus(args)
    base = _load(args.config)
    inp = ReplayInput(paths=tuple(args.files), format=args.format, speed=args.speed)
    sec = base.security.model_copy(
        update={"inputs": (inp,), "year": args.year if args.year else base.security.year}
    )
    alerts: AlertsConfig = base.alerts
    if args.alerts:
        alerts = alerts.model_copy(update={"file": args.alerts})
    if args.webhook:
        alerts = alerts.model_copy(update={"webhook": WebhookConfig(url=args.webhook)})
    cfg = base.model_copy(update={"security": sec, "alerts": alerts})
    check_inputs(cfg, ["security"])  # before replay_state clears an older run's files
    cfg = parse_config(replay_state(cfg.model_dump(), args.state))  # re-validate
    summary = run_flows(cfg, workers=args.workers, metrics_port=args.metrics_port)
    return _finish(summary, args, cfg, args.format)


def _alerting_lines(cfg: VigilConfig) -> list[str]:
    from vigil.flows.alerting_wiring import alerting_of, redis_url, state_dir

    a = alerting_of(cfg)
    route = a.route
    out = []
    if route is not None:
        to = (
            "no receiver (alerts go to the alerts file only)"
            if route.receiver == "null"
            else f"receiver {route.receiver!r}"
        )
        out.append(
            f"alerting: route to {to}, one notification per group of "
            f"({', '.join(route.group_by or ())}); {len(route.routes)} sub-route(s)"
        )
    for r in a.receivers:
        kinds = [k for k in ("webhook", "pagerduty", "slack") if getattr(r, k) is not None]
        if kinds:
            signed = ""
            if r.webhook is not None:
                var = r.webhook.secret_env
                state = "set" if var and os.environ.get(var) else "NOT set"
                signed = f", signed with ${var} ({state})" if var else ", unsigned"
                if r.webhook.insecure_unsigned:
                    signed += ", insecure_unsigned"
            out.append(f"  receiver {r.name!r}: {', '.join(kinds)}{signed}")
    url = redis_url(cfg, os.environ)
    out.append(f"  alert state: {'Redis ' + url.split('@')[-1] if url else state_dir(cfg)}")
    return out


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate and explain a configuration: each section present, what would run, and
    every problem ``vigil run`` would stop on (exit 1 then)."""
    from vigil.flows.alerting_wiring import alerting_of, make_integrations
    from vigil.flows.cli.runner import input_problems

    cfg = load_config(args.file)
    present = cfg.model_fields_set
    lines: list[str] = []
    problems = input_problems(cfg, [f.name for f in feeds()])
    for feed in feeds():
        section = getattr(cfg, feed.name)
        if feed.name not in present and not getattr(section, "inputs", ()):
            continue
        for line in feed.explain(section):
            if line.startswith("error: "):
                problems.append(line.removeprefix("error: "))
            else:
                lines.append(line)
    try:
        for ints in make_integrations(alerting_of(cfg), os.environ).values():
            for integ in ints:
                integ.close()
    except VigilError as ex:
        problems.append(str(ex))
    if not any(getattr(getattr(cfg, f.name), "inputs", ()) for f in feeds()):
        problems.append("no feed has inputs: vigil run would do nothing")
    if problems:
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.file}: OK")
    for line in lines:
        print(f"  {line}")
    m = cfg.metrics
    print(f"  metrics: {f'http://{m.host}:{m.port}/metrics' if m.enabled else 'off'}")
    print(f"  alerts: file={cfg.alerts.file} dead letters: file={cfg.dead_letters.file}")
    for line in _alerting_lines(cfg):
        print(f"  {line}")
    return 0


def version_text() -> str:
    try:
        v = version("vigil-ioc")
    except PackageNotFoundError:
        v = "unknown (not installed)"
    try:
        bw = version("bytewax")
    except PackageNotFoundError:
        bw = "?"
    return f"vigil {v} (bytewax {bw}, python {sys.version.split()[0]})"


def cmd_version(args: argparse.Namespace) -> int:
    print(version_text())
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="vigil",
        description="Vigil: stream-processing monitoring engine for an operations centre.",
        epilog="Each command has its own --help. Docs: README.md and docs/.",
    )
    p.add_argument("--version", action="version", version=version_text())
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=os.environ.get("VIGIL_LOG_LEVEL", "INFO").upper(),
        help="log verbosity (default INFO, or $VIGIL_LOG_LEVEL)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=None,
        help="print the end-of-run summary as one JSON line even on a terminal "
        "(it always is when stderr is not a terminal)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run flows from a configuration file")
    r.add_argument(
        "flows", nargs="+", metavar="FLOW", help=f"one or more of: {', '.join(feed_names())}"
    )
    r.add_argument("--config", "-c", required=True, help="YAML configuration file")
    r.add_argument(
        "--workers", "-w", type=_positive_int, default=1, help="worker threads (default 1)"
    )
    r.add_argument(
        "--recovery-dir",
        help="keep bytewax recovery state here: a restart resumes where it stopped "
        "(file offsets, windows, baselines)",
    )
    r.add_argument(
        "--snapshot-interval",
        type=float,
        default=10.0,
        help="seconds between recovery snapshots (default 10)",
    )
    r.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="run a cluster of N local processes (each serves metrics on port + its id)",
    )
    r.add_argument("--process-id", "-i", type=int, help="this process's id in a cluster")
    r.add_argument(
        "--addresses",
        "-a",
        help="host:port of every process of a cluster, ';'-separated, same order on all hosts",
    )
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="replay bundled sample logs: alerts, metrics, no servers")
    d.add_argument(
        "--speed",
        type=_speed,
        default=None,
        help="replay speed factor (60 = an hour per minute) or 'max' (default)",
    )
    d.add_argument(
        "--follow",
        action="store_true",
        help="keep serving metrics after the replay ends, until Ctrl-C",
    )
    d.add_argument("--out", default="vigil-out", help="folder for alerts and dead letters")
    d.add_argument("--metrics-port", type=int, default=9464, help="0 picks a free port")
    d.add_argument("--webhook", help="deliver alerts to this URL instead of the demo receiver")
    d.set_defaults(func=cmd_demo)

    rp = sub.add_parser("replay", help="replay recorded log files as a live feed")
    rp.add_argument("files", nargs="+", metavar="FILE", help="files or glob patterns")
    rp.add_argument(
        "--format",
        "-f",
        required=True,
        choices=FORMATS,
        help="what the files hold: " + ", ".join(FORMATS),
    )
    rp.add_argument("--speed", type=_speed, default=None, help="speed factor or 'max' (default)")
    rp.add_argument("--year", type=int, help="year of syslog lines (they carry none)")
    rp.add_argument("--config", "-c", help="take rules and outputs from this configuration")
    rp.add_argument("--alerts", help="alerts JSON-lines file ('-' for stdout)")
    rp.add_argument("--webhook", help="POST alerts to this URL")
    rp.add_argument(
        "--workers", "-w", type=_positive_int, default=1, help="worker threads (default 1)"
    )
    rp.add_argument(
        "--metrics-port",
        type=int,
        help="serve metrics on this port (default: the config's, 9464; 0 picks a free one)",
    )
    rp.add_argument(
        "--state",
        metavar="DIR",
        help="reuse the alert state in DIR or at a redis:// URL (default: a fresh state "
        "beside the alerts file)",
    )
    rp.add_argument(
        "--to", metavar="URL", help="write the lines into the bus at redis://HOST:PORT/DB instead"
    )
    rp.add_argument("--stream", default="vigil:lines", help="bus stream name (with --to)")
    rp.add_argument(
        "--shards", type=_positive_int, default=1, help="streams of the bus (with --to)"
    )
    rp.add_argument(
        "--max-len",
        type=_positive_int,
        default=1_000_000,
        help="entries each stream keeps at most (with --to; default 1000000)",
    )
    rp.add_argument(
        "--on-full",
        choices=("block", "drop"),
        default="block",
        help="when a stream holds --max-len unread entries: wait for readers (block, the "
        "default) or trim the oldest (drop)",
    )
    rp.add_argument(
        "--shard-by",
        choices=("origin", "line"),
        default="origin",
        help="which stream a line goes to: by its source host or file (origin, the "
        "default: keeps a source's lines in order) or round robin (line)",
    )
    rp.set_defaults(func=cmd_replay)

    c = sub.add_parser("check-config", help="validate a configuration file and explain it")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    v = sub.add_parser("version", help="print versions")
    v.set_defaults(func=cmd_version)

    # Subcommands of the shared features live in their own modules, each with
    # register(sub); a feed's own commands come with the feed (Feed.commands).
    for name in CLI_PLUGINS:
        importlib.import_module(name).register(sub)
    for feed in feeds():
        feed.commands(sub)
    return p


class UsageError(VigilError):
    """The command line asks for something that cannot be done (exit 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``vigil run: error: ... (see vigil run --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _root_cause(ex: BaseException) -> BaseException:
    """The innermost exception of a chain (bytewax wraps a step's error in its own)."""
    seen = {id(ex)}
    while (nxt := ex.__cause__ or ex.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        ex = nxt
    return ex


def main(argv: Sequence[str] | None = None) -> int:
    """The ``vigil`` command: the one place an exception becomes a message and exit code.

    A :class:`VigilError` is one line and exit 1 (2 for a :class:`UsageError`, as
    argparse's own errors); an unreadable file is one line and exit 1; anything else is a
    bug in Vigil: one line saying so (the traceback with ``--log-level DEBUG``), exit 70.
    """
    parser = make_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    prog = f"vigil {args.command}" if getattr(args, "command", None) else "vigil"
    try:
        return int(args.func(args))
    except (VigilError, MissingExtra) as ex:
        print(f"{prog}: {ex}", file=sys.stderr)
        return EXIT_USAGE if isinstance(ex, UsageError) else EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as ex:  # the top-level handler: never a traceback for a user
        cause = _root_cause(ex)
        if isinstance(cause, VigilError | MissingExtra):
            print(f"{prog}: {cause}", file=sys.stderr)
            return EXIT_USAGE if isinstance(cause, UsageError) else EXIT_FAILED
        if isinstance(cause, OSError) and cause.filename is not None:
            print(f"{prog}: cannot read {cause.filename!s}: {cause.strerror}", file=sys.stderr)
            return EXIT_FAILED
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        print(
            f"{prog}: internal error: {type(cause).__name__}: {cause} "
            "(a bug in Vigil: please report it; --log-level DEBUG shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
