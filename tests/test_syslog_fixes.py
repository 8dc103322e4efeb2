"""Issue 14, syslog side: sshd's MaxAuthTries lines count as failures, ``security.timezone``,
and firewall lines count as unanswered probes only when their action says so.

The sshd lines are copied from ``../shared/datasets/security/ssh_auth_elastic/auth.log``;
the tests that read the whole file are skipped when the folder is absent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from vigil.flows.inputs import ReplayInput
from vigil.flows.main import replay_collect
from vigil.flows.security.config import SecurityConfig
from vigil.flows.security.flow import explain
from vigil.flows.security.parsers import LineParser
from vigil.flows.security.rules import SecurityRules

from vigil.records import RawLine, SecurityEvent

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "security"
AUTH = DATA / "ssh_auth_elastic" / "auth.log"
needs_data = pytest.mark.skipif(not AUTH.is_file(), reason="shared datasets absent")

H = "ip-10-77-20-248"
# 190.178.62.6 on Mar 27 (auth.log lines 322-347): five connections that each hit sshd's
# MaxAuthTries with public keys, so no "Failed password" line at all; the labels' rule
# (Failed password / Invalid user only) has no episode for it, fail2ban bans it.
BURST_190 = [
    f"Mar 27 18:27:18 {H} sshd[14924]: error: maximum authentication attempts exceeded for"
    " root from 190.178.62.6 port 56562 ssh2 [preauth]",
    f"Mar 27 18:27:18 {H} sshd[14924]: Disconnecting: Too many authentication failures [preauth]",
    f"Mar 27 18:27:19 {H} sshd[14926]: error: maximum authentication attempts exceeded for"
    " root from 190.178.62.6 port 56567 ssh2 [preauth]",
    f"Mar 27 18:27:20 {H} sshd[14928]: Invalid user support from 190.178.62.6",
    f"Mar 27 18:27:21 {H} sshd[14928]: error: maximum authentication attempts exceeded for"
    " invalid user support from 190.178.62.6 port 56573 ssh2 [preauth]",
    f"Mar 27 18:27:25 {H} sshd[14930]: error: maximum authentication attempts exceeded for"
    " root from 190.178.62.6 port 56589 ssh2 [preauth]",
    f"Mar 27 18:27:49 {H} sshd[14932]: error: maximum authentication attempts exceeded for"
    " root from 190.178.62.6 port 56711 ssh2 [preauth]",
]
PAM_MORE = (
    f"Mar 29 14:15:52 {H} sshd[2414]: PAM 5 more authentication failures; logname= uid=0"
    " euid=0 tty=ssh ruser= rhost=181.25.206.27"
)


def parse(line: str, **kw: object) -> SecurityEvent:
    ev = LineParser(year=2017, **kw).parse(RawLine("ssh", "auth.log", line))  # type: ignore[arg-type]
    assert isinstance(ev, SecurityEvent), ev
    return ev


def utc(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


# -- sshd's per-connection limit ---------------------------------------------------------------


def test_max_attempts_line_is_a_failure_of_its_source_and_user() -> None:
    ev = parse(BURST_190[0])
    assert (ev.action, ev.outcome, ev.reason) == ("authentication", "failure", "max_attempts")
    assert (ev.source_ip, ev.source_port, ev.user_name) == ("190.178.62.6", 56562, "root")
    ev = parse(BURST_190[4])  # "for invalid user support"
    assert (ev.source_ip, ev.user_name, ev.process_pid) == ("190.178.62.6", "support", 14928)


def test_disconnecting_without_an_address_and_pam_summary_are_not_counted() -> None:
    # The address-less "Disconnecting" line follows a max_attempts line of the same
    # connection; "PAM 5 more" sums up five "Failed password" lines logged just before it.
    assert parse(BURST_190[1]).action == "other"
    assert parse(PAM_MORE).action == "other"


def test_disconnecting_with_an_address_is_a_preauth_disconnect() -> None:
    # OpenSSH 7.5+ names the peer, always right after "maximum authentication attempts
    # exceeded" for the same connection, which is the line that counts.
    ev = parse(
        f"Mar 27 18:27:18 {H} sshd[14924]: Disconnecting authenticating user root"
        " 190.178.62.6 port 56562: Too many authentication failures [preauth]"
    )
    assert (ev.outcome, ev.reason, ev.source_ip, ev.user_name) == (
        "unknown", "preauth_disconnect", "190.178.62.6", "root",
    )  # fmt: skip


def test_a_burst_of_max_attempts_lines_raises_a_brute_force_alert() -> None:
    from vigil.flows.security.config import SecurityRules as Cfg

    rules, p = SecurityRules(Cfg()), LineParser(year=2017)
    dets = []
    for line in BURST_190:
        ev = p.parse(RawLine("ssh", "auth.log", line))
        assert isinstance(ev, SecurityEvent)
        dets += rules.process([ev])
    bf = [d for d in dets if d.kind == "ssh_brute_force"]
    assert [d.entity for d in bf] == ["190.178.62.6"]
    assert bf[0].ts == utc("2017-03-27T18:27:49")  # the fifth connection cut off


@needs_data
def test_every_max_attempts_line_of_the_real_log_is_a_failure() -> None:
    p = LineParser(year=2017)
    evs = [p.parse(RawLine("ssh", "auth.log", x)) for x in AUTH.read_text().splitlines()]
    got = [e for e in evs if isinstance(e, SecurityEvent) and e.reason == "max_attempts"]
    assert len(got) == 189
    assert all(e.outcome == "failure" and e.source_ip and e.user_name for e in got)


# -- security.timezone -------------------------------------------------------------------------

STAGED = (
    f"Mar 30 15:54:19 {H} sshd[8273]: Failed password for invalid user pi from"
    " 24.151.103.17 port 50378 ssh2"
)


def test_timezone_shifts_syslog_times_to_utc() -> None:
    assert parse(STAGED).ts == utc("2017-03-30T15:54:19")
    assert parse(STAGED, timezone="Asia/Ho_Chi_Minh").ts == utc("2017-03-30T08:54:19")
    assert parse(STAGED, timezone="America/New_York").ts == utc("2017-03-30T19:54:19")  # EDT


def test_timezone_applies_to_firewall_lines_and_replay_times() -> None:
    line = (
        "Mar  1 10:00:00 fw kernel: [UFW BLOCK] IN=eth0 OUT= SRC=203.0.113.5 DST=10.0.0.2"
        " LEN=60 PROTO=TCP SPT=51234 DPT=22"
    )
    p = LineParser(year=2024, timezone="Asia/Ho_Chi_Minh")
    raw = RawLine("ufw", "ufw.log", line)
    ev = p.parse(raw)
    assert isinstance(ev, SecurityEvent) and ev.ts == utc("2024-03-01T03:00:00")
    assert p.event_time(raw) == ev.ts


def test_year_rollover_follows_the_local_calendar() -> None:
    # With a fixed year: local New Year in Ho Chi Minh City is 17:00 UTC on Dec 31.
    p = LineParser(year=2016, timezone="Asia/Ho_Chi_Minh")
    times = [
        p.parse(RawLine("ssh", "a", s.replace("Mar 30 15:54:19", stamp)))
        for s, stamp in ((STAGED, "Dec 31 23:30:00"), (STAGED, "Jan  1 00:30:00"))
    ]
    assert [t.ts for t in times if isinstance(t, SecurityEvent)] == [
        utc("2016-12-31T16:30:00"),
        utc("2016-12-31T17:30:00"),
    ]


def test_year_from_the_reference_time_is_the_local_year() -> None:
    # Received 20:00 UTC on Dec 31 2016, already 03:00 on Jan 1 2017 in Ho Chi Minh City.
    ref = utc("2016-12-31T20:00:00")
    p = LineParser(timezone="Asia/Ho_Chi_Minh")
    jan = p.parse(RawLine("ssh", "a", STAGED.replace("Mar 30 15:54:19", "Jan  1 02:59:00"), ref))
    dec = p.parse(RawLine("ssh", "a", STAGED.replace("Mar 30 15:54:19", "Dec 31 23:00:00"), ref))
    assert isinstance(jan, SecurityEvent) and jan.ts == utc("2016-12-31T19:59:00")
    assert isinstance(dec, SecurityEvent) and dec.ts == utc("2016-12-31T16:00:00")


def test_timezone_config_is_validated_and_explained() -> None:
    assert SecurityConfig().timezone == "UTC"
    with pytest.raises(ValidationError, match="unknown time zone 'Asia/Saigon City'"):
        SecurityConfig(timezone="Asia/Saigon City")
    lines = explain(SecurityConfig(timezone="Asia/Ho_Chi_Minh"))
    assert [x for x in lines if "Asia/Ho_Chi_Minh" in x] == [
        "syslog and firewall times read in Asia/Ho_Chi_Minh (they carry no zone)"
    ]


@needs_data
def test_replay_alerts_come_at_the_sites_utc_time() -> None:
    cfg = SecurityConfig(
        inputs=(ReplayInput(paths=(str(AUTH),), format="ssh"),),
        year=2017,
        timezone="Asia/Ho_Chi_Minh",
    )
    dets, dead, _ = replay_collect(cfg)
    assert dead == []
    bf = [d for d in dets if d.kind == "ssh_brute_force" and d.entity == "24.151.103.17"]
    # The staged burst ran 15:54:19-16:01:35 on the host's clock: 08:54-09:01 UTC.
    assert bf and utc("2017-03-30T08:54:19") <= bf[0].ts <= utc("2017-03-30T09:01:35")


# -- firewall lines ----------------------------------------------------------------------------

KERNEL = "Mar  1 10:00:00 fw kernel: [ 2785.541329] "
BODY = "IN=eth0 OUT= SRC=203.0.113.5 DST=10.0.0.2 LEN=60 PROTO=TCP SPT=51234 DPT={port}"


@pytest.mark.parametrize(
    ("prefix", "state"),
    [
        ("[UFW BLOCK] ", "blocked"),
        ("[UFW LIMIT BLOCK] ", "blocked"),
        ("IPTABLES-DROP: ", "blocked"),
        ("REJECT-in ", "blocked"),
        ("FW DENIED ", "blocked"),
        ("[UFW ALLOW] ", "allowed"),
        ("[UFW AUDIT] ", "allowed"),
        ("INPUT: ", None),  # a LOG rule that says nothing of the packet's fate
        ("", None),
    ],
)
def test_only_a_block_action_makes_a_firewall_line_unanswered(
    prefix: str, state: str | None
) -> None:
    ev = LineParser(year=2024).parse(
        RawLine("iptables", "fw", KERNEL + prefix + BODY.format(port=22))
    )
    assert isinstance(ev, SecurityEvent) and ev.conn_state == state


def test_neutral_firewall_lines_raise_no_scan() -> None:
    from vigil.flows.security.config import SecurityRules as Cfg

    def scans(prefix: str) -> list[str]:
        rules, p = SecurityRules(Cfg()), LineParser(year=2024)
        out = []
        for port in range(1, 41):
            line = KERNEL + prefix + BODY.format(port=port)
            ev = p.parse(RawLine("iptables", "fw", line))
            assert isinstance(ev, SecurityEvent)
            out += [d.kind for d in rules.process([ev])]
        return out

    assert "port_scan" in scans("[UFW BLOCK] ")  # 40 blocked ports of one host
    assert scans("INPUT: ") == []
