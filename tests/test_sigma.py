"""Sigma rules on the security stream: SigmaHQ's own rules (../shared/datasets/sigma, DRL 1.1,
read in place, never copied) on real log lines from ../shared/datasets/security."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from bytewax.testing import TestingSink, TestingSource, run_main
from vigil.flows.errors import ConfigError
from vigil.flows.security.config import SecurityConfig
from vigil.flows.security.flow import build_flow
from vigil.flows.security.parsers import LineParser
from vigil.flows.security.sigma.alerts import SigmaAlerts
from vigil.flows.security.sigma.config import SigmaConfig
from vigil.flows.security.sigma.engine import RuleSet, explain_rules, load_rules
from vigil.sinks.alerts import alert_from_detection

from vigil.records import Detection, RawLine, SecurityEvent

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SIGMA = SHARED / "sigma"
SEC = SHARED / "security"
AUTH = SEC / "ssh_auth_elastic" / "auth.log"
CTU_HTTP = SEC / "zeek_ctu_inbound_attacks" / "ctu-normal-40_day1" / "http.log.labeled"
PRIV_USER = SIGMA / "rules" / "linux" / "builtin" / "lnx_privileged_user_creation.yml"

pytestmark = pytest.mark.skipif(not SIGMA.is_dir(), reason="shared Sigma rules not present")

SOURCE_CODE_ENUM = "953d460b-f810-420a-97a2-cfca4c98e602"  # web: '.git/' keyword
PRIVILEGED_USER = "0ac15ec3-d24f-4246-aa2a-3077bb1cf90e"  # linux: new user with UID/GID 0...


@pytest.fixture(scope="module")
def shared_rules() -> RuleSet:
    return load_rules(SigmaConfig(paths=(str(SIGMA),)))


def _event(fmt: str, line: str) -> SecurityEvent:
    ev = LineParser(year=2017).parse(RawLine(fmt, "test", line))
    assert type(ev) is SecurityEvent, ev
    return ev


def _ids(rs: RuleSet, fmt: str, line: str) -> set[str]:
    return {r.id for r in rs.match(_event(fmt, line), line)}


def _ctu_access_lines() -> dict[str, str]:
    """The real HTTP requests of the CTU capture (Zeek http.log), written as combined
    access-log lines: uri -> first line."""
    out: dict[str, str] = {}
    for uri, line in _ctu_requests():
        out.setdefault(uri, line)
    return out


def _ctu_requests() -> list[tuple[str, str]]:
    """(uri, access-log line) of every request of the CTU http.log, in its order."""
    out: list[tuple[str, str]] = []
    cols: list[str] = []
    for raw in CTU_HTTP.read_text().splitlines():
        if raw.startswith("#fields"):
            cols = raw.split("\t")[1:]
        if raw.startswith("#"):
            continue
        row = dict(zip(cols, raw.split("\t"), strict=False))
        when = dt.datetime.fromtimestamp(float(row["ts"]), dt.UTC)
        status = row["status_code"]
        out.append((
            row["uri"],
            f"{row['id.orig_h']} - - [{when:%d/%b/%Y:%H:%M:%S +0000}]"
            f' "{row["method"]} {row["uri"]} HTTP/1.1" {status} {row["response_body_len"]}'
            f' "{row["referrer"]}" "{row["user_agent"]}"',
        ))  # fmt: skip
    return out


# ---------------------------------------------------------------- loading the 172 rules
def test_the_shared_rules_load_or_are_skipped_with_a_reason(shared_rules: RuleSet) -> None:
    rs = shared_rules
    assert len(rs.rules) + len(rs.skipped) == 172
    per_ds = {ds: len(v) for ds, v in rs.by_dataset.items()}
    assert per_ds == {"access": 87, "ssh": 20, "iptables": 1}
    reasons = {Path(p).name: reason for p, _, reason in rs.skipped}
    # A rule on a field the access log does not have (the Host header) is skipped, not run.
    name = "web_exploit_cve_2023_4966_citrix_sensitive_information_disclosure_exploit_attempt.yml"
    assert reasons[name] == "unknown field: cs-host"
    assert all(r.startswith("no matching log source: ") or "unknown field" in r
               for r in reasons.values())  # fmt: skip
    assert sum("zeek/http" in r for r in reasons.values()) == 5


def test_a_bad_or_unsupported_rule_is_skipped_and_the_rest_still_load(tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    (tmp_path / "fieldref.yml").write_text(
        "title: user equals host\nid: 11111111-2222-3333-4444-555555555555\nstatus: test\n"
        "logsource: {product: linux, service: sshd}\n"
        "detection:\n  sel:\n    user_name|fieldref: host_name\n  condition: sel\nlevel: low\n"
    )
    rs = load_rules(SigmaConfig(paths=(str(tmp_path), str(PRIV_USER))))
    assert [r.id for r in rs.rules] == [PRIVILEGED_USER]
    reasons = sorted(reason for _, _, reason in rs.skipped)
    assert reasons[0].startswith("invalid rule: ")
    assert reasons[1] == "unsupported modifier: SigmaFieldReference"
    text = "\n".join(explain_rules(SigmaConfig(paths=(str(tmp_path),)), rs))
    assert "skip fieldref.yml: unsupported modifier: SigmaFieldReference" in text


def test_selection_by_status_level_and_tag(tmp_path: Path) -> None:
    base = SigmaConfig(paths=(str(SIGMA / "rules" / "linux"),))
    n = len(load_rules(base).rules)
    high = load_rules(base.model_copy(update={"levels": ("high", "critical")}))
    assert 0 < len(high.rules) < n and all(r.level in ("high", "critical") for r in high.rules)
    assert any(reason == "excluded: level medium" for _, _, reason in high.skipped)
    tagged = load_rules(base.model_copy(update={"tags": ("attack.t1136.001",)}))
    assert [r.id for r in tagged.rules] == [PRIVILEGED_USER]
    none = load_rules(base.model_copy(update={"exclude_tags": ("attack.t1136.001",)}))
    assert PRIVILEGED_USER not in {r.id for r in none.rules}


# ---------------------------------------------------------------- each log source
def test_linux_rule_fires_on_its_line_and_not_on_a_real_ordinary_user(
    shared_rules: RuleSet,
) -> None:
    # The rule's own example of a root user being created (its comment), in auth.log form.
    example = next(
        ln.strip().lstrip("#").strip()
        for ln in PRIV_USER.read_text().splitlines()
        if "UID=0," in ln and ln.strip().startswith("#")
    )
    assert PRIVILEGED_USER in _ids(shared_rules, "ssh", example)
    # Near miss: a real account creation in the elastic auth.log, UID 1001, GID 1001.
    real = next(ln for ln in AUTH.read_text().splitlines() if "useradd" in ln and "new user" in ln)
    assert "UID=1001" in real
    assert _ids(shared_rules, "ssh", real) == set()


def test_the_real_ssh_logs_raise_no_sigma_match(shared_rules: RuleSet) -> None:
    """7,121 real auth.log lines (brute force, invalid users, sudo, useradd): none of
    SigmaHQ's 20 linux rules applies, and none may fire."""
    parser = LineParser(year=2017)
    hits = 0
    for line in AUTH.read_text().splitlines():
        ev = parser.parse(RawLine("ssh", "auth.log", line))
        if type(ev) is SecurityEvent:
            hits += len(shared_rules.match(ev, line))
    assert hits == 0


