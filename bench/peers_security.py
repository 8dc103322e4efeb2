"""The security flow beside the tools a site runs today: CrowdSec and fail2ban, same files.

    python bench/peers_security.py [--datasets DIR] [--throughput-lines 100000] [--repeats 3]
                                   [--crowdsec BIN] [--fail2ban-regex BIN] [--slice N]

On each labelled SSH log (ssh_auth_elastic ``auth.log``, ssh_auth_loghub ``OpenSSH_2k.log``
and ``Linux_2k.log``), in this one run:

- **vigil**: ``vigil replay FILE --format ssh --year Y`` with the default rules, the alerts a
  user gets (:func:`vigil.flows.evaluation.alerts.replay_alerts`, as ``vigil backtest
  --security``);
- **crowdsec**: CrowdSec's replay mode with the ``ssh-bf`` and ``ssh-slow-bf`` scenarios its
  package ships, in a private configuration (``bench/peers_tools.py``); a ban lasts 4 h;
- **fail2ban**: ``fail2ban-regex`` with the ``sshd`` filter, then the jail's defaults
  (``maxretry`` 5, ``findtime`` 10 min, ``bantime`` 10 min) on the matched failures.

All three are scored by :func:`vigil.flows.evaluation.alerts.score`, the scoring of
``vigil backtest --security``: a ban (or alert) *covers* an episode of the labels when it
names the episode's source and its interval overlaps [start, end + 5 min]; an episode is
*found* when something covers it; a *false alert* covers no episode.

Speed is wall time of the tool's process, measured on each file as it is (startup included,
which dominates a 2,000-line file) and on a longer backlog made of shifted copies of the
elastic log (``--throughput-lines``, about 100k lines by default; 0 skips it). On the backlog
each tool also runs on its first 50 lines, which costs it its startup and little else; the
*steady* rate ``(N - 50) / (t_backlog - t_50)`` is what it sustains once started, as on a
live stream. The ratios are to Vigil's rate.

It prints a table per file, the episodes each tool found that another missed (their
sources and start times), each tool's false alerts, and ends with one JSON line:
``<tool>_episodes``, ``<tool>_false_alerts`` (totals over the files) and
``<tool>_lines_per_s`` (the steady rate on the backlog, or the rate on the files when the
backlog is skipped) for vigil, crowdsec and fail2ban, ``None`` for a peer that was skipped;
``<tool>_lines_per_s_wall`` (backlog, startup included) and ``<tool>_lines_per_s_files``
(the three files) beside them; per-file figures under ``per_file``. A missing peer is
skipped with one line; the exit code is 0 whatever the peers do.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers_tools  # noqa: E402
from vigil.flows.evaluation.alerts import (  # noqa: E402
    Alert,
    Labels,
    ReplayFailed,
    load_labels,
    replay_alerts,
    score,
)

TOOLS = ("vigil", "crowdsec", "fail2ban")


@dataclass(frozen=True)
class BenchFile:
    name: str
    log: Path
    labels: Path
    year: int  # the labels' year of the syslog lines


def bench_files(datasets: Path) -> list[BenchFile]:
    """The three labelled SSH logs under ``datasets/security``."""
    sec = datasets / "security"
    lh = sec / "ssh_auth_loghub"
    return [
        BenchFile(
            "elastic",
            sec / "ssh_auth_elastic" / "auth.log",
            sec / "ssh_auth_elastic" / "labels" / "attack_episodes.csv",
            2017,
        ),
        BenchFile(
            "openssh_2k",
            lh / "OpenSSH_2k.log",
            lh / "labels" / "OpenSSH_2k_attack_episodes.csv",
            2000,
        ),
        BenchFile(
            "linux_2k", lh / "Linux_2k.log", lh / "labels" / "Linux_2k_attack_episodes.csv", 2005
        ),
    ]


def sliced(f: BenchFile, n: int, folder: Path) -> BenchFile:
    """The first ``n`` lines of ``f`` and the episodes that end within them."""
    log = folder / f"{f.name}.log"
    with f.log.open() as src, log.open("w") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)
    labels = folder / f"{f.name}_episodes.csv"
    with f.labels.open(newline="") as src, labels.open("w", newline="") as dst:
        rows = csv.DictReader(src)
        out = csv.DictWriter(dst, fieldnames=list(rows.fieldnames or ()))
        out.writeheader()
        out.writerows(r for r in rows if int(r["last_line_no"]) <= n)
    return BenchFile(f.name, log, labels, f.year)


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def shifted_copies(log: Path, year: int, lines: int, out: Path) -> int:
    """Write copies of a syslog file, each moved later by its span, until ``lines`` lines.

    The copies stay in order and inside ``year`` (a syslog line has no year), so every tool
    reads a real-looking backlog. Returns the number of lines written.
    """
    text = log.read_text().splitlines(keepends=True)

    def when(line: str) -> datetime:
        return datetime.strptime(f"{year} {line[:15]}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)

    first, last = when(text[0]), when(text[-1])
    span = last - first + timedelta(days=1)
    copies = max(1, -(-lines // len(text)))
    start = datetime(year, 1, 1, tzinfo=UTC) - first
    if copies * span > timedelta(days=364):
        copies = max(1, int(timedelta(days=364) / span))
    written = 0
    with out.open("w") as fh:
        for k in range(copies):
            shift = start + k * span
            for line in text:
                t = when(line) + shift
                fh.write(f"{t:%b} {t.day:>2} {t:%H:%M:%S}{line[15:]}")
                written += 1
    return written


def run_vigil(log: Path, year: int) -> tuple[list[Alert], float]:
    t0 = time.perf_counter()
    alerts, _summary = replay_alerts(log, "ssh", year=year)
    return alerts, time.perf_counter() - t0


def make_runners(crowdsec_bin: str, fail2ban_bin: str) -> dict[str, Callable[..., Any]]:
    """tool -> f(log, year) returning (alerts, seconds); raises the peers' errors."""

    def crowdsec(log: Path, year: int) -> tuple[list[Alert], float]:
        r = peers_tools.run_crowdsec(log, year, crowdsec_bin)
        return list(r.alerts), r.seconds

    def fail2ban(log: Path, year: int) -> tuple[list[Alert], float]:
        r = peers_tools.run_fail2ban(log, year, fail2ban_bin)
        return list(r.alerts), r.seconds

    return {"vigil": run_vigil, "crowdsec": crowdsec, "fail2ban": fail2ban}


