"""The security dataflow, run with bytewax.testing: one behaviour per test."""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from vigil.flows.config.detectors import EWMAZScoreConfig
from vigil.flows.inputs import FileInput
from vigil.flows.security.config import BruteForceRule, SecurityConfig, VolumeRule
from vigil.flows.security.config import SecurityRules as RulesCfg
from vigil.flows.security.flow import SecurityRules, build_flow

from vigil.records import DeadLetter, Detection, RawLine, SecurityEvent, SeriesPoint, Tally

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "security"
AUTH = DATA / "ssh_auth_elastic" / "auth.log"


def run(lines: list[RawLine], cfg: SecurityConfig | None = None, **kw: object):
    cfg = cfg or SecurityConfig(year=2017)
    dets: list[Detection] = []
    dead: list[DeadLetter] = []
    tele: list[object] = []
    flow = build_flow(
        cfg,
        [TestingSource(lines, batch_size=256)],
        TestingSink(dets),
        TestingSink(dead),
        TestingSink(tele),
    )
    run_main(flow, **kw)  # type: ignore[arg-type]
    return dets, dead, tele


def ssh(text: str) -> RawLine:
    return RawLine("ssh", "test", text)


def zeek(
    ts: float, src: str, dst: str, port: int, proto: str = "tcp", state: str = "S0"
) -> RawLine:
    cols = [f"{ts:.6f}", "C1", src, "50000", dst, str(port), proto, "-", "0.1", "0", "0", state]
    cols += ["F", "F", "0", "S", "1", "40", "0", "0", "(empty)"]
    return RawLine("zeek", "test", "\t".join(cols))


