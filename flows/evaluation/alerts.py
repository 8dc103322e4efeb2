"""Alert-level backtest of the security flow: ``vigil backtest --security FILE --labels CSV``.

::

    vigil backtest --security auth.log --labels attack_episodes.csv [--format ssh] [--year 2017]

The log is replayed with ``vigil replay`` in a subprocess, so the alerts scored are the ones
a user gets: the real CLI, the security flow and the whole alerting pipeline, with the
default rules (or the ``security`` section of ``--config``) and nothing delivered anywhere
but a temporary folder. An alert is the interval ``[startsAt, endsAt]``: ``startsAt`` from
the alerts file, ``endsAt`` from the ``firing->resolved`` record of the replay's
``audit.jsonl`` (the replay resolves whatever still fires when the log ends; without that
record the alert's ``last_seen`` is used).

Labels are episodes ``(source, start, end)``; the CSV header says which kind:

- ``src,start,end,kind`` (ssh_auth_elastic, ssh_auth_loghub): rows whose ``kind`` starts
  with ``ssh``, scored against ``ssh_brute_force``, ``ssh_user_enumeration`` and
  ``ssh_success_after_failures`` alerts. An alert *covers* an episode when its entity is the
  episode's source and its interval overlaps ``[start, end + 300 s]``.
- ``scanner,start_ts,end_ts`` (zeek_nmap_portscan): scored against ``port_scan`` alerts,
  with ``[start - 600 s, end + 300 s]``: a scan alert raised earlier in the same
  10-minute rule window covers the episode.

Figures: an episode is *found* when an alert covers it; *alerts per episode* counts the
alerts covering each found episode (mean and max; a missed episode is in the recall, not
here); a *false alert* covers no episode; *time to detect* is the first covering alert's
``startsAt`` minus the episode start, clamped at 0 (median and max over found episodes).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml  # type: ignore[import-untyped]
from vigil.flows.errors import VigilError

SSH_ALERTS = frozenset({"ssh_brute_force", "ssh_user_enumeration", "ssh_success_after_failures"})
SCAN_ALERTS = frozenset({"port_scan"})


class ReplayFailed(VigilError):
    """``vigil replay`` exited with an error; the message is its last line of output."""


@dataclass(frozen=True)
class Episode:
    src: str
    start: float  # epoch seconds
    end: float


@dataclass(frozen=True)
class Alert:
    name: str
    entity: str
    start: float  # startsAt, epoch seconds
    end: float  # endsAt


@dataclass(frozen=True)
class Labels:
    """Episodes of one label file and how alerts are matched to them."""

    kind: str  # "ssh" or "scan"
    episodes: tuple[Episode, ...]
    alertnames: frozenset[str]
    before_s: float  # an alert may end this long before an episode starts and still cover it
    after_s: float  # ... or start this long after it ends

    @property
    def replay_format(self) -> str:
        """The ``vigil replay --format`` of the logs these labels describe."""
        return "ssh" if self.kind == "ssh" else "zeek"

    def covers(self, a: Alert, ep: Episode) -> bool:
        """Whether alert ``a`` overlaps episode ``ep`` (with the slack), for its source."""
        return (
            a.entity == ep.src
            and a.start <= ep.end + self.after_s
            and a.end >= ep.start - self.before_s
        )


@dataclass(frozen=True)
class AlertScore:
    """The alert-level figures of one backtest (see the module docstring)."""

    labels: str
    episodes: int
    found: int
    alerts: int
    false_alerts: int
    alerts_per_episode_mean: float | None  # over found episodes
    alerts_per_episode_max: int
    ttd_median_s: float | None
    ttd_max_s: float | None

    @property
    def recall(self) -> float | None:
        return self.found / self.episodes if self.episodes else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recall": self.recall}


def _iso(s: str) -> float:
    dt = datetime.fromisoformat(s)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()  # labels are UTC


def load_labels(path: str | Path) -> Labels:
    """Read an episode CSV; its header tells SSH episodes from Nmap scan episodes.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the header is neither kind, or a row has an unreadable time.
    """
    p = Path(path)
    if not p.is_file():
        msg = f"labels file not found: {p}"
        raise FileNotFoundError(msg)
    with p.open(newline="") as fh:
        rows = csv.DictReader(fh)
        cols = set(rows.fieldnames or ())
        try:
            if {"src", "start", "end", "kind"} <= cols:
                eps = [
                    Episode(r["src"], _iso(r["start"]), _iso(r["end"]))
                    for r in rows
                    if r["kind"].startswith("ssh")
                ]
                return Labels("ssh", tuple(eps), SSH_ALERTS, before_s=0.0, after_s=300.0)
            if {"scanner", "start_ts", "end_ts"} <= cols:
                eps = [
                    Episode(r["scanner"], float(r["start_ts"]), float(r["end_ts"])) for r in rows
                ]
                return Labels("scan", tuple(eps), SCAN_ALERTS, before_s=600.0, after_s=300.0)
        except (ValueError, TypeError) as ex:
            msg = f"{p}, line {rows.line_num}: {ex}"
            raise ValueError(msg) from ex
    msg = (
        f"{p}: not an episode file (header {sorted(cols)!r}; expected columns "
        "src,start,end,kind or scanner,start_ts,end_ts)"
    )
    raise ValueError(msg)


def score(alerts: Iterable[Alert], labels: Labels) -> AlertScore:
    """Score alerts against episodes; alerts of other names are ignored.

    Examples
    --------
    >>> labels = Labels("ssh", (Episode("1.2.3.4", 100.0, 160.0),), SSH_ALERTS, 0.0, 300.0)
    >>> alerts = [
    ...     Alert("ssh_brute_force", "1.2.3.4", 104.0, 760.0),
    ...     Alert("ssh_user_enumeration", "1.2.3.4", 110.0, 710.0),
    ...     Alert("ssh_brute_force", "9.9.9.9", 100.0, 700.0),  # no episode of its source
    ...     Alert("volume_anomaly", "ssh.events", 100.0, 200.0),  # not scored
    ... ]
    >>> s = score(alerts, labels)
    >>> s.found, s.alerts, s.false_alerts, s.alerts_per_episode_max, s.ttd_median_s
    (1, 3, 1, 2, 4.0)
    """
    mine = [a for a in alerts if a.name in labels.alertnames]
    per_episode = [[a for a in mine if labels.covers(a, ep)] for ep in labels.episodes]
    counts = [len(hits) for hits in per_episode if hits]
    ttd = [
        max(0.0, min(a.start for a in hits) - ep.start)
        for ep, hits in zip(labels.episodes, per_episode, strict=True)
        if hits
    ]
    false = sum(not any(labels.covers(a, ep) for ep in labels.episodes) for a in mine)
    return AlertScore(
        labels=labels.kind,
        episodes=len(labels.episodes),
        found=len(counts),
        alerts=len(mine),
        false_alerts=false,
        alerts_per_episode_mean=round(statistics.fmean(counts), 4) if counts else None,
        alerts_per_episode_max=max(counts, default=0),
        # startsAt has whole seconds, so a tenth of a second is all the precision there is
        ttd_median_s=round(statistics.median(ttd), 1) if ttd else None,
        ttd_max_s=round(max(ttd), 1) if ttd else None,
    )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_alerts(alerts_file: Path, audit_file: Path) -> list[Alert]:
    """Alerts that started firing (the alerts file), ended by their resolved audit record."""
    ends = {
        (r.get("fingerprint"), r.get("startsAt")): _iso(r["endsAt"])
        for r in _jsonl(audit_file)
        if r.get("from") == "firing" and r.get("to") == "resolved"
    }
    out = []
    for r in _jsonl(alerts_file):
        if r.get("update") or r.get("status", "firing") != "firing":
            continue  # repeats and resolutions of an alert already counted
        labels, notes = r["labels"], r.get("annotations", {})
        start = _iso(r["startsAt"])
        end = ends.get((r.get("fingerprint"), r["startsAt"]))
        if end is None:  # never resolved: it lasts until its last evidence
            end = _iso(notes["last_seen"]) if "last_seen" in notes else start
        out.append(Alert(labels["alertname"], labels.get("entity", ""), start, end))
    return out


def replay_alerts(
    log: str | Path,
    fmt: str,
    *,
    year: int | None = None,
    security: dict[str, Any] | None = None,
) -> tuple[list[Alert], dict[str, Any]]:
    """Run ``vigil replay`` on ``log`` in a temporary folder; its alerts and its summary.

    Parameters
    ----------
    log
        The recorded log file.
    fmt
        ``vigil replay --format``.
    year
        Year of syslog lines, which carry none.
    security
        A ``security`` configuration section (rules); ``inputs`` in it are ignored.

    Raises
    ------
    FileNotFoundError
        If ``log`` does not exist.
    ReplayFailed
        If the replay exits with an error.
    """
    if not Path(log).is_file():
        msg = f"log file not found: {log}"
        raise FileNotFoundError(msg)
    sec = {k: v for k, v in (security or {}).items() if k != "inputs"}
    with tempfile.TemporaryDirectory(prefix="vigil-backtest-") as tmp:
        work = Path(tmp)
        cfg: dict[str, Any] = {"metrics": {"enabled": False}}  # binds no port
        if sec:
            cfg["security"] = sec
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        argv = [sys.executable, "-m", "vigil.flows.cli", "replay", str(Path(log).resolve())]
        argv += ["--format", fmt, "--alerts", "alerts.jsonl", "--config", "config.yaml"]
        if year is not None:
            argv += ["--year", str(year)]
        proc = subprocess.run(
            argv,
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 0:
            last = lines[-1] if lines else f"exit code {proc.returncode}"
            msg = f"vigil replay failed: {last}"
            raise ReplayFailed(msg)
        summary: dict[str, Any] = {}
        for line in reversed(lines):
            if line.startswith('{"summary"'):
                summary = json.loads(line)["summary"]
                break
        alerts = read_alerts(work / "alerts.jsonl", work / "alerting" / "audit.jsonl")
    return alerts, summary


def print_score(s: AlertScore, stream: TextIO = sys.stdout) -> None:
    """The figures as a two-column table."""

    def num(x: float | None, fmt: str, unit: str = "") -> str:
        return "n/a" if x is None else f"{x:{fmt}}{unit}"

    rows = [
        ("episodes", str(s.episodes)),
        ("found", str(s.found)),
        ("recall", num(s.recall, ".1%")),
        ("alerts", str(s.alerts)),
        ("alerts/episode mean", num(s.alerts_per_episode_mean, ".2f")),
        ("alerts/episode max", str(s.alerts_per_episode_max)),
        ("false alerts", str(s.false_alerts)),
        ("time to detect median", num(s.ttd_median_s, ".0f", " s")),
        ("time to detect max", num(s.ttd_max_s, ".0f", " s")),
    ]
    for name, value in rows:
        print(f"{name:24}{value:>10}", file=stream)


def cmd_backtest_alerts(args: argparse.Namespace) -> int:
    """``vigil backtest --security FILE --labels CSV``: the table, then a JSON line on stderr."""
    try:
        if not args.labels:
            msg = "--security needs --labels (an episode CSV)"
            raise ValueError(msg)
        labels = load_labels(args.labels)
        security = None
        if args.config:
            text = Path(args.config).read_text()
            security = (yaml.safe_load(text) or {}).get("security")
        fmt = args.format or labels.replay_format
        alerts, replay = replay_alerts(args.security, fmt, year=args.year, security=security)
    except (FileNotFoundError, ValueError) as ex:
        print(f"vigil backtest: {ex}", file=sys.stderr)
        return 2
    except (ReplayFailed, OSError, yaml.YAMLError) as ex:
        print(f"vigil backtest: {' '.join(str(ex).split())}", file=sys.stderr)
        return 1
    s = score(alerts, labels)
    names = ", ".join(sorted(labels.alertnames))
    print(f"{Path(args.security).name} against {Path(args.labels).name} ({names})")
    print_score(s)
    out = {
        **s.as_dict(),
        "lines": replay.get("lines"),
        "dead_lettered": replay.get("dead_lettered"),
    }
    print(json.dumps({"summary": out}), file=sys.stderr)
    return 0