def found_episodes(alerts: Sequence[Alert], labels: Labels) -> set[int]:
    """Indices of the episodes some alert covers (the rule of :func:`score`)."""
    mine = [a for a in alerts if a.name in labels.alertnames]
    return {i for i, ep in enumerate(labels.episodes) if any(labels.covers(a, ep) for a in mine)}


def false_alerts(alerts: Sequence[Alert], labels: Labels) -> list[Alert]:
    """The alerts that cover no episode (the false alerts of :func:`score`)."""
    mine = [a for a in alerts if a.name in labels.alertnames]
    return [a for a in mine if not any(labels.covers(a, ep) for ep in labels.episodes)]


def _when(ts: float) -> str:
    return f"{datetime.fromtimestamp(ts, UTC):%m-%d %H:%M}"


def _rate(lines: int, seconds: float | None) -> float | None:
    return round(lines / seconds, 1) if seconds else None


def run_bench(
    files: Sequence[BenchFile],
    runners: dict[str, Callable[..., Any]],
    *,
    throughput_lines: int = 100_000,
    repeats: int = 3,
    out: Any = sys.stdout,
) -> dict[str, Any]:
    """Run every tool on every file, print the tables; the figures of the JSON line."""
    skipped: dict[str, str] = {}
    per_file: dict[str, dict[str, Any]] = {}
    totals: dict[str, dict[str, float]] = {
        t: {"episodes": 0, "false_alerts": 0, "lines": 0, "seconds": 0.0} for t in TOOLS
    }
    for f in files:
        labels = load_labels(f.labels)
        lines = count_lines(f.log)
        rows: dict[str, Any] = {}
        found: dict[str, set[int]] = {}
        false: dict[str, list[Alert]] = {}
        for tool in TOOLS:
            if tool in skipped:
                continue
            try:
                alerts, secs = runners[tool](f.log, f.year)
            except peers_tools.PeerUnavailable as ex:
                skipped[tool] = str(ex)
                print(f"{tool}: skipped: {ex}", file=out)
                continue
            except (peers_tools.PeerFailed, ReplayFailed, OSError) as ex:
                print(f"{tool}: failed on {f.name}: {' '.join(str(ex).split())}", file=out)
                continue
            except Exception as ex:  # a peer never fails the bench
                if tool == "vigil":
                    raise
                print(f"{tool}: failed on {f.name}: {type(ex).__name__}: {ex}", file=out)
                continue
            s = score(alerts, labels)
            found[tool] = found_episodes(alerts, labels)
            false[tool] = false_alerts(alerts, labels)
            rows[tool] = {
                "episodes": s.found,
                "of": s.episodes,
                "false_alerts": s.false_alerts,
                "alerts": s.alerts,
                "lines_per_s": _rate(lines, secs),
            }
            tot = totals[tool]
            tot["episodes"] += s.found
            tot["false_alerts"] += s.false_alerts
            tot["lines"] += lines
            tot["seconds"] += secs
        per_file[f.name] = rows
        _print_file(f, lines, rows, out)
        _print_missed(labels, found, out)
        for tool, alerts in false.items():
            if alerts:
                srcs = ", ".join(f"{a.entity}@{_when(a.start)}" for a in alerts)
                print(f"  {tool} false alerts ({len(alerts)}): {srcs}", file=out)
    steady = (
        _throughput(files, runners, skipped, throughput_lines, out, repeats)
        if throughput_lines
        else {}
    )
    result: dict[str, Any] = {}
    for tool in TOOLS:
        ok = tool not in skipped and tool in {t for rows in per_file.values() for t in rows}
        tot = totals[tool]
        files_rate = _rate(int(tot["lines"]), tot["seconds"]) if ok else None
        result[f"{tool}_episodes"] = int(tot["episodes"]) if ok else None
        result[f"{tool}_false_alerts"] = int(tot["false_alerts"]) if ok else None
        backlog = steady.get(tool, {}) if ok else {}
        result[f"{tool}_lines_per_s"] = backlog.get("steady", files_rate)
        result[f"{tool}_lines_per_s_wall"] = backlog.get("wall")
        result[f"{tool}_lines_per_s_files"] = files_rate
    result["episodes"] = sum(len(load_labels(f.labels).episodes) for f in files)
    result["skipped"] = skipped
    result["per_file"] = per_file
    return result