def test_web_rule_fires_on_a_real_git_probe_and_not_on_the_same_clients_home_page(
    shared_rules: RuleSet,
) -> None:
    lines = _ctu_access_lines()
    assert _ids(shared_rules, "access", lines["/.git/config"]) == {SOURCE_CODE_ENUM}
    assert _ids(shared_rules, "access", lines["/"]) == set()


def test_modifiers_compile_once_and_match_fields(tmp_path: Path) -> None:
    """A rule of our own with field modifiers on the real /.git/config request."""
    (tmp_path / "mods.yml").write_text(
        "title: git probe from a scanner network\nid: 22222222-2222-3333-4444-555555555555\n"
        "status: test\nlogsource: {category: webserver}\nlevel: high\n"
        "detection:\n"
        "  sel:\n"
        "    cs-method: GET\n"
        "    cs-uri-stem|startswith: /.git\n"
        "    cs-uri-stem|endswith: /CONFIG\n"  # case-insensitive, as Sigma strings are
        "    c-ip|cidr: 217.138.0.0/16\n"
        "    sc-status: 302\n"
        "    cs-user-agent|re: 'Chrome/9[0-9]\\.'\n"
        "    cs-user-agent|contains|all: [Windows, Win64]\n"
        "  cased:\n"
        "    cs-uri-stem|cased: /.GIT/config\n"
        "  condition: sel and not cased\n"
    )
    rs = load_rules(SigmaConfig(paths=(str(tmp_path),)))
    assert len(rs.rules) == 1, rs.skipped
    lines = _ctu_access_lines()
    git = lines["/.git/config"]
    assert _ids(rs, "access", git) == {"22222222-2222-3333-4444-555555555555"}
    assert _ids(rs, "access", git.replace(" 302 ", " 404 ")) == set()  # one field off
    assert _ids(rs, "access", git.replace("217.138.", "218.138.")) == set()


