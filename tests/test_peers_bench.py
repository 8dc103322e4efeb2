"""``bench/peers_security.py``: Vigil, CrowdSec and fail2ban scored the same way.

CI does not install the peers, so the bench must still run without them: a missing peer is
skipped with one line, the exit code stays 0 and the JSON line keeps its keys. The jail
logic that turns fail2ban's matched failures into bans is checked on the failure events of
the labels themselves (real lines of the shared SSH logs). Where the peers are installed, a
last test runs them for real on a slice.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from vigil.flows.evaluation.alerts import load_labels, score

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
SEC = DATA / "security"

sys.path.insert(0, str(ROOT / "bench"))
_spec = importlib.util.spec_from_file_location(
    "peers_security", ROOT / "bench" / "peers_security.py"
)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["peers_security"] = bench
_spec.loader.exec_module(bench)
peers_tools = bench.peers_tools

pytestmark = pytest.mark.skipif(not SEC.exists(), reason="needs ../shared/datasets")

KEYS = [
    f"{t}_{k}"
    for t in ("vigil", "crowdsec", "fail2ban")
    for k in ("episodes", "false_alerts", "lines_per_s")
]


def _failures(line_labels: Path) -> list[tuple[str, float]]:
    with line_labels.open(newline="") as fh:
        return [
            (r["src"], datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC).timestamp())
            for r in csv.DictReader(fh)
            if r["event"] in ("auth_fail", "invalid_user_no_password")
        ]


@pytest.mark.parametrize(
    ("line_labels", "episodes"),
    [
        ("ssh_auth_elastic/labels/line_labels.csv", "ssh_auth_elastic/labels/attack_episodes.csv"),
        (
            "ssh_auth_loghub/labels/OpenSSH_2k_line_labels.csv",
            "ssh_auth_loghub/labels/OpenSSH_2k_attack_episodes.csv",
        ),
    ],
)
def test_jail_on_the_labelled_failures_bans_every_episode_and_nothing_else(
    line_labels: str, episodes: str
) -> None:
    labels = load_labels(SEC / episodes)
    s = score(peers_tools.jail(_failures(SEC / line_labels)), labels)
    assert (s.found, s.false_alerts) == (s.episodes, 0)
    # one failure short of maxretry everywhere: no ban at all
    assert peers_tools.jail(_failures(SEC / line_labels), maxretry=10_000) == []


def test_missing_peers_are_skipped_with_one_line_and_the_json_keeps_its_keys() -> None:
    argv = ["--slice", "300", "--throughput-lines", "0", "--crowdsec", "no-such-crowdsec"]
    argv += ["--fail2ban-regex", "no-such-fail2ban-regex"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "peers_security.py"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    skips = [line for line in lines if ": skipped: " in line]
    assert skips == [
        "crowdsec: skipped: `no-such-crowdsec` not found (install the Debian package `crowdsec`)",
        "fail2ban: skipped: `no-such-fail2ban-regex` not found "
        "(install the Debian package `fail2ban`)",
    ]
    out = json.loads(lines[-1])
    assert set(KEYS) <= set(out)
    assert all(out[k] is None for k in KEYS if not k.startswith("vigil"))
    # the first 300 lines of the three files hold episodes, and Vigil finds them
    assert out["episodes"] > 0
    assert out["vigil_episodes"] == out["episodes"]
    assert out["vigil_lines_per_s"] > 0
    assert set(out["per_file"]) == {"elastic", "openssh_2k", "linux_2k"}


@pytest.mark.skipif(
    not (shutil.which("crowdsec") and shutil.which("fail2ban-regex")),
    reason="needs the Debian packages crowdsec and fail2ban",
)
def test_installed_peers_ban_the_brute_force_of_a_real_slice(tmp_path: Path) -> None:
    f = bench.sliced(bench.bench_files(DATA)[1], 400, tmp_path)  # OpenSSH_2k
    labels = load_labels(f.labels)
    assert labels.episodes
    for run in (peers_tools.run_crowdsec, peers_tools.run_fail2ban):
        s = score(run(f.log, f.year).alerts, labels)
        assert s.found == s.episodes, run.__name__
