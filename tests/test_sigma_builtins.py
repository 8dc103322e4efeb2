"""Vigil's built-in behaviours as its own Sigma rule files (flows/security/sigma/rules): on the
real shared logs each correlation finds the sources the built-in rule finds, in one run of
the flow with both, and a site tunes it by editing the file."""

from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from vigil.flows.security.config import BruteForceRule, SecurityConfig, SecurityRules, WebScanRule
from vigil.flows.security.flow import build_flow
from vigil.flows.security.sigma.config import SigmaConfig
from vigil.flows.security.sigma.engine import load_rules

from vigil.records import Detection, RawLine

RULES = Path(__file__).resolve().parents[1] / "flows" / "security" / "sigma" / "rules"
SEC = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "security"
ELASTIC = SEC / "ssh_auth_elastic"
LOGHUB = SEC / "ssh_auth_loghub"
CTU = SEC / "zeek_ctu_inbound_attacks"
NMAP = SEC / "zeek_nmap_portscan" / "conn.log"

pytestmark = pytest.mark.skipif(not SEC.is_dir(), reason="shared security data not present")

BRUTE_FORCE = "sigma_27130c1a-4832-4a5c-bc4d-25fc311a9d38"
USER_ENUM = "sigma_f36fb80b-15d8-4463-a40a-a1e936ba3f74"
HORIZONTAL = "sigma_25f97dec-8400-4185-86f4-4d4a0f02e155"
WEB_SCAN = "sigma_aaa6ad49-0f9e-4dc0-9399-e92da7e9dc41"
BASE_RULES = {  # generate: false: they only feed their correlation
    "sigma_7732a686-401d-4168-8a9e-88b473fbd856",
    "sigma_9d6583d9-ae63-4f27-9be7-19e3a3465eba",
    "sigma_468c709e-ec3c-4e09-947f-911ce33fa0b7",
    "sigma_1c740d26-ca19-453a-b108-a025a1aeb79e",
    "sigma_6c1e4f5e-0d5b-4c1a-9a8e-0c3b0c7a1a01",
}

SSH_LOGS = {
    "elastic": (ELASTIC / "auth.log", ELASTIC / "labels" / "attack_episodes.csv"),
    "Linux_2k": (LOGHUB / "Linux_2k.log", LOGHUB / "labels" / "Linux_2k_attack_episodes.csv"),
    "OpenSSH_2k": (LOGHUB / "OpenSSH_2k.log", LOGHUB / "labels" / "OpenSSH_2k_attack_episodes.csv"),
}


def _run(fmt: str, lines: list[str], cfg: SecurityConfig | None = None) -> list[Detection]:
    cfg = cfg or SecurityConfig(sigma=SigmaConfig(paths=(str(RULES),)))
    raws = [RawLine(fmt, f"{fmt}.log", ln) for ln in lines]
    dets: list[Detection] = []
    source = TestingSource(raws, batch_size=256)
    flow = build_flow(cfg, [source], TestingSink(dets), TestingSink([]), TestingSink([]))
    run_main(flow)
    return dets


@cache
def _ssh(name: str) -> tuple[Detection, ...]:
    return tuple(_run("ssh", SSH_LOGS[name][0].read_text().splitlines()))


@cache
def _zeek(path: Path) -> tuple[Detection, ...]:
    return tuple(_run("zeek", path.read_text().splitlines()))


def _builtin_episodes(dets: tuple[Detection, ...], kind: str) -> dict[tuple[str, float], Detection]:
    """The built-in rule's episodes: its first report of each (source, start)."""
    out: dict[tuple[str, float], Detection] = {}
    for d in dets:
        if d.kind == kind:
            out.setdefault((d.entity, d.start or d.ts), d)
    return out


def _sigma_episodes(dets: tuple[Detection, ...], kind: str) -> list[Detection]:
    return [d for d in dets if d.kind == kind and d.start is None]


def _labelled_found(found: list[Detection], labels: Path) -> tuple[int, int]:
    """(labelled brute-force episodes, those with an alert for their source that starts
    within 10 min of the episode). Times are compared without the year (syslog has none)."""
    with labels.open() as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "ssh_bruteforce"]
    slack = dt.timedelta(seconds=600)
    hit = 0
    for r in rows:
        start, end = dt.datetime.fromisoformat(r["start"]), dt.datetime.fromisoformat(r["end"])
        for d in found:
            when = dt.datetime.fromtimestamp(d.ts, dt.UTC).replace(year=start.year, tzinfo=None)
            if d.entity == r["src"] and start - slack <= when <= end + slack:
                hit += 1
                break
    return len(rows), hit


