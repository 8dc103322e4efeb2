"""The ``vigil`` command line.

::

    vigil run security --config vigil.yaml [--workers N]
    vigil demo [--speed X] [--follow]
    vigil replay FILE... --format ssh [--speed 60|max] [--config FILE]
    vigil check-config FILE
    vigil version
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import importlib
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import run_main
from vigil.flows.config import AlertsConfig, VigilConfig, WebhookConfig, load_config, parse_config
from vigil.flows.errors import ConfigError
from vigil.flows.feed import feed_names, feeds
from vigil.flows.inputs import ReplayInput
from vigil.sinks.prometheus import FlowMetrics, serve
from vigil.sinks.webhook import verify_signature

log = logging.getLogger("vigil")

#: Modules of the shared subcommands, each with ``register(subparsers)``.
CLI_PLUGINS = (
    "vigil.flows.cli.alerts",
    "vigil.flows.cli.backtest",
    "vigil.flows.cli.bus",
    "vigil.flows.cli.dashboards",
)
SEVERITY_COLOURS = {"critical": "\033[1;31m", "high": "\033[31m", "warning": "\033[33m"}


# ---------------------------------------------------------------- logging and output
class JsonFormatter(logging.Formatter):
    """One JSON object per log record (for log shippers); extra fields are kept."""

    _skip = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in self._skip:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Human-readable logs on a terminal, JSON lines otherwise."""
    s = stream or sys.stderr
    h = logging.StreamHandler(s)
    if s.isatty():
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        h.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(level)
    # httpx logs every request at INFO; delivery outcomes are in our own metrics.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def alert_printer(stream: TextIO) -> Callable[[dict[str, Any]], None]:
    """Print each alert as one line as it happens."""
    colour = stream.isatty()
    lock = threading.Lock()

    def show(alert: dict[str, Any]) -> None:
        lab, ann = alert["labels"], alert["annotations"]
        sev = lab.get("severity", "")
        tag = f"{sev.upper():8}"
        if colour and sev in SEVERITY_COLOURS:
            tag = f"{SEVERITY_COLOURS[sev]}{tag}\033[0m"
        line = (
            f"{alert['startsAt']}  {tag} {lab.get('alertname', ''):28} "
            f"{ann.get('description', ann.get('summary', ''))}"
        )
        with lock:
            print(line, file=stream, flush=True)

    return show


class Totals:
    """Running totals summed over the metrics of every flow in this process."""

    def __init__(self, metrics: dict[str, FlowMetrics]) -> None:
        self._metrics = metrics

    @property
    def total_lines(self) -> int:
        return sum(m.total_lines for m in self._metrics.values())

    @property
    def total_dead(self) -> int:
        return sum(m.total_dead for m in self._metrics.values())

    @property
    def total_detections(self) -> int:
        return sum(m.total_detections for m in self._metrics.values())


class Progress:
    """Events/s and detections so far: a live line on a terminal, a log line otherwise."""

    def __init__(self, metrics: Totals, stream: TextIO, interval_s: float = 1.0) -> None:
        self.metrics = metrics
        self.stream = stream
        self.tty = stream.isatty()
        self.interval_s = interval_s if self.tty else max(interval_s, 10.0)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="vigil-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.tty:
            print(file=self.stream)

    def _run(self) -> None:
        last_n, last_t = 0, time.monotonic()
        while not self._stop.wait(self.interval_s):
            m = self.metrics
            now = time.monotonic()
            rate = (m.total_lines - last_n) / max(now - last_t, 1e-9)
            last_n, last_t = m.total_lines, now
            if self.tty:
                print(
                    f"\r  {m.total_lines:>10,} lines  {rate:>9,.0f} lines/s  "
                    f"{m.total_detections:>5} detections  {m.total_dead:>6} dead-lettered",
                    end="",
                    file=self.stream,
                    flush=True,
                )
            else:
                log.info(
                    "progress",
                    extra={
                        "lines": m.total_lines,
                        "lines_per_s": round(rate, 1),
                        "detections": m.total_detections,
                        "dead_lettered": m.total_dead,
                    },
                )

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        secs = time.monotonic() - self._t0
        return {
            "lines": m.total_lines,
            "dead_lettered": m.total_dead,
            "detections": m.total_detections,
            "seconds": round(secs, 2),
            "lines_per_s": round(m.total_lines / max(secs, 1e-9), 1),
        }


# ---------------------------------------------------------------- running
def recovery_config(directory: str | None, partitions: int) -> RecoveryConfig | None:
    """Bytewax recovery in ``directory``, creating its partition files on first use."""
    if directory is None:
        return None
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if not any(d.glob("part-*.sqlite3")):
        init_db_dir(d, max(1, partitions))
    return RecoveryConfig(str(d))