def line_counts(tele: list[object]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tele:
        if isinstance(t, Tally):
            for (_fmt, outcome), n in t.lines.items():
                out[outcome] = out.get(outcome, 0) + n
    return out


def test_real_auth_log_finds_the_staged_attack_and_the_login_after_it() -> None:
    lines = [ssh(x) for x in AUTH.read_text().splitlines()]
    dets, dead, tele = run(lines)
    staged = [d for d in dets if d.entity == "24.151.103.17"]
    kinds = {d.kind for d in staged}
    assert "ssh_brute_force" in kinds
    assert "ssh_success_after_failures" in kinds
    compromise = next(d for d in staged if d.kind == "ssh_success_after_failures")
    assert compromise.severity == "critical"
    assert "after" in compromise.description and "failures" in compromise.description
    # The operator's own address types a password wrong now and then: never an alert.
    assert not [d for d in dets if d.entity == "85.245.107.41"]
    # Every line is accounted for: parsed + dead-lettered = read.
    counts = line_counts(tele)
    assert counts.get("parsed", 0) + counts.get("dead_lettered", 0) == len(lines)
    assert dead == []


def test_brute_force_explains_observed_against_threshold() -> None:
    base = (
        "Mar 30 15:54:{:02d} h sshd[{}]: Failed password for root from 198.51.100.7 port 4{} ssh2"
    )
    lines = [ssh(base.format(i, 100 + i, i)) for i in range(6)]
    dets, _, _ = run(lines)
    (d,) = [d for d in dets if d.kind == "ssh_brute_force"]
    assert d.entity == "198.51.100.7"
    assert d.observed == 5 and d.threshold == 5
    assert "5 authentication failures from 198.51.100.7 within 600 s (threshold 5)" in d.description


def test_brute_force_threshold_comes_from_config() -> None:
    base = (
        "Mar 30 15:54:{:02d} h sshd[{}]: Failed password for root from 198.51.100.7 port 4{} ssh2"
    )
    lines = [ssh(base.format(i, 100 + i, i)) for i in range(6)]
    cfg = SecurityConfig(year=2017, rules=RulesCfg(brute_force=BruteForceRule(failures=10)))
    dets, _, _ = run(lines, cfg)
    assert not [d for d in dets if d.kind == "ssh_brute_force"]


def test_invalid_user_then_failed_password_counts_one_attempt() -> None:
    # Four connections, each logging "Invalid user" then "Failed password for invalid user":
    # four attempts, below the threshold of five.
    lines = []
    for i in range(4):
        lines.append(ssh(f"Mar 30 10:00:0{i} h sshd[{200 + i}]: Invalid user u{i} from 192.0.2.5"))
        lines.append(
            ssh(
                f"Mar 30 10:00:0{i} h sshd[{200 + i}]: Failed password for invalid user u{i} "
                f"from 192.0.2.5 port 5{i} ssh2"
            )
        )
    dets, _, _ = run(lines)
    assert not [d for d in dets if d.kind == "ssh_brute_force"]


def test_user_enumeration_counts_distinct_names() -> None:
    lines = [
        ssh(f"Mar 28 06:29:{i:02d} h sshd[{300 + i}]: Invalid user name{i} from 203.0.113.50")
        for i in range(6)
    ]
    dets, _, _ = run(lines)
    (d,) = [d for d in dets if d.kind == "ssh_user_enumeration"]
    assert d.entity == "203.0.113.50" and d.observed == 5


def test_sources_are_kept_separate() -> None:
    # Three failures each from two addresses: no single source reaches five.
    base = "Mar 30 15:54:{:02d} h sshd[{}]: Failed password for root from {} port 4{} ssh2"
    lines = [
        ssh(base.format(i, 10 + i, ip, i)) for i in range(3) for ip in ("192.0.2.1", "192.0.2.2")
    ]
    dets, _, _ = run(lines)
    assert not [d for d in dets if d.kind == "ssh_brute_force"]


def test_vertical_scan_names_scanner_and_target() -> None:
    lines = [zeek(1000.0 + i, "198.51.100.9", "10.0.0.5", 1000 + i) for i in range(25)]
    dets, _, _ = run(lines)
    (d,) = [d for d in dets if d.kind == "port_scan"]
    assert d.entity == "198.51.100.9"  # one alert per attacking source
    assert d.observed == 20  # the count when the condition was met, not later
    assert dict(d.extra) == {"source_ip": "198.51.100.9", "scan": "vertical"}
    ev = dict(d.evidence)
    assert dict(ev["hosts"]) == {"10.0.0.5": 20}
    assert len(ev["ports"]) == 10  # a bounded sample: the top 10
    assert dict(ev["scans"]) == {"vertical": 20}


def test_a_scan_is_one_episode_while_probes_keep_coming() -> None:
    # A slow scanner: a new port every 10 minutes for 5 hours, under a 24 h window.
    lines = [zeek(1000.0 + 600 * i, "198.51.100.9", "10.0.0.5", 1000 + i) for i in range(30)]
    dets, _, _ = run(lines)
    scans = [d for d in dets if d.kind == "port_scan"]
    assert len(scans) > 1  # the start, then updates as evidence keeps coming
    assert {d.start for d in scans} == {scans[0].ts}  # ...all of one episode
    assert all(d.hold_s == 86400.0 for d in scans)
    assert scans[0].start_value == 20 and scans[-1].observed > 20


def test_a_scan_resumed_after_the_window_is_a_new_episode() -> None:
    first = [zeek(1000.0 + i, "198.51.100.9", "10.0.0.5", 1000 + i) for i in range(25)]
    later = [zeek(1000.0 + 2 * 86400 + i, "198.51.100.9", "10.0.0.5", 2000 + i) for i in range(25)]
    dets, _, _ = run(first + later)
    starts = sorted({d.start for d in dets if d.kind == "port_scan"})
    assert len(starts) == 2 and starts[1] - starts[0] > 86400


def test_answered_connections_are_not_a_scan() -> None:
    # A busy client completing connections (SF) to many ports is not scanning.
    lines = [zeek(1000.0 + i, "10.0.0.7", "10.0.0.5", 1000 + i, state="SF") for i in range(50)]
    dets, _, _ = run(lines)
    assert not [d for d in dets if d.kind.startswith("port_scan")]


def test_horizontal_scan_and_ping_sweep() -> None:
    lines = [zeek(2000.0 + i, "198.51.100.9", f"10.0.1.{i}", 445) for i in range(30)]
    lines += [zeek(3000.0 + i, "198.51.100.10", f"10.0.2.{i}", 8, "icmp", "OTH") for i in range(30)]
    dets, _, _ = run(lines)
    scans = {d.entity: dict(d.extra)["scan"] for d in dets if d.kind == "port_scan"}
    assert scans == {"198.51.100.9": "horizontal", "198.51.100.10": "ping_sweep"}


def test_web_scan_from_a_burst_of_404s() -> None:
    tmpl = (
        '203.0.113.77 - - [10/Oct/2023:13:55:{:02d} +0000] "GET /wp-{}.php HTTP/1.1" 404 12 "-" "x"'
    )
    lines = [RawLine("access", "t", tmpl.format(i % 60, i)) for i in range(40)]
    dets, _, _ = run(lines)
    (d,) = [d for d in dets if d.kind == "web_scan"]
    assert d.entity == "203.0.113.77"
    ev = dict(d.evidence)  # what the responder sees: paths with status, user agents
    assert dict(ev["status"]) == {"404": 30}  # the 30 404s that started it
    assert dict(ev["user_agents"]) == {"x": 1}  # the agent of the request that did
    assert len(ev["paths"]) == 10 and all(p.startswith("/wp-") for p, _ in ev["paths"])


def test_volume_anomaly_on_a_burst_with_band_in_explanation() -> None:
    # Ten quiet minutes a failure each, then a burst of 60 in one minute.
    lines = []
    for m in range(40):
        n = 60 if m == 35 else 1
        for i in range(n):
            lines.append(
                ssh(
                    f"Mar 30 10:{m:02d}:{i % 60:02d} h sshd[{m * 100 + i}]: Failed password for "
                    f"root from 192.0.{m}.{i % 250} port 1 ssh2"
                )
            )
    cfg = SecurityConfig(
        year=2017,
        rules=RulesCfg(
            volume=VolumeRule(
                series=("auth_failures",),
                min_count=10,
                threshold=6.0,
                detector=EWMAZScoreConfig(alpha=0.1, grace_period=10, min_std=1.0),
            )
        ),
    )
    dets, _, tele = run(lines, cfg)
    (d,) = [d for d in dets if d.kind == "volume_anomaly"]
    assert d.entity == "ssh.auth_failures" and d.observed == 60
    assert d.expected is not None and d.upper is not None and d.upper < 60
    points = [p for p in tele if isinstance(p, SeriesPoint) and p.series == "ssh.auth_failures"]
    # Gauges get the newest window of each batch, with its band; the last is the last minute.
    assert points and all(p.lower <= p.expected <= p.upper for p in points)
    assert max(p.ts for p in points) == max(points, key=lambda p: p.ts).ts
    assert max(p.ts for p in points) % 60 == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (RawLine("ssh", "t", "garbage without a header"), "bad syslog header"),
        (RawLine("nosuch", "t", "x"), "unknown format"),
        (RawLine("ssh", "t", "Mar 30 1", oversize=True), "line too long"),
        (RawLine("zeek", "t", "{not json"), "bad json"),
        (
            RawLine("suricata", "t", '{"timestamp": "2024-01-02T03:04:05", "event_type": "alert"}'),
            "timestamp without time zone",
        ),
        (RawLine("access", "t", "not an access line"), "bad access line"),
    ],
)
def test_each_dead_letter_reason_is_routed_and_counted(line: RawLine, reason: str) -> None:
    good = ssh(
        "Mar 30 10:00:00 h sshd[1]: Accepted publickey for ubuntu from 192.0.2.1 port 1 ssh2"
    )
    _dets, dead, tele = run([good, line, good])
    assert [d.reason for d in dead] == [reason]
    counts = line_counts(tele)
    assert counts == {"parsed": 2, "dead_lettered": 1}


