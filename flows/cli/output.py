"""What ``vigil`` prints for a person: logs, the alert lines, the live status line and the
end-of-run summary.

On a terminal: readable log lines, a status line that alert lines never collide with (it
is cleared first), and a short summary table. Otherwise (a pipe, a service manager): JSON
log lines and a one-line JSON summary (``{"summary": {...}}``) for log shippers and tests.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from vigil.sinks.prometheus import FlowMetrics

log = logging.getLogger("vigil")

SEVERITY_COLOURS = {"critical": "\033[1;31m", "high": "\033[31m", "warning": "\033[33m"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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
    root.setLevel(level.upper())
    # httpx logs every request at INFO; delivery outcomes are in our own metrics.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class StatusLine:
    """The one live line at the bottom of a terminal; writers clear it before printing."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self._shown = False

    def show(self, text: str) -> None:
        with self.lock:
            print(f"\r\033[K{text}", end="", file=self.stream, flush=True)
            self._shown = True

    def clear(self) -> None:
        """Clear the live line (call with :attr:`lock` held)."""
        if self._shown:
            print("\r\033[K", end="", file=self.stream, flush=True)
            self._shown = False


def _when(value: Any) -> str:
    """A fixed-width UTC time (``2017-03-04T05:06:07Z``) from an ISO string or epoch."""
    try:
        if isinstance(value, int | float):
            dt = datetime.fromtimestamp(float(value), UTC)
        else:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        return f"{value!s:20}"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class AlertPrinter:
    """Print each alert as one line as it happens (and count them for the summary)."""

    def __init__(self, stream: TextIO, status: StatusLine | None = None) -> None:
        self.stream = stream
        self.colour = stream.isatty()
        self.status = status
        self.count = 0
        self._lock = status.lock if status is not None else threading.Lock()

    def __call__(self, alert: dict[str, Any]) -> None:
        lab, ann = alert["labels"], alert["annotations"]
        sev = lab.get("severity", "")
        tag = f"{sev.upper():8}"
        if self.colour and sev in SEVERITY_COLOURS:
            tag = f"{SEVERITY_COLOURS[sev]}{tag}\033[0m"
        line = (
            f"{_when(alert['startsAt'])}  {tag} {lab.get('alertname', ''):28} "
            f"{ann.get('description', ann.get('summary', ''))}"
        )
        with self._lock:
            self.count += 1
            if self.status is not None and self.status.stream is self.stream:
                self.status.clear()
            print(line, file=self.stream, flush=True)


def alert_printer(stream: TextIO) -> Callable[[dict[str, Any]], None]:
    """Print each alert as one line as it happens."""
    return AlertPrinter(stream)


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

    @property
    def total_quality(self) -> int:
        return sum(getattr(m, "total_quality", 0) for m in self._metrics.values())

    @property
    def total_events(self) -> int:
        return sum(getattr(m, "total_events", 0) for m in self._metrics.values())


class Progress:
    """Events/s and detections so far: a live line on a terminal, a log line otherwise."""

    def __init__(
        self,
        metrics: Totals,
        stream: TextIO,
        interval_s: float = 1.0,
        status: StatusLine | None = None,
    ) -> None:
        self.metrics = metrics
        self.stream = stream
        self.status = status if status is not None else StatusLine(stream)
        self.tty = self.status.tty
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
            with self.status.lock:
                self.status.clear()

    def _run(self) -> None:
        last_n, last_t = 0, time.monotonic()
        while not self._stop.wait(self.interval_s):
            m = self.metrics
            now = time.monotonic()
            rate = (m.total_lines - last_n) / max(now - last_t, 1e-9)
            last_n, last_t = m.total_lines, now
            if self.tty:
                self.status.show(
                    f"  {m.total_lines:>10,} lines  {rate:>9,.0f} lines/s  "
                    f"{m.total_detections:>5} detections  {m.total_dead:>6} dead-lettered"
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
            **({"data_quality": m.total_quality} if m.total_quality else {}),
            "events": m.total_events,
            "detections": m.total_detections,
            "seconds": round(secs, 2),
            "lines_per_s": round(m.total_lines / max(secs, 1e-9), 1),
        }


_ROWS = (
    ("lines", "lines read"),
    ("detections", "detections"),
    ("alerts", "alerts printed"),
    ("dead_lettered", "dead-lettered"),
    ("data_quality", "set aside (data quality)"),
    ("events", "events derived"),
    ("seconds", "seconds"),
    ("lines_per_s", "lines/s"),
    ("webhook_deliveries_verified", "webhook deliveries (signature verified)"),
    ("webhook_deliveries_rejected", "webhook deliveries rejected"),
)


def print_summary(
    summary: dict[str, Any],
    *,
    stream: TextIO | None = None,
    as_json: bool | None = None,
    where: dict[str, str] | None = None,
    hints: list[str] | None = None,
) -> None:
    """The end-of-run summary: a short table on a terminal, else one JSON line.

    ``where`` names the files things went to (alerts, dead letters); ``hints`` are what
    to try next. Both go into the JSON too (``files``, ``hints``).
    """
    s = stream or sys.stderr
    use_json = (not s.isatty()) if as_json is None else as_json
    if use_json:
        out = dict(summary)
        if where:
            out.setdefault("files", dict(where))
        if hints:
            out["hints"] = list(hints)
        print(json.dumps({"summary": out}), file=s, flush=True)
        return
    lines = ["", "summary"]
    if summary.get("interrupted"):
        lines.append("  stopped by a signal before the inputs ended")
    for key, label in _ROWS:
        if key in summary:
            v = summary[key]
            val = f"{v:,}" if isinstance(v, int) else f"{v:,.1f}" if isinstance(v, float) else v
            lines.append(f"  {label:40} {val}")
    for what, path in (where or {}).items():
        lines.append(f"  {what + ' in':40} {path}")
    for h in hints or ():
        lines.append(f"  next: {h}")
    print("\n".join(lines), file=s, flush=True)
