"""Running flows from the command line: checks before the start, the run, a clean stop.

Before a flow is built, :func:`check_inputs` makes sure every file input names files that
exist (a missing path or a glob that matches nothing is a user's mistake, not an empty
run). :func:`run_flows` then runs the dataflow under :func:`~vigil.sources.stop.graceful_stop`:
Ctrl-C or SIGTERM ends every input as if its data had ended, so sinks flush, the outbox
drains and the summary is printed (exit 0).
"""

from __future__ import annotations

import gc
import glob
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import run_main
from vigil.flows.cli.output import AlertPrinter, Progress, StatusLine, Totals
from vigil.flows.config import VigilConfig
from vigil.flows.errors import ConfigError
from vigil.sinks.prometheus import serve
from vigil.sources.replay import GZIP_MAGIC
from vigil.sources.stop import graceful_stop, stop_requested, stop_signal, wait_for_stop

log = logging.getLogger("vigil")


# ---------------------------------------------------------------- before the start
def _is_gzip(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError:
        return False


def input_problems(cfg: VigilConfig, flows: Sequence[str]) -> list[str]:
    """What is wrong with the files the inputs of ``flows`` name, one line each."""
    problems: list[str] = []
    for name in flows:
        section = getattr(cfg, name, None)
        for inp in getattr(section, "inputs", None) or ():
            kind = getattr(inp, "kind", "")
            what = f"{name} input {getattr(inp, 'name', None) or kind!s}"
            follow = bool(getattr(inp, "follow", False))
            for pattern in getattr(inp, "paths", None) or ():
                if glob.has_magic(pattern):
                    hits = [p for p in glob.glob(pattern) if os.path.isfile(p)]
                    if not hits:
                        problems.append(f"{what}: no file matches {pattern!r}")
                elif os.path.isdir(pattern):
                    problems.append(
                        f"{what}: {pattern!r} is a folder; name its files, e.g. "
                        f"'{Path(pattern) / '*.log'}'"
                    )
                    continue
                elif not os.path.exists(pattern):
                    if not follow:  # follow: tail -F waits for the file to appear
                        problems.append(f"{what}: no such file {pattern!r}")
                    continue
                else:
                    hits = [pattern]
                if kind == "file":
                    for p in hits:
                        if _is_gzip(p):
                            problems.append(
                                f"{what}: {p!r} is gzip-compressed; a file input reads "
                                "plain files (use kind: replay or vigil replay, which read "
                                ".gz, or decompress it)"
                            )
    return problems


def check_inputs(cfg: VigilConfig, flows: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` listing every input file problem of ``flows``."""
    problems = input_problems(cfg, flows)
    if problems:
        raise ConfigError("\n".join(problems))


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


#: Allocations between young collections while a flow runs (Python's default is 700).
#: A flow allocates and drops a few objects per line, so at 700 the collector ran every
#: few dozen lines and walked the young objects of each batch again and again. Set by
#: :func:`flow_heap` while a flow runs: the security flow from the bus took 26% less CPU per
#: line (bench/bus.py, 1 process: 17.6 -> 13.1 us). Cycles are rare in the flows, so
#: collecting them less often holds little memory (at most this many young objects).
GC_GEN0_THRESHOLD = 50_000


@contextmanager
def flow_heap() -> Iterator[None]:
    """The garbage collector's settings while a flow runs, restored after.

    - What start-up allocated (imports, models, config) is frozen out of its sight: full
      collections of a long-running flow otherwise walk those ~200k objects again and
      again (about 20% of the security flow's CPU, by py-spy).
    - Young collections run every :data:`GC_GEN0_THRESHOLD` allocations instead of 700.

    New objects are still collected. The benchmarks run their flows in it too, so that
    they measure what ``vigil run`` does.
    """
    gc.collect()
    gc.freeze()
    old = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, old[1], old[2])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)


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
    with flow_heap():
        _execute(flow, workers, epoch, recovery_dir, process_id, addresses)


def _execute(
    flow: Dataflow,
    workers: int,
    epoch: timedelta | None,
    recovery_dir: str | None,
    process_id: int | None,
    addresses: Sequence[str] | None,
) -> None:
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
    """Run flows to completion (or until Ctrl-C/SIGTERM, for live inputs); return a summary.

    Process ``process_id`` of a cluster serves metrics on the base port + ``process_id``.
    """
    from vigil.flows.main import build_flows

    check_inputs(cfg, flows)
    stdout = out or sys.stdout
    status = StatusLine(sys.stderr)
    printer = AlertPrinter(stdout, status)
    flow, io = build_flows(flows, cfg, on_alert=printer, speed_override=speed_override)
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
        with graceful_stop(), Progress(Totals(io.metrics), sys.stderr, status=status) as prog:
            execute(
                flow,
                workers,
                recovery_dir=recovery_dir,
                snapshot_interval_s=snapshot_interval_s,
                process_id=process_id,
                addresses=addresses,
            )
            if follow and stop_metrics is not None and not stop_requested():
                print(
                    "replay finished; serving metrics until interrupted (Ctrl-C)",
                    file=sys.stderr,
                )
                wait_for_stop()
        summary = prog.summary()
        summary["alerts"] = printer.count
        if stop_requested():
            summary["interrupted"] = True
            summary["signal"] = stop_signal()
    except KeyboardInterrupt:  # a second Ctrl-C: stop without waiting for the inputs
        summary = {"interrupted": True, "aborted": True, "alerts": printer.count}
    finally:
        if stop_metrics is not None:
            stop_metrics()
    return summary


def run_hints(summary: dict[str, Any], fmt: str | None = None) -> list[str]:
    """What to try next, from a summary (empty when the run looks fine)."""
    lines, dead = summary.get("lines", 0), summary.get("dead_lettered", 0)
    if summary.get("interrupted"):
        return []
    if lines and dead >= lines:
        what = f"are these files really --format {fmt}" if fmt else "is the input's format right"
        return [f"every line was dead-lettered: {what}? The dead-letter file says why"]
    if not lines:
        return ["no lines were read: are the files empty?"]
    return []


def failed(summary: dict[str, Any]) -> bool:
    """A run that did nothing useful: no lines, or every line dead-lettered."""
    if summary.get("interrupted"):
        return False
    lines = summary.get("lines", 0)
    return not lines or summary.get("dead_lettered", 0) >= lines