def test_late_events_are_counted_and_still_applied() -> None:
    ip = "198.51.100.3"
    tmpl = "Mar 30 {}:{:02d}:00 h sshd[{}]: Failed password for root from {} port 1 ssh2"
    lines = [ssh(tmpl.format(12, m, m, "192.0.2.99")) for m in range(3)]
    # Four failures an hour earlier arrive late, then a fifth: still a brute force.
    lines += [ssh(tmpl.format(11, m, 50 + m, ip)) for m in range(5)]
    dets, _, tele = run(lines)
    late = sum(t.late for t in tele if isinstance(t, Tally))
    assert late == 5
    assert [d.entity for d in dets if d.kind == "ssh_brute_force"] == [ip]


def test_a_rule_failure_is_dead_lettered_not_raised() -> None:
    rules = SecurityRules(RulesCfg())
    bad = SecurityEvent(
        ts=1.0,
        dataset="ssh",
        action="authentication",
        outcome="failure",
        source_ip="192.0.2.1",
        user_name=["unhashable"],  # type: ignore[arg-type]
    )
    good = SecurityEvent(
        ts=2.0,
        dataset="ssh",
        action="authentication",
        outcome="failure",
        source_ip="192.0.2.2",
        user_name="root",
    )
    rules.process([bad, good])
    assert [e.reason for e in rules.errors] == ["TypeError"]
    assert rules.snapshot().sources  # the good event was applied