# name: (built-in = Sigma brute-force episodes, sources, labelled episodes found)
BRUTE_FORCE_FIGURES = {
    "elastic": (51, 50, 48),
    "Linux_2k": (41, 39, 41),
    "OpenSSH_2k": (12, 11, 10),
}


@pytest.mark.parametrize("name", list(SSH_LOGS))
def test_brute_force_rule_finds_the_builtin_episodes(name: str) -> None:
    dets = _ssh(name)
    builtin = _builtin_episodes(dets, "ssh_brute_force")
    sigma = _sigma_episodes(dets, BRUTE_FORCE)
    assert {d.entity for d in sigma} == {src for src, _ in builtin}
    n_eps, n_srcs, n_labelled = BRUTE_FORCE_FIGURES[name]
    assert len(sigma) == len(builtin) == n_eps
    assert len({d.entity for d in sigma}) == n_srcs
    total, found = _labelled_found(sigma, SSH_LOGS[name][1])
    assert found == total == n_labelled  # every labelled episode, as the built-in rule
    assert _labelled_found(list(builtin.values()), SSH_LOGS[name][1]) == (total, found)
    d = sigma[0]
    assert d.severity == "high" and d.observed == 5 and d.threshold == 5
    assert dict(d.extra)["sigma_author"] == "Vigil"
    assert "attack.t1110.001" in dict(d.extra)["sigma_tags"]
    assert not [x for x in dets if x.kind in BASE_RULES]  # no alert per failed line


def test_the_operators_scattered_typos_are_not_brute_force() -> None:
    # 85.245.107.41 mistypes its password 11 times over the weeks, never 5 in 10 minutes.
    assert "85.245.107.41" not in {d.entity for d in _ssh("elastic")}


@pytest.mark.parametrize(("name", "sources"), [("elastic", 1), ("Linux_2k", 0), ("OpenSSH_2k", 4)])
def test_user_enumeration_rule_finds_the_builtin_sources(name: str, sources: int) -> None:
    dets = _ssh(name)
    builtin = _builtin_episodes(dets, "ssh_user_enumeration")
    sigma = _sigma_episodes(dets, USER_ENUM)
    assert {d.entity for d in sigma} == {src for src, _ in builtin}
    assert len(sigma) == len(builtin) and len({d.entity for d in sigma}) == sources
    if name == "elastic":  # 91.197.232.109: 2 x 29 "Invalid user" probes, 24 names
        assert {d.entity for d in sigma} == {"91.197.232.109"}
        assert len(dict(sigma[0].evidence)["user"]) == 5


def test_a_site_tunes_the_rule_file_as_it_tunes_the_builtin_rule(tmp_path: Path) -> None:
    text = (RULES / "brute_force.yml").read_text()
    assert "gte: 5\n" in text
    (tmp_path / "brute_force.yml").write_text(text.replace("gte: 5\n", "gte: 30\n"))
    cfg = SecurityConfig(
        sigma=SigmaConfig(paths=(str(tmp_path),)),
        rules=SecurityRules(brute_force=BruteForceRule(failures=30)),
    )
    dets = _run("ssh", (ELASTIC / "auth.log").read_text().splitlines(), cfg)
    builtin = {src for src, _ in _builtin_episodes(tuple(dets), "ssh_brute_force")}
    sigma = {d.entity for d in _sigma_episodes(tuple(dets), BRUTE_FORCE)}
    assert sigma == builtin
    assert {"24.151.103.17", "49.4.143.105", "122.163.61.218"} <= sigma  # 147, 40, 30 failures
    assert len(sigma) < 10


@pytest.mark.parametrize(
    ("path", "scanners"),
    [
        (CTU / "ctu-normal-40_day1" / "conn.log.labeled", set()),
        # The capture host browsing HTTPS: 20 hosts on 443 with S0 in a day, and many more
        # with aborted handshakes (SH, RSTOS0): not a scanner, for either rule.
        (CTU / "ctu-normal-42_day2" / "conn.log.labeled", set()),
        (NMAP, {"172.16.1.11"}),
    ],
    ids=["ctu_day1", "ctu_day2", "nmap"],
)
def test_horizontal_scan_rule_finds_the_builtin_scanners(path: Path, scanners: set[str]) -> None:
    dets = _zeek(path)
    builtin = {
        d.entity for d in dets if d.kind == "port_scan" and dict(d.extra)["scan"] == "horizontal"
    }
    sigma = _sigma_episodes(dets, HORIZONTAL)
    assert {d.entity.split()[0] for d in sigma} == builtin == scanners
    if scanners:
        # One alert per source and port (the group-by), where the built-in rule folds
        # every scan of a source into one port_scan episode.
        ports = {d.entity.split()[1] for d in sigma}
        assert len(ports) == len(sigma) == 98 and {"23", "445", "3389"} <= ports
        assert all(d.observed == 20 for d in sigma)
    assert not [x for x in dets if x.kind in BASE_RULES]