def execute(
    flow: Dataflow,
    workers: int,
    *,
    recovery_dir: str | None = None,
    snapshot_interval_s: float | None = None,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
) -> None:
    """Run a dataflow; with ``recovery_dir``, snapshot state every ``snapshot_interval_s``.

    With ``addresses`` (``host:port`` of every process) this is process ``process_id`` of a
    cluster; its recovery partitions must exist already (``vigil run --processes`` or
    ``python -m bytewax.recovery DIR N`` creates them).
    """
    epoch = timedelta(seconds=snapshot_interval_s) if snapshot_interval_s is not None else None
    if addresses:
        rc = None
        if recovery_dir is not None:
            if not any(Path(recovery_dir).glob("part-*.sqlite3")):
                msg = f"no recovery partitions in {recovery_dir!r} (see README: several hosts)"
                raise ConfigError(msg)
            rc = RecoveryConfig(str(recovery_dir))
        cli_main(
            flow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=list(addresses),
            epoch_interval=epoch,
            recovery_config=rc,
        )
        return
    rc = recovery_config(recovery_dir, workers)
    if workers <= 1:
        run_main(flow, epoch_interval=epoch, recovery_config=rc)
    else:
        cli_main(flow, workers_per_process=workers, epoch_interval=epoch, recovery_config=rc)