def test_tracked_sources_are_bounded() -> None:
    rules = SecurityRules(RulesCfg(), max_sources=100)
    evs = [
        SecurityEvent(
            ts=float(i),
            dataset="zeek",
            action="connection",
            source_ip=f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
            destination_ip="10.0.0.1",
            destination_port=22,
            conn_state="S0",
        )
        for i in range(5000)
    ]
    rules.process(evs)
    assert len(rules) == 100
    assert rules.evicted == 4900


def test_snapshot_pickles_and_restores_learned_counts() -> None:
    rules = SecurityRules(RulesCfg())
    ev = [
        SecurityEvent(
            ts=float(t),
            dataset="ssh",
            action="authentication",
            outcome="failure",
            reason="password",
            source_ip="192.0.2.9",
            user_name="root",
        )
        for t in range(4)
    ]
    assert rules.process(ev) == []
    fresh = SecurityRules(RulesCfg())
    fresh.restore(pickle.loads(pickle.dumps(rules.snapshot())))
    fifth = [
        SecurityEvent(
            ts=5.0,
            dataset="ssh",
            action="authentication",
            outcome="failure",
            reason="password",
            source_ip="192.0.2.9",
            user_name="root",
        )
    ]
    assert [d.kind for d in fresh.process(fifth)] == ["ssh_brute_force"]


def test_recovery_keeps_failure_counts_across_a_restart(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    tmpl = "Mar 30 15:54:{:02d} h sshd[{}]: Failed password for root from 198.51.100.7 port 1 ssh2"
    lines: list[object] = [ssh(tmpl.format(i, i)) for i in range(3)]
    lines.append(TestingSource.ABORT())
    lines += [ssh(tmpl.format(i, i)) for i in range(3, 6)]
    cfg = SecurityConfig(year=2017)
    dets: list[Detection] = []
    flow = build_flow(
        cfg,
        [TestingSource(lines, batch_size=1)],
        TestingSink(dets),
        TestingSink([]),
        TestingSink([]),
    )
    run_main(flow, epoch_interval=timedelta(0), recovery_config=rc)
    assert dets == []
    run_main(flow, epoch_interval=timedelta(0), recovery_config=rc)
    # Three failures before the crash + two after = five: the count survived the restart.
    assert [d.kind for d in dets] == ["ssh_brute_force"]
    assert dets[0].observed == 5


def _file_run(cfg: SecurityConfig, rc: RecoveryConfig) -> list[Tally]:
    from vigil.flows.inputs import make_sources

    tele: list[object] = []
    flow = build_flow(cfg, make_sources(cfg), TestingSink([]), TestingSink([]), TestingSink(tele))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=rc)
    return [t for t in tele if isinstance(t, Tally) and t.step == "parse"]


