"""Run the security flow's peers, CrowdSec and fail2ban, on a log file; their bans as alerts.

Used by ``bench/peers_security.py``. Each peer's bans become
:class:`vigil.flows.evaluation.alerts.Alert` values (alertname ``ssh_brute_force``, entity
the banned source, ``[ban start, ban end]``), so they are scored by the same
:func:`~vigil.flows.evaluation.alerts.score` as ``vigil backtest --security``.

- **CrowdSec** (Debian package ``crowdsec``) runs in replay ("time-machine") mode,
  ``crowdsec -c CONFIG -dsn file://LOG -type syslog -no-api``, with a private configuration
  generated in a temporary folder: the parsers ``syslog-logs``, ``sshd-logs``,
  ``dateparse-enrich`` and ``whitelists`` and the scenarios ``ssh-bf`` and ``ssh-slow-bf``
  (each file holds two: plain and user-enumeration), all linked from the hub the package
  ships under ``/usr/share/crowdsec/hub``, and the grok patterns it ships under
  ``/etc/crowdsec/patterns`` copied. Nothing else under ``/etc/crowdsec`` or
  ``/var/lib/crowdsec`` is read or written; no Central API. With ``-no-api`` the agent still
  pushes its alerts to a local API: a small receiver in this process plays that part (it
  accepts the watcher login and keeps the alerts posted). An alert's ban starts at its
  overflow (``stop_at``) and lasts the 4 h of the package's default profile. CrowdSec can
  hang at shutdown, so once it has logged ``Acquisition is finished`` it is given until it
  exits or a second passes without a new alert (most of its alerts arrive after that line),
  then stopped; its time ends at its exit or its last alert.
- **fail2ban** (Debian package ``fail2ban``): ``fail2ban-regex -o '<time> <ip>' LOG sshd``
  gives the failures its ``sshd`` filter matches with their times; the jail logic of
  fail2ban's defaults (``maxretry`` 5 failures within ``findtime`` 10 min ban for
  ``bantime`` 10 min; failures of a banned source are not counted, the firewall drops them)
  is applied here by :func:`jail`.

Syslog lines carry no year; each tool guesses one (CrowdSec the current year, fail2ban the
current year or the one before). Times are moved to the year of the labels with
:func:`to_year`, keeping month, day and time. Both tools run with ``TZ=UTC``, like the
labels.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigil.flows.evaluation.alerts import Alert

SSH_ALERT = "ssh_brute_force"
CROWDSEC_HUB = Path("/usr/share/crowdsec/hub")
CROWDSEC_PATTERNS = Path("/etc/crowdsec/patterns")
CROWDSEC_BAN_S = 4 * 3600.0  # the decision of the package's default profile
CROWDSEC_PARSERS = (
    ("s00-raw", "syslog-logs"),
    ("s01-parse", "sshd-logs"),
    ("s02-enrich", "dateparse-enrich"),
    ("s02-enrich", "whitelists"),
)
CROWDSEC_SCENARIOS = ("ssh-bf", "ssh-slow-bf")
FAIL2BAN_MAXRETRY = 5
FAIL2BAN_FINDTIME_S = 600.0
FAIL2BAN_BANTIME_S = 600.0


class PeerUnavailable(Exception):
    """The peer cannot run here (package missing); the message says what is missing."""


class PeerFailed(Exception):
    """The peer ran and failed; the message is its last line of output."""


@dataclass(frozen=True)
class PeerRun:
    """The bans of one run of a peer on one file, and its wall time."""

    alerts: tuple[Alert, ...]
    seconds: float  # wall time: to exit, or (CrowdSec hanging) to its last alert


def to_year(ts: float, year: int) -> float:
    """Epoch seconds ``ts`` (UTC) moved to ``year``, keeping month, day and time.

    >>> to_year(datetime(2026, 12, 10, 7, 27, 58, tzinfo=UTC).timestamp(), 2000)
    976433278.0
    """
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.replace(year=year).timestamp()


def jail(
    failures: Iterable[tuple[str, float]],
    *,
    maxretry: int = FAIL2BAN_MAXRETRY,
    findtime_s: float = FAIL2BAN_FINDTIME_S,
    bantime_s: float = FAIL2BAN_BANTIME_S,
) -> list[Alert]:
    """fail2ban's jail on ``(source, time)`` failures: a ban per ``maxretry`` in ``findtime``.

    A source is banned at its ``maxretry``-th failure within ``findtime_s`` for
    ``bantime_s``; its failure count starts again from zero, and failures while it is banned
    are not counted (the firewall drops them).

    >>> fails = [("1.2.3.4", float(t)) for t in (0, 10, 20, 30, 40, 50, 700, 2000)]
    >>> [(a.entity, a.start, a.end) for a in jail(fails + [("5.6.7.8", 0.0)])]
    [('1.2.3.4', 40.0, 640.0)]
    >>> len(jail([("9.9.9.9", 700.0 * i) for i in range(10)]))  # too slow for findtime
    0
    """
    recent: dict[str, deque[float]] = {}
    banned_until: dict[str, float] = {}
    bans: list[Alert] = []
    for src, t in sorted(failures, key=lambda f: f[1]):
        if t < banned_until.get(src, float("-inf")):
            continue
        q = recent.setdefault(src, deque())
        q.append(t)
        while q and q[0] < t - findtime_s:
            q.popleft()
        if len(q) >= maxretry:
            bans.append(Alert(SSH_ALERT, src, t, t + bantime_s))
            banned_until[src] = t + bantime_s
            q.clear()
    return bans


def _missing(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        msg = f"`{binary}` not found (install the Debian package `{package}`)"
        raise PeerUnavailable(msg)


def fail2ban_failures(
    log: Path, binary: str = "fail2ban-regex"
) -> tuple[list[tuple[str, float]], float]:
    """The failures fail2ban's ``sshd`` filter matches in ``log`` and the wall time it took.

    Raises
    ------
    PeerUnavailable
        If ``binary`` is not installed.
    PeerFailed
        If it exits with an error.
    """
    _missing(binary, "fail2ban")
    argv = [binary, "--timezone", "UTC", "-o", "<time> <ip>", str(log), "sshd"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, env={**os.environ, "TZ": "UTC"}
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise PeerFailed(lines[-1] if lines else f"exit code {proc.returncode}")
    out = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out.append((parts[1], float(parts[0])))
            except ValueError:
                continue
    return out, seconds


def run_fail2ban(log: Path, year: int, binary: str = "fail2ban-regex") -> PeerRun:
    """fail2ban's bans on ``log`` (see :func:`jail`), with times in ``year``."""
    failures, seconds = fail2ban_failures(log, binary)
    bans = jail((src, to_year(t, year)) for src, t in failures)
    return PeerRun(tuple(bans), seconds)