def run_flows(
    cfg: VigilConfig,
    flows: Sequence[str] = ("security",),
    *,
    workers: int = 1,
    metrics_port: int | None = None,
    speed_override: float | str | None = "config",
    follow: bool = False,
    out: TextIO | None = None,
    recovery_dir: str | None = None,
    snapshot_interval_s: float | None = None,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run flows to completion (or until interrupted, for live inputs); return a summary.

    Process ``process_id`` of a cluster serves metrics on the base port + ``process_id``.
    """
    from vigil.flows.main import build_flows

    stdout = out or sys.stdout
    flow, io = build_flows(
        flows, cfg, on_alert=alert_printer(stdout), speed_override=speed_override
    )
    stop_metrics: Callable[[], None] | None = None
    if cfg.metrics.enabled:
        port = cfg.metrics.port if metrics_port is None else metrics_port
        if port and process_id:
            port += process_id
        try:
            bound, stop_metrics = serve(cfg.metrics.host, port)
        except OSError as ex:
            log.warning(
                "cannot serve metrics; continuing without",
                extra={"address": f"{cfg.metrics.host}:{port}", "error": str(ex)},
            )
        else:
            print(f"metrics: http://{cfg.metrics.host}:{bound}/metrics", file=sys.stderr)
    try:
        with Progress(Totals(io.metrics), sys.stderr) as prog:
            execute(
                flow,
                workers,
                recovery_dir=recovery_dir,
                snapshot_interval_s=snapshot_interval_s,
                process_id=process_id,
                addresses=addresses,
            )
        summary = prog.summary()
        if follow and stop_metrics is not None:
            print("replay finished; serving metrics until interrupted (Ctrl-C)", file=sys.stderr)
            threading.Event().wait()
    except KeyboardInterrupt:
        summary = {"interrupted": True}
    finally:
        if stop_metrics is not None:
            stop_metrics()
    return summary


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


def cmd_run(args: argparse.Namespace) -> int:
    have = feed_names()
    unknown = [f for f in args.flows if f not in have]
    if unknown:
        print(f"vigil run: unknown flow(s) {unknown}; available: {have}", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    if "security" in args.flows and not cfg.security.inputs:
        print(f"vigil run: {args.config} has no security.inputs", file=sys.stderr)
        return 2
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
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


class _DemoReceiver(http.server.BaseHTTPRequestHandler):
    """The demo's own webhook receiver: verifies signatures, drops repeated keys."""

    secret: bytes = b""
    seen: set[str]
    verified = 0
    rejected = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = verify_signature(self.secret, dict(self.headers.items()), body)
        key = self.headers.get("Idempotency-Key") or hashlib.sha256(body).hexdigest()
        with self.lock:
            if ok:
                type(self).verified += 1
                self.seen.add(key)
            else:
                type(self).rejected += 1
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logs
        pass


def _resolve_demo_paths(node: Any, base: Path) -> Any:
    """Make every ``path``/``paths`` value in the demo config absolute under ``base``."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "paths" and isinstance(v, list):
                out[k] = [str(base / p) for p in v]
            elif k == "path" and isinstance(v, str):
                out[k] = str(base / v)
            else:
                out[k] = _resolve_demo_paths(v, base)
        return out
    if isinstance(node, list):
        return [_resolve_demo_paths(x, base) for x in node]
    return node


DEMO_FEEDS = {
    "security": "SSH auth.log of an Internet-facing host (2017), Zeek log of Nmap scans (2022)",
    "indicators": "one NAB series: AWS request latency before a system failure",
    "service_queues": "Boston 311 service requests, 12 Jan - 8 Feb 2015",
    "media": "airline mention tweets, 20-22 Feb 2015",
}


def demo_flows(raw: dict[str, Any]) -> list[str]:
    """The flows the demo runs: those available whose section in demo.yaml has inputs."""
    return [f.name for f in feeds() if (raw.get(f.name) or {}).get("inputs")]


def cmd_demo(args: argparse.Namespace) -> int:
    data = Path(str(resources.files("vigil.flows") / "demo_data"))
    raw = _resolve_demo_paths(_demo_yaml(), data)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw["alerts"]["file"] = str(out_dir / "alerts.jsonl")
    raw["dead_letters"]["file"] = str(out_dir / "dead_letters.jsonl")
    for f in ("alerts.jsonl", "dead_letters.jsonl"):
        (out_dir / f).unlink(missing_ok=True)
    raw.setdefault("metrics", {})["port"] = args.metrics_port

    # The demo's hashes of authors never leave this run: a random salt keeps them unlinkable
    # without asking the user to set one.
    os.environ.setdefault("VIGIL_AUTHOR_SALT", secrets.token_hex(16))
    server = None
    if args.webhook:
        raw["alerts"]["webhook"] = {"url": args.webhook}
    else:
        # Deliver to a receiver of our own, so the demo shows signed delivery end to end
        # with nothing else running.
        secret = os.environ.get("VIGIL_WEBHOOK_SECRET") or secrets.token_hex(16)
        os.environ["VIGIL_WEBHOOK_SECRET"] = secret
        handler = type("DemoReceiver", (_DemoReceiver,), {"secret": secret.encode(), "seen": set()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        raw["alerts"]["webhook"] = {"url": f"http://127.0.0.1:{server.server_address[1]}/alerts"}
    cfg = parse_config(raw)
    flows_run = demo_flows(raw)
    print(
        "Vigil demo: replaying bundled real samples (see flows/demo_data/NOTICE.md)\n"
        + "".join(f"  {f:15} {DEMO_FEEDS.get(f, '')}\n" for f in flows_run)
        + f"alerts -> {cfg.alerts.file} and {_webhook_url(cfg)}\n",
        file=sys.stderr,
    )
    try:
        summary = run_flows(
            cfg,
            flows_run,
            speed_override=args.speed,
            follow=args.follow,
            metrics_port=args.metrics_port,
        )
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if server is not None:
        h = server.RequestHandlerClass
        summary["webhook_deliveries_verified"] = h.verified  # type: ignore[attr-defined]
        summary["webhook_deliveries_rejected"] = h.rejected  # type: ignore[attr-defined]
    summary["alerts_file"] = cfg.alerts.file
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


def _webhook_url(cfg: VigilConfig) -> str:
    return cfg.alerts.webhook.url if cfg.alerts.webhook else "-"


def _demo_yaml() -> dict[str, Any]:
    import yaml

    text = (resources.files("vigil.flows") / "demo.yaml").read_text(encoding="utf-8")
    return dict(yaml.safe_load(text))


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
    cfg = parse_config(replay_state(cfg.model_dump(), args.state))  # re-validate
    summary = run_flows(cfg, workers=args.workers)
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as ex:
        print(str(ex), file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    for feed in feeds():
        for line in feed.explain(getattr(cfg, feed.name)):
            print(f"  {line}")
    m = cfg.metrics
    print(f"  metrics: {f'http://{m.host}:{m.port}/metrics' if m.enabled else 'off'}")
    print(f"  alerts: file={cfg.alerts.file} webhook={_webhook_url(cfg)}")
    if cfg.alerts.webhook and cfg.alerts.webhook.secret_env:
        present = "set" if os.environ.get(cfg.alerts.webhook.secret_env) else "NOT set"
        print(f"    secret from ${cfg.alerts.webhook.secret_env} ({present})")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    try:
        v = version("vigil-ioc")
    except PackageNotFoundError:
        v = "unknown (not installed)"
    import bytewax

    print(
        f"vigil {v} (bytewax {getattr(bytewax, '__version__', version('bytewax'))}, "
        f"python {sys.version.split()[0]})"
    )
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigil",
        description="Vigil: stream-processing monitoring engine for an operations centre.",
    )
    p.add_argument("--log-level", default=os.environ.get("VIGIL_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run flows from a configuration file")
    r.add_argument(
        "flows", nargs="+", metavar="FLOW", help="security, indicators, service_queues, media"
    )
    r.add_argument("--config", "-c", required=True, help="YAML configuration file")
    r.add_argument("--workers", "-w", type=int, default=1, help="worker threads (default 1)")
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
        type=int,
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
    rp.add_argument("--format", "-f", required=True, help="ssh, zeek, suricata, iptables, access")
    rp.add_argument("--speed", type=_speed, default=None, help="speed factor or 'max' (default)")
    rp.add_argument("--year", type=int, help="year of syslog lines (they carry none)")
    rp.add_argument("--config", "-c", help="take rules and outputs from this configuration")
    rp.add_argument("--alerts", help="alerts JSON-lines file ('-' for stdout)")
    rp.add_argument("--webhook", help="POST alerts to this URL")
    rp.add_argument("--workers", "-w", type=int, default=1)
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
    rp.add_argument("--shards", type=int, default=1, help="streams of the bus (with --to)")
    rp.add_argument("--max-len", type=int, default=1_000_000, help="entries per stream at most")
    rp.add_argument("--on-full", choices=("block", "drop"), default="block")
    rp.add_argument("--shard-by", choices=("origin", "line"), default="origin")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except ConfigError as ex:
        print(str(ex), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