def _ctu_access_lines(day: str, spacing_s: float | None = None) -> list[str]:
    """The CTU capture's real HTTP requests (Zeek http.log) as combined access-log lines;
    with ``spacing_s``, re-timed that far apart (the same requests as a burst)."""
    out: list[str] = []
    cols: list[str] = []
    for raw in (CTU / day / "http.log.labeled").read_text().splitlines():
        if raw.startswith("#fields"):
            cols = raw.split("\t")[1:]
        if raw.startswith("#"):
            continue
        row = dict(zip(cols, raw.split("\t"), strict=False))
        ts = float(row["ts"]) if spacing_s is None else 1655071298.0 + spacing_s * len(out)
        when = dt.datetime.fromtimestamp(ts, dt.UTC)
        out.append(
            f"{row['id.orig_h']} - - [{when:%d/%b/%Y:%H:%M:%S +0000}]"
            f' "{row["method"]} {row["uri"]} HTTP/1.1" {row["status_code"]}'
            f' {row["response_body_len"]} "{row["referrer"]}" "{row["user_agent"]}"'
        )
    return out


def test_web_scan_rule_agrees_with_the_builtin_404_count() -> None:
    # The capture host's ESET updater gets 93 real 404s over the day, never 2 in 5 minutes.
    day = _ctu_access_lines("ctu-normal-40_day1")
    assert sum(" 404 " in ln for ln in day) == 93
    dets = tuple(_run("access", day))
    assert not _builtin_episodes(dets, "web_scan") and not _sigma_episodes(dets, WEB_SCAN)
    # The same requests a second apart: a burst of 404s (content discovery looks so).
    cfg = SecurityConfig(
        sigma=SigmaConfig(paths=(str(RULES),)),
        rules=SecurityRules(web_scan=WebScanRule(distinct_paths=10_000)),  # the 404 part only
    )
    dets = tuple(_run("access", _ctu_access_lines("ctu-normal-40_day1", 1.0), cfg))
    builtin = _builtin_episodes(dets, "web_scan")
    sigma = _sigma_episodes(dets, WEB_SCAN)
    assert {d.entity for d in sigma} == {src for src, _ in builtin} == {"147.32.81.167"}
    assert len(sigma) == len(builtin)
    assert sigma[0].observed == 30 and "attack.t1595.003" in dict(sigma[0].extra)["sigma_tags"]


def test_a_level_filter_keeps_the_base_rules_of_the_selected_correlations_only() -> None:
    # Without the correlation it feeds, an informational base rule would alert alone on
    # every 404 or unanswered connection.
    rs = load_rules(SigmaConfig(paths=(str(RULES),), levels=("high", "critical")))
    assert [c.title for c in rs.correlations] == ["SSH brute force"]  # the one high rule
    assert [r.title for r in rs.rules] == ["Failed SSH authentication"]
    assert rs.silent == {0}
    skipped = {title: why for _, title, why in rs.skipped}
    assert skipped["Web request not found"] == "excluded: level informational"
    assert skipped["Web scan"] == "excluded: level medium"


def test_check_config_lists_the_shipped_rules(tmp_path: Path) -> None:
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        f"security:\n  inputs:\n    - kind: file\n      paths: [{ELASTIC / 'auth.log'}]\n"
        f"      format: ssh\n  sigma:\n    paths: [{RULES}]\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "sigma rules: 5 loaded, 0 skipped (5 correlation(s))" in out
    assert "ssh: 2 + 2 correlation(s)" in out
    assert "zeek: 2 + 2 correlation(s)" in out
    assert "access: 1 + 1 correlation(s)" in out
    for title in ("SSH brute force", "SSH user enumeration", "Horizontal port scan", "Web scan"):
        assert f" {title} (" in out, title
    assert "(event_count by src_ip over 600 s)" in out
    assert "(value_count by id.orig_h, id.resp_p over 3600 s)" in out