class _LocalApi(http.server.ThreadingHTTPServer):
    """Stands in for CrowdSec's local API: accepts the watcher's login, keeps its alerts."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LocalApiHandler)
        self.alerts: list[dict[str, Any]] = []
        self.last_alert = 0.0
        self.lock = threading.Lock()


class _LocalApiHandler(http.server.BaseHTTPRequestHandler):
    server: _LocalApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/watchers/login"):
            self._reply({"code": 200, "expire": "2099-01-01T00:00:00Z", "token": "bench"})
        elif self.path.endswith("/alerts"):
            posted = json.loads(body or b"[]")
            with self.server.lock:
                self.server.alerts.extend(posted)
                self.server.last_alert = time.perf_counter()
            self._reply([str(i) for i in range(len(posted))])
        else:
            self._reply({})

    def do_GET(self) -> None:
        self._reply({})


def _crowdsec_config(folder: Path, api_url: str, hub: Path, patterns: Path) -> Path:
    etc = folder / "etc"
    for stage, name in CROWDSEC_PARSERS:
        (etc / "parsers" / stage).mkdir(parents=True, exist_ok=True)
        src = hub / "parsers" / stage / "crowdsecurity" / f"{name}.yaml"
        (etc / "parsers" / stage / f"{name}.yaml").symlink_to(src)
    (etc / "scenarios").mkdir()
    for name in CROWDSEC_SCENARIOS:
        src = hub / "scenarios" / "crowdsecurity" / f"{name}.yaml"
        (etc / "scenarios" / f"{name}.yaml").symlink_to(src)
    shutil.copytree(patterns, etc / "patterns")
    (folder / "data").mkdir()
    (etc / "acquis.yaml").write_text("")
    (etc / "simulation.yaml").write_text("simulation: false\nexclusions: []\n")
    (etc / "local_api_credentials.yaml").write_text(
        f"url: {api_url}\nlogin: bench\npassword: bench\n"
    )
    cfg = {
        "common": {"daemonize": False, "log_media": "stdout", "log_level": "info"},
        "config_paths": {
            "config_dir": f"{etc}/",
            "data_dir": f"{folder / 'data'}/",
            "simulation_path": str(etc / "simulation.yaml"),
            "hub_dir": f"{hub}/",
            "index_path": str(hub / ".index.json"),
        },
        "crowdsec_service": {"acquisition_path": str(etc / "acquis.yaml"), "parser_routines": 1},
        "db_config": {"type": "sqlite", "db_path": str(folder / "data" / "crowdsec.db")},
        "api": {"client": {"credentials_path": str(etc / "local_api_credentials.yaml")}},
        "prometheus": {"enabled": False},
    }
    path = etc / "config.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path


def _iso(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def crowdsec_alerts(posted: Iterable[dict[str, Any]], year: int) -> list[Alert]:
    """Bans from the alerts CrowdSec posted: source IP, ``[stop_at, stop_at + 4 h]``.

    >>> a = {"source": {"ip": "1.2.3.4"}, "stop_at": "2026-03-30T15:55:00Z"}
    >>> [(b.entity, b.end - b.start) for b in crowdsec_alerts([a], 2017)]
    [('1.2.3.4', 14400.0)]
    """
    out = []
    for a in posted:
        src = (a.get("source") or {}).get("ip") or (a.get("source") or {}).get("value")
        if not src or not a.get("stop_at"):
            continue
        t = to_year(_iso(a["stop_at"]), year)
        out.append(Alert(SSH_ALERT, src, t, t + CROWDSEC_BAN_S))
    return out


def run_crowdsec(
    log: Path,
    year: int,
    binary: str = "crowdsec",
    *,
    hub: Path = CROWDSEC_HUB,
    patterns: Path = CROWDSEC_PATTERNS,
    timeout_s: float = 900.0,
) -> PeerRun:
    """CrowdSec's bans on ``log`` in replay mode, with a private configuration.

    Raises
    ------
    PeerUnavailable
        If the binary, the shipped hub or the shipped patterns are missing.
    PeerFailed
        If CrowdSec exits before it has read the file, or takes more than ``timeout_s``.
    """
    _missing(binary, "crowdsec")
    for need in (hub / ".index.json", patterns):
        if not need.exists():
            msg = f"{need} not found (shipped by the Debian package `crowdsec`)"
            raise PeerUnavailable(msg)
    api = _LocalApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-crowdsec-") as tmp:
            host, port = api.server_address[:2]
            config = _crowdsec_config(Path(tmp), f"http://{host!s}:{port}/", hub, patterns)
            argv = [binary, "-c", str(config), "-dsn", f"file://{log.resolve()}"]
            argv += ["-type", "syslog", "-no-api"]
            return _drive_crowdsec(argv, api, year, Path(tmp), timeout_s)
    finally:
        api.shutdown()
        api.server_close()


def _drive_crowdsec(
    argv: list[str], api: _LocalApi, year: int, cwd: Path, timeout_s: float
) -> PeerRun:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    )
    finished = threading.Event()
    last = [""]

    def read() -> None:  # drains the output all along: a full pipe would block CrowdSec
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                last[0] = line.strip()
            if "Acquisition is finished" in line:
                finished.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not finished.is_set() and proc.poll() is None:
            if time.perf_counter() - t0 > timeout_s:
                break
            finished.wait(0.05)
        if not finished.is_set():  # it exited: the reader may still hold the last lines
            reader.join(1.0)
        done = finished.is_set()
        end = time.perf_counter()
        # Alerts are still in flight when acquisition ends: wait for CrowdSec to exit, or,
        # as it may hang at shutdown, for a second without a new alert.
        while done and proc.poll() is None and time.perf_counter() - end < 30.0:
            with api.lock:
                quiet = time.perf_counter() - max(api.last_alert, end)
            if quiet > 1.0:
                break
            time.sleep(0.05)
        with api.lock:
            end = max(end, api.last_alert) if proc.poll() is None else time.perf_counter()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(2.0)
        if proc.stdout is not None:
            proc.stdout.close()
    if not done:
        msg = last[0].split('msg="', 1)[-1].rstrip('"') or f"exit code {proc.returncode}"
        raise PeerFailed(msg)
    with api.lock:
        posted = list(api.alerts)
    return PeerRun(tuple(crowdsec_alerts(posted, year)), end - t0)