def test_firewall_rule_reads_the_netfilter_fields(shared_rules: RuleSet) -> None:
    """No real firewall log is in ../shared: a UFW line in the kernel's format. Cleartext
    protocols let through fire; the same packet blocked does not."""
    line = (
        "Jun 13 10:00:00 gw kernel: [12.3] [UFW ALLOW] IN=eth0 OUT= MAC=00 SRC=198.51.100.7"
        " DST=147.32.81.167 LEN=60 TOS=0x00 PREC=0x00 TTL=50 ID=1 DF PROTO=TCP SPT=40000"
        " DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0"
    )
    cleartext = {r.id for r in shared_rules.rules if r.dataset == "iptables"}
    assert _ids(shared_rules, "iptables", line) == cleartext
    assert _ids(shared_rules, "iptables", line.replace("UFW ALLOW", "UFW BLOCK")) == set()


# ---------------------------------------------------------------- alerts
def test_matches_make_one_episode_per_rule_and_entity(shared_rules: RuleSet) -> None:
    git = _ctu_access_lines()["/.git/config"]
    ev = _event("access", git)
    rule = shared_rules.match(ev, git)[0]
    alerts = SigmaAlerts(shared_rules, SigmaConfig(hold_s=600), refresh_s=60)
    out = alerts.process([(rule.index, replace(ev, ts=ev.ts + s), git) for s in (0, 10, 70, 2000)])
    # first match opens the episode; 10 s later is within refresh; 70 s later refreshes it;
    # 2000 s later (past the hold) opens a new one.
    assert [d.start for d in out] == [None, ev.ts, None]
    assert [d.observed for d in out] == [1.0, 3.0, 1.0]


def test_a_run_through_the_flow_alerts_with_the_rules_credit() -> None:
    git = _ctu_access_lines()["/.git/config"]
    home = _ctu_access_lines()["/"]
    cfg = SecurityConfig(sigma=SigmaConfig(paths=(str(SIGMA),)))
    dets: list[Detection] = []
    lines = [RawLine("access", "access.log", x) for x in (home, git, git, home)]
    flow = build_flow(
        cfg, [TestingSource(lines)], TestingSink(dets), TestingSink([]), TestingSink([])
    )
    run_main(flow)
    sig = [d for d in dets if d.kind.startswith("sigma_")]
    assert len(sig) == 1
    d = sig[0]
    assert d.kind == f"sigma_{SOURCE_CODE_ENUM}" and d.entity == "217.138.199.29"
    assert d.severity == "warning" and d.clock == "security/access"  # level medium
    alert = alert_from_detection(d)
    ann = alert["annotations"]
    assert ann["sigma_id"] == SOURCE_CODE_ENUM
    assert ann["sigma_title"] == "Source Code Enumeration Detection by Keyword"
    rule_file = SIGMA / "rules" / "web" / "webserver_generic" / "web_source_code_enumeration.yml"
    assert ann["sigma_author"] == yaml.safe_load(rule_file.read_text())["author"]  # DRL credit
    assert "attack.t1083" in ann["sigma_tags"]
    assert "/.git/config" in ann["evidence_lines"]