def _ratio(rate: float | None, base: float | None) -> str:
    return f"{rate / base:.2f}" if rate and base else "n/a"


def _print_file(f: BenchFile, lines: int, rows: dict[str, Any], out: Any) -> None:
    print(f"\n{f.name} ({f.log.name}, {lines:,} lines)", file=out)
    print(
        f"{'tool':10} {'episodes':>10} {'false':>6} {'alerts':>7} {'lines/s':>9} {'vs vigil':>9}",
        file=out,
    )
    base = rows.get("vigil", {}).get("lines_per_s")
    for tool, r in rows.items():
        found = f"{r['episodes']}/{r['of']}"
        rate = r["lines_per_s"]
        print(
            f"{tool:10} {found:>10} {r['false_alerts']:>6} {r['alerts']:>7} "
            f"{rate or 0:>9,.0f} {_ratio(rate, base):>9}",
            file=out,
        )


def _print_missed(labels: Labels, found: dict[str, set[int]], out: Any) -> None:
    for a in found:
        for b in found:
            if a == b:
                continue
            only = sorted(found[a] - found[b])
            if only:
                eps = [labels.episodes[i] for i in only]
                srcs = ", ".join(f"{ep.src}@{_when(ep.start)}" for ep in eps)
                print(f"  {a} found, {b} missed ({len(only)}): {srcs}", file=out)