def test_reordering_inputs_keeps_each_ones_recovery_state(tmp_path: Path) -> None:
    # Each input's state (here: file offsets) is stored under a step id made from its name,
    # not its position: after swapping the inputs, nothing is read twice.
    tmpl = "Mar 30 15:54:{:02d} h sshd[{}]: Failed password for root from {} port 1 ssh2"
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(tmpl.format(i, i, "198.51.100.7") + "\n" for i in range(4)))
    b.write_text("".join(tmpl.format(i, i, "203.0.113.9") + "\n" for i in range(3)))
    ins = [FileInput(paths=(str(a),), format="ssh"), FileInput(paths=(str(b),), format="ssh")]
    (tmp_path / "rec").mkdir()
    init_db_dir(tmp_path / "rec", 1)
    rc = RecoveryConfig(str(tmp_path / "rec"))
    first = _file_run(SecurityConfig(year=2017, inputs=tuple(ins)), rc)
    assert sum(n for t in first for n in t.lines.values()) == 7
    again = _file_run(SecurityConfig(year=2017, inputs=tuple(reversed(ins))), rc)
    assert sum(n for t in again for n in t.lines.values()) == 0


def test_two_inputs_with_one_name_are_refused() -> None:
    from vigil.flows.errors import ConfigError

    same = [FileInput(paths=(p,), format="ssh", name="auth") for p in ("/a.log", "/b.log")]
    cfg = SecurityConfig(year=2017, inputs=tuple(same))
    with pytest.raises(ConfigError, match="two inputs have the name 'auth'"):
        build_flow(cfg, [TestingSource([]), TestingSource([])], *[TestingSink([])] * 3)


def test_ids_alerts_and_bytes_are_exported_as_rates() -> None:
    tmpl = (
        '{{"timestamp": "2024-01-02T03:04:{:02d}.000000+0000", "event_type": "alert", '
        '"src_ip": "198.51.100.4", "src_port": 5000, "dest_ip": "10.0.0.2", "dest_port": 80, '
        '"proto": "TCP", "alert": {{"signature": "ET SCAN test", "severity": {}}}}}'
    )
    lines = [RawLine("suricata", "eve", tmpl.format(i, 1 if i < 3 else 3)) for i in range(10)]
    _, dead, tele = run(lines)
    assert dead == []
    pts = {p.series: p for p in tele if isinstance(p, SeriesPoint)}
    assert pts["suricata.ids_alerts"].value == 10
    assert pts["suricata.events"].value == 10


def test_the_rules_step_reports_its_time_per_batch() -> None:
    tmpl = "Mar 30 15:54:{:02d} h sshd[{}]: Failed password for root from 198.51.100.7 port 1 ssh2"
    _, _, tele = run([ssh(tmpl.format(i, i)) for i in range(6)])
    timings = [t.gauges["seconds"] for t in tele if isinstance(t, Tally) and t.step == "rules"]
    assert timings and all(0 <= s < 5 for s in timings)


def test_probes_between_reports_of_a_scan_count_in_the_next_one() -> None:
    # Probes of an ongoing scan that report nothing (no new target, no refresh due) take
    # a shorter path in the rules; their evidence must still reach the next report.
    def probe(ts: float, port: int) -> SecurityEvent:
        return SecurityEvent(
            ts=ts,
            dataset="zeek",
            action="connection",
            source_ip="198.51.100.9",
            destination_ip="10.0.0.5",
            destination_port=port,
            transport="tcp",
            conn_state="S0",
        )

    rules = SecurityRules(RulesCfg())
    evs = [probe(1000.0 + i, 1000 + i) for i in range(25)] + [probe(1100.0, 2000)]
    scans = [d for d in rules.process(evs) if d.kind == "port_scan"]
    assert [d.ts for d in scans] == [1019.0, 1100.0]  # the start, then one refresh
    ev = dict(scans[-1].evidence)
    assert dict(ev["hosts"]) == {"10.0.0.5": 26}  # 20 at the start, then every probe
    assert dict(ev["scans"]) == {"vertical": 26}
    assert scans[-1].peak == 26