def test_a_missing_rule_folder_stops_the_flow_with_one_line(tmp_path: Path) -> None:
    cfg = SecurityConfig(sigma=SigmaConfig(paths=(str(tmp_path / "nope"),)))
    with pytest.raises(ConfigError, match="no such file or folder"):
        build_flow(cfg, [TestingSource([])], TestingSink([]), TestingSink([]), TestingSink([]))


# ---------------------------------------------------------------- vigil check-config
def _check_config(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil.flows.cli", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ),
    )


def test_check_config_lists_loaded_and_skipped_rules(tmp_path: Path) -> None:
    rel = os.path.relpath(SIGMA, tmp_path)  # relative to the config file, as other paths
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        f"security:\n  inputs:\n    - kind: file\n      paths: [{AUTH}]\n"
        f"      format: ssh\n  sigma:\n    paths: [{rel}]\n"
    )
    r = _check_config(cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "sigma rules: 108 loaded, 64 skipped" in out
    assert "access: 87" in out and "ssh: 20" in out and "iptables: 1" in out
    assert f"{SOURCE_CODE_ENUM} medium" in out
    assert "29 no matching log source: proxy/-/-" in out
    assert "unknown field: cs-host" in out
    cfg.write_text(cfg.read_text().replace(rel, "no-such-rules"))
    r = _check_config(cfg)
    assert r.returncode == 1
    assert "security.sigma.paths: no such file or folder" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- correlations
VIGIL_RULES = Path(__file__).resolve().parents[1] / "flows" / "security" / "sigma" / "rules"
CTU = SEC / "zeek_ctu_inbound_attacks"


@pytest.mark.parametrize("day", ["ctu-normal-40_day1", "ctu-normal-42_day2"])
def test_a_value_count_correlation_finds_the_vertical_scanners(day: str) -> None:
    """Vigil's vertical scan written as a Sigma value_count rule (distinct destination
    ports per source and host over 24 h) finds the sources the built-in rule finds."""
    conn = CTU / day / "conn.log.labeled"
    lines = [RawLine("zeek", str(conn), ln) for ln in conn.read_text().splitlines()]
    cfg = SecurityConfig(sigma=SigmaConfig(paths=(str(VIGIL_RULES / "vertical_scan.yml"),)))
    dets: list[Detection] = []
    flow = build_flow(
        cfg,
        [TestingSource(lines, batch_size=256)],
        TestingSink(dets),
        TestingSink([]),
        TestingSink([]),
    )
    run_main(flow)
    builtin = {
        d.entity for d in dets if d.kind == "port_scan" and dict(d.extra)["scan"] == "vertical"
    }
    sigma = [d for d in dets if d.kind == "sigma_6c1e4f5e-0d5b-4c1a-9a8e-0c3b0c7a1a02"]
    assert {d.entity.split()[0] for d in sigma} == builtin
    assert len(builtin) == {"ctu-normal-40_day1": 8, "ctu-normal-42_day2": 4}[day]
    starts = [d for d in sigma if d.start is None]
    assert len(starts) == len(builtin)  # one episode per scanner, then updates
    assert all(d.observed == 20 and d.threshold == 20 for d in starts)
    assert all(len(dict(d.evidence)["id.resp_p"]) == 10 for d in starts)
    # The base rule only feeds the correlation (generate: false): no alert per connection.
    assert not [d for d in dets if d.kind == "sigma_6c1e4f5e-0d5b-4c1a-9a8e-0c3b0c7a1a01"]


def test_unsupported_correlations_are_skipped_with_a_reason(tmp_path: Path) -> None:
    base = (VIGIL_RULES / "vertical_scan.yml").read_text().split("\n---\n")[0]
    (tmp_path / "temporal.yml").write_text(
        base + "\n---\ntitle: t\nid: 33333333-2222-3333-4444-555555555555\nstatus: test\n"
        "correlation:\n  type: temporal_ordered\n  rules: [vigil_unanswered_connection]\n"
        "  group-by: [id.orig_h]\n  timespan: 1h\n"
    )
    (tmp_path / "by_host.yml").write_text(
        "title: u\nid: 44444444-2222-3333-4444-555555555555\nstatus: test\n"
        "correlation:\n  type: event_count\n  rules: [vigil_unanswered_connection]\n"
        "  group-by: [id.resp_h]\n  timespan: 1h\n  condition: {gte: 5}\n"
    )
    rs = load_rules(SigmaConfig(paths=(str(tmp_path),)))
    reasons = {t: r for _, t, r in rs.skipped}
    assert reasons == {
        "t": "unsupported correlation type: temporal_ordered",
        "u": "correlation group-by without the source address",
    }
    assert len(rs.rules) == 1 and not rs.correlations


def test_a_correlation_keeps_its_informational_rule_when_levels_are_filtered() -> None:
    rs = load_rules(
        SigmaConfig(paths=(str(VIGIL_RULES / "vertical_scan.yml"),), levels=("medium", "high"))
    )
    assert [c.title for c in rs.correlations] == ["Vertical port scan"]
    assert [r.level for r in rs.rules] == ["informational"] and rs.silent == {0}
    text = "\n".join(
        explain_rules(SigmaConfig(paths=(str(VIGIL_RULES / "vertical_scan.yml"),)), rs)
    )
    assert "zeek: 1 + 1 correlation(s)" in text
    assert "(value_count by id.orig_h, id.resp_h over 86400 s)" in text


@pytest.mark.parametrize(("span", "fires"), [("1m", True), ("5s", False)])
def test_a_temporal_correlation_of_a_git_probe_and_a_home_page_visit(
    tmp_path: Path, span: str, fires: bool
) -> None:
    """SigmaHQ's '.git/' rule and a rule of ours for '/' from the same client within the
    timespan: the real client asked for /.git/config, then / nine seconds later."""
    (tmp_path / "t.yml").write_text(
        "title: home page\nname: home_page\nid: 55555555-2222-3333-4444-555555555555\n"
        "status: test\nlogsource: {category: webserver}\nlevel: informational\n"
        "detection:\n  sel:\n    cs-uri-stem: /\n  condition: sel\n---\n"
        "title: probe then visit\nid: 66666666-2222-3333-4444-555555555555\nstatus: test\n"
        f"level: high\ncorrelation:\n  type: temporal\n  rules: [{SOURCE_CODE_ENUM}, home_page]\n"
        f"  group-by: [c-ip]\n  timespan: {span}\n"
    )
    enum = SIGMA / "rules" / "web" / "webserver_generic" / "web_source_code_enumeration.yml"
    cfg = SecurityConfig(sigma=SigmaConfig(paths=(str(tmp_path), str(enum))))
    lines = [RawLine("access", "access.log", x) for _, x in _ctu_requests()]
    dets: list[Detection] = []
    flow = build_flow(
        cfg, [TestingSource(lines)], TestingSink(dets), TestingSink([]), TestingSink([])
    )
    run_main(flow)
    sig = [d for d in dets if d.kind.startswith("sigma_")]
    if fires:
        assert [(d.kind, d.entity) for d in sig] == [
            ("sigma_66666666-2222-3333-4444-555555555555", "217.138.199.29")
        ]
        assert sig[0].severity == "high" and sig[0].observed == 2
    else:
        assert sig == []  # and neither rule alerts alone: they only feed the correlation