def _throughput(
    files: Sequence[BenchFile],
    runners: dict[str, Callable[..., Any]],
    skipped: dict[str, str],
    lines: int,
    out: Any,
    repeats: int = 3,
) -> dict[str, dict[str, float]]:
    """Lines/s of each tool on a longer backlog: wall, and steady (its startup taken off).

    The steady rate is ``(N - n) / (t_N - t_n)`` between the backlog (``N`` lines) and a
    run on its first ``n`` = 50 lines, which costs each tool its startup and little else.
    """
    base = files[0]
    rates: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-peers-") as tmp:
        log = Path(tmp) / "backlog.log"
        n = shifted_copies(base.log, base.year, lines, log)
        small = sliced(BenchFile("startup", log, base.labels, base.year), 50, Path(tmp)).log
        print(f"\nthroughput: {n:,} lines (shifted copies of {base.log.name})", file=out)
        secs: dict[str, list[float]] = {}
        secs0: dict[str, list[float]] = {}
        failed: set[str] = set(skipped)
        for _ in range(repeats):  # tools in turn, the best run counts: the machine may be busy
            for tool in TOOLS:
                if tool in failed:
                    continue
                try:
                    secs.setdefault(tool, []).append(runners[tool](log, base.year)[1])
                    secs0.setdefault(tool, []).append(runners[tool](small, base.year)[1])
                except (
                    peers_tools.PeerFailed,
                    peers_tools.PeerUnavailable,
                    ReplayFailed,
                    OSError,
                ) as ex:
                    print(f"{tool}: failed on the backlog: {' '.join(str(ex).split())}", file=out)
                    failed.add(tool)
        for tool in TOOLS:
            if tool in failed:
                continue
            best, best0 = min(secs[tool]), min(secs0[tool])
            rates[tool] = {
                "wall": round(n / best, 1),
                "startup_s": round(best0, 2),
                "steady": round((n - 50) / max(best - best0, 1e-3), 1),
            }
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(best of {repeats} runs each, tools in turn; load average {load})", file=out)
    head = f"{'tool':10} {'wall lines/s':>13} {'vs vigil':>9} {'startup s':>10}"
    print(f"{head} {'steady lines/s':>15} {'vs vigil':>9}", file=out)
    vw = rates.get("vigil", {}).get("wall")
    vs = rates.get("vigil", {}).get("steady")
    for tool, r in rates.items():
        print(
            f"{tool:10} {r['wall']:>13,.0f} {_ratio(r['wall'], vw):>9} {r['startup_s']:>10.2f} "
            f"{r['steady']:>15,.0f} {_ratio(r['steady'], vs):>9}",
            file=out,
        )
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--crowdsec", default="crowdsec", help="CrowdSec binary")
    ap.add_argument("--fail2ban-regex", default="fail2ban-regex", help="fail2ban-regex binary")
    ap.add_argument(
        "--throughput-lines",
        type=int,
        default=100_000,
        help="lines of the longer replay for lines/s (0: measure on the files only)",
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="runs per tool on the backlog (the best counts)"
    )
    ap.add_argument("--slice", type=int, default=0, help="only the first N lines of each file")
    args = ap.parse_args(argv)
    files = bench_files(Path(args.datasets))
    missing = [str(f.log) for f in files if not f.log.is_file() or not f.labels.is_file()]
    if missing:
        print(f"peers_security: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    runners = make_runners(args.crowdsec, args.fail2ban_regex)
    with tempfile.TemporaryDirectory(prefix="vigil-peers-slice-") as tmp:
        if args.slice:
            files = [sliced(f, args.slice, Path(tmp)) for f in files]
        t0 = time.perf_counter()
        result = run_bench(
            files, runners, throughput_lines=args.throughput_lines, repeats=max(1, args.repeats)
        )
    print(f"\nelapsed {time.perf_counter() - t0:.1f} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
