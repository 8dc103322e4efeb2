"""Tests of the security log parsers (``vigil.flows.security.parsers``).

Real data comes from ``../shared/datasets/security`` (read in place, never copied); those
tests are skipped when the folder is absent. Suricata, iptables and access logs have no real
data there, so their lines below follow the documented formats.
"""

from __future__ import annotations

import csv
import math
import pickle
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vigil.flows.security.parsers import (
    ALIASES,
    BAD_ACCESS_LINE,
    BAD_JSON,
    BAD_NUMBER,
    BAD_SYSLOG_HEADER,
    BAD_TIMESTAMP,
    BAD_ZEEK_ROW,
    FORMATS,
    LINE_TOO_LONG,
    NO_TIME_ZONE,
    PAYLOAD_MAX,
    UNKNOWN_FORMAT,
    LineParser,
    bad_field,
    missing_field,
)
from vigil.flows.security.parsers._common import make_event

from vigil.records import DeadLetter, RawLine, SecurityEvent

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "security"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")

ELASTIC = "ssh_auth_elastic/auth.log"
OPENSSH = "ssh_auth_loghub/OpenSSH_2k.log"
LINUX = "ssh_auth_loghub/Linux_2k.log"
ZEEK_JSON = "zeek_nmap_portscan/conn.log"
ZEEK_TSV = (
    "zeek_ctu_inbound_attacks/ctu-normal-40_day1/conn.log.labeled",
    "zeek_ctu_inbound_attacks/ctu-normal-42_day2/conn.log.labeled",
)
# The year of each syslog file (README): 2017 and 2005 are known; 2000 is the labels'
# placeholder for OpenSSH_2k, whose year is unknown.
SYSLOG_FILES = {
    ELASTIC: (2017, "ssh_auth_elastic/labels/line_labels.csv"),
    OPENSSH: (2000, "ssh_auth_loghub/labels/OpenSSH_2k_line_labels.csv"),
    LINUX: (2005, "ssh_auth_loghub/labels/Linux_2k_line_labels.csv"),
}
N_LINES = {ELASTIC: 7121, OPENSSH: 2000, LINUX: 2000}


def lines_of(rel: str) -> list[str]:
    return (DATA / rel).read_text(encoding="utf-8").splitlines()


def labels_of(rel: str) -> list[dict[str, str]]:
    with (DATA / rel).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def iso_epoch(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


def events_of(rel: str, fmt: str, year: int | None = None) -> list[SecurityEvent]:
    """The events of every line of a real file; fails on a dead letter, skips meta lines."""
    p = LineParser(year=year)
    out = []
    for line in lines_of(rel):
        r = p.parse(RawLine(fmt, rel, line))
        assert not isinstance(r, DeadLetter), r
        if r is not None:
            out.append(r)
    return out


def one(
    line: str,
    fmt: str = "ssh",
    *,
    year: int | None = 2024,
    ref_ts: float = 0.0,
    oversize: bool = False,
) -> SecurityEvent | DeadLetter | None:
    """Parse one line with a fresh parser (origin ``"test"``)."""
    return LineParser(year=year).parse(RawLine(fmt, "test", line, ref_ts, oversize))


def as_event(result: object) -> SecurityEvent:
    assert isinstance(result, SecurityEvent), result
    return result


def event(
    line: str, fmt: str = "ssh", *, year: int | None = 2024, ref_ts: float = 0.0
) -> SecurityEvent:
    return as_event(one(line, fmt, year=year, ref_ts=ref_ts))


def dead(
    line: str, fmt: str = "ssh", *, year: int | None = 2024, oversize: bool = False
) -> DeadLetter:
    dl = one(line, fmt, year=year, oversize=oversize)
    assert isinstance(dl, DeadLetter), dl
    return dl


def has(ev: SecurityEvent, **expected: object) -> None:
    got = {k: getattr(ev, k) for k in expected}
    assert got == expected


# -- real syslog files -------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("rel", list(SYSLOG_FILES))
def test_every_syslog_line_parses_with_the_labelled_time_and_program(rel: str) -> None:
    year, labels_rel = SYSLOG_FILES[rel]
    events = events_of(rel, "ssh", year)  # no dead letter
    labels = labels_of(labels_rel)
    assert len(events) == len(labels) == N_LINES[rel]  # and no line consumed as meta
    for ev, lab in zip(events, labels, strict=True):
        assert ev.ts == iso_epoch(lab["timestamp"]), lab
        assert ev.dataset == "ssh"
        program = lab["program"]
        if " " in program:  # "syslogd 1.4.1:", "-- root[2421]:": not a tag, so no process
            assert ev.process_name is None
        else:
            assert ev.process_name == re.sub(r"\(.*\)$", "", program), lab
        assert ev.host_name in {"ip-10-77-20-248", "LabSZ", "combo"}


@needs_data
def test_carriage_returns_do_not_change_results() -> None:
    # Linux_2k has CRLF line ends; a source that splits on "\n" only leaves the "\r".
    raw = (DATA / LINUX).read_bytes().decode("utf-8").split("\n")
    assert all(line.endswith("\r") for line in raw[:-1])
    p = LineParser(year=2005)
    with_cr = [p.parse(RawLine("ssh", "f", line)) for line in raw]
    assert with_cr == events_of(LINUX, "ssh", 2005)


# The label files' rule for a failure uses `(\S+)` for the user, so it skips a failed
# password for an empty user name ("invalid user  from") or one with a leading space.
_LABEL_USER = re.compile(r"\S+")


@needs_data
@pytest.mark.parametrize(
    ("rel", "fail_reason"), [(ELASTIC, "password"), (OPENSSH, "password"), (LINUX, "pam")]
)
def test_auth_failures_match_the_labels_line_by_line(rel: str, fail_reason: str) -> None:
    year, labels_rel = SYSLOG_FILES[rel]
    events = events_of(rel, "ssh", year)
    labels = labels_of(labels_rel)
    labelled = Counter(lab["event"] for lab in labels)
    ours = 0
    for ev, lab in zip(events, labels, strict=True):
        is_fail = ev.outcome == "failure" and ev.reason == fail_reason
        if lab["event"] == "auth_fail":
            assert is_fail, (lab, ev)
            assert ev.source_ip == lab["src"]
            ours += 1
        elif is_fail and fail_reason == "password":
            assert ev.user_name is not None and not _LABEL_USER.match(ev.user_name), (lab, ev)
        elif is_fail:  # pam: the label rule wants sshd and a non-empty rhost
            assert ev.process_name != "sshd" or ev.source_ip is None, (lab, ev)
    assert ours == labelled["auth_fail"] > 0


@needs_data
@pytest.mark.parametrize("rel", [ELASTIC, OPENSSH])
def test_successes_and_invalid_users_match_the_labels(rel: str) -> None:
    year, labels_rel = SYSLOG_FILES[rel]
    events = events_of(rel, "ssh", year)
    labels = labels_of(labels_rel)
    for ev, lab in zip(events, labels, strict=True):
        if lab["event"] == "auth_success":
            has(ev, action="authentication", outcome="success", source_ip=lab["src"])
            assert ev.reason in {"password", "publickey"}
            assert ev.user_name and ev.source_port
        elif lab["event"] == "invalid_user_no_password":
            has(ev, outcome="failure", reason="invalid_user", source_ip=lab["src"])
    counts = Counter((e.outcome, e.reason) for e in events)
    n_success = sum(lab["event"] == "auth_success" for lab in labels)
    assert counts["success", "password"] + counts["success", "publickey"] == n_success
    # Every "Invalid user" line is a failure, not only those the labels count.
    n_invalid = sum("Invalid user" in line for line in lines_of(rel))
    assert counts["failure", "invalid_user"] == n_invalid


@needs_data
def test_ftp_connections_match_the_labels() -> None:
    events = events_of(LINUX, "ssh", 2005)
    labels = labels_of(SYSLOG_FILES[LINUX][1])
    n = 0
    for ev, lab in zip(events, labels, strict=True):
        if lab["event"] == "ftp_conn":
            has(ev, action="connection", destination_port=21, transport="tcp")
            has(ev, source_ip=lab["src"], process_name="ftpd")
            n += 1
        else:
            assert ev.action != "connection"
    assert n == 909


@needs_data
def test_openssh_reverse_mapping_and_preauth_disconnects() -> None:
    lines = lines_of(OPENSSH)
    events = events_of(OPENSSH, "ssh", 2000)
    labels = labels_of(SYSLOG_FILES[OPENSSH][1])
    pairs = zip(events, labels, strict=True)
    reverse = [(ev, lab) for ev, lab in pairs if ev.reason == "reverse_mapping"]
    assert len(reverse) == sum("POSSIBLE BREAK-IN ATTEMPT" in line for line in lines) == 85
    assert all(ev.source_ip == lab["src"] for ev, lab in reverse)
    preauth = re.compile(
        r"(Connection closed by|Received disconnect from) .*\[preauth\]"
        r"|Did not receive identification string from"
    )
    n = sum(bool(preauth.search(line)) for line in lines)
    got = [ev for ev in events if ev.reason == "preauth_disconnect"]
    assert len(got) == n == 511
    assert all(ev.outcome == "unknown" and ev.source_ip for ev in got)


@needs_data
def test_message_repeated_lines_count_as_the_repeated_message() -> None:
    events = events_of(ELASTIC, "ssh", 2017)
    lines = lines_of(ELASTIC)
    repeated = [ev for ev, line in zip(events, lines, strict=True) if "message repeated" in line]
    assert len(repeated) == 85
    assert all(ev.reason == "password" for ev in repeated)


# -- real Zeek files ---------------------------------------------------------------------------


@needs_data
def test_every_zeek_json_row_parses_like_its_label() -> None:
    events = events_of(ZEEK_JSON, "zeek")
    labels = labels_of("zeek_nmap_portscan/labels/flow_labels.csv")
    assert len(events) == len(labels) == 4504
    for ev, lab in zip(events, labels, strict=True):
        has(ev, action="connection", dataset="zeek", ts=float(lab["ts"]))
        has(ev, source_ip=lab["orig_h"], destination_ip=lab["resp_h"], transport=lab["proto"])
        assert ev.destination_port == int(lab["resp_p"])
        assert ev.source_port is not None
    states = Counter(ev.conn_state for ev in events)
    assert states == {"S0": 2409, "REJ": 1273, "OTH": 652, "RSTO": 95, "SHR": 43, "RSTRH": 32}


def tsv_oracle(rel: str) -> list[dict[str, str]]:
    """Rows of a Zeek TSV file as dicts, read with csv and the file's own #fields line."""
    lines = lines_of(rel)
    names = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    return [dict(zip(names, row, strict=True)) for row in csv.reader(
        (line for line in lines if not line.startswith("#")), delimiter="\t",
        quoting=csv.QUOTE_NONE,
    )]  # fmt: skip


def opt_int(s: str) -> int | None:
    return None if s == "-" else int(s)


@needs_data
@pytest.mark.parametrize(("rel", "n_rows"), list(zip(ZEEK_TSV, (5663, 5347), strict=True)))
def test_every_zeek_tsv_row_parses_with_the_right_fields(rel: str, n_rows: int) -> None:
    p = LineParser()
    results = [p.parse(RawLine("zeek", rel, line)) for line in lines_of(rel)]
    assert results[:8] == [None] * 8  # the #separator ... #types header lines
    events = results[8:]
    rows = tsv_oracle(rel)
    assert len(events) == len(rows) == n_rows
    for ev, row in zip(events, rows, strict=True):
        assert isinstance(ev, SecurityEvent), ev
        has(ev, ts=float(row["ts"]), source_ip=row["id.orig_h"], destination_ip=row["id.resp_h"])
        has(ev, source_port=int(row["id.orig_p"]), destination_port=int(row["id.resp_p"]))
        has(ev, transport=row["proto"], conn_state=row["conn_state"])
        ob, rb = opt_int(row["orig_bytes"]), opt_int(row["resp_bytes"])
        assert ev.bytes == (None if ob is None and rb is None else (ob or 0) + (rb or 0))


@needs_data
@pytest.mark.parametrize("rel", ZEEK_TSV)
def test_zeek_inbound_flows_per_source_match_the_summary(rel: str) -> None:
    # Every flow to the victim is labelled Malicious; the summary counts them per source,
    # and counts distinct ports per protocol (tcp/30866 and udp/30866 are two).
    summary = labels_of(str(Path(rel).parent / "malicious_sources_summary.csv"))
    victim = summary[0]["victim"]
    flows: Counter[str | None] = Counter()
    ports: dict[str | None, set[tuple[str | None, int | None]]] = {}
    for ev in events_of(rel, "zeek"):
        if ev.destination_ip == victim:
            flows[ev.source_ip] += 1
            ports.setdefault(ev.source_ip, set()).add((ev.transport, ev.destination_port))
    assert len(flows) == len(summary)
    for row in summary:
        assert flows[row["src"]] == int(row["n_flows"]), row
        assert len(ports[row["src"]]) == int(row["n_distinct_dst_ports"]), row


@needs_data
def test_zeek_tsv_without_header_uses_the_standard_conn_columns() -> None:
    rel = ZEEK_TSV[0]
    rows = [line for line in lines_of(rel) if not line.startswith("#")]
    with_header = events_of(rel, "zeek")
    p = LineParser()
    bare = [p.parse(RawLine("zeek", "no-header", line)) for line in rows]
    assert bare == with_header  # two extra label columns are tolerated


@needs_data
@pytest.mark.parametrize(
    ("rel", "fmt", "year"),
    [(ELASTIC, "ssh", 2017), (LINUX, "ssh", 2005), (ZEEK_JSON, "zeek", None)]
    + [(rel, "zeek", None) for rel in ZEEK_TSV],
)
def test_event_time_agrees_with_parse(rel: str, fmt: str, year: int | None) -> None:
    timer, parser = LineParser(year=year), LineParser(year=year)
    for line in lines_of(rel):
        raw = RawLine(fmt, rel, line)
        t, r = timer.event_time(raw), parser.parse(raw)
        assert t == (r.ts if isinstance(r, SecurityEvent) else None)


# -- syslog headers ----------------------------------------------------------------------------

SSH_HDR = "Mar  1 10:00:00 gw sshd[4242]: "
MAR_1_2024 = 1709287200.0  # 2024-03-01T10:00:00Z


def test_file_header_fields() -> None:
    ev = event(SSH_HDR + "Server listening on 0.0.0.0 port 22.")
    has(ev, ts=MAR_1_2024, action="other", host_name="gw", process_name="sshd", process_pid=4242)


@pytest.mark.parametrize(
    ("line", "process", "pid"),
    [
        ("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown", "sshd", 19939),
        ("Jun 14 15:16:01 combo kernel: Linux version 2.6.5", "kernel", None),
        ("Jun 14 15:16:01 combo syslogd 1.4.1: restart.", None, None),
        ("Jun 14 15:16:01 combo  -- root[2421]: ROOT LOGIN ON tty2", None, None),
        ("Jun 4 15:16:01 combo CRON[1]: x", "CRON", 1),  # single-space day
    ],
)
def test_tags(line: str, process: str | None, pid: int | None) -> None:
    has(event(line), action="other", host_name="combo", process_name=process, process_pid=pid)


def test_rfc3164_with_priority() -> None:
    ev = event("<38>Mar  1 10:00:00 gw sshd[7]: Invalid user bob from 10.0.0.1 port 4444")
    has(ev, ts=MAR_1_2024, reason="invalid_user", user_name="bob", source_port=4444)
    has(ev, host_name="gw", process_name="sshd", process_pid=7)


def test_rfc5424() -> None:
    line = (
        "<38>1 2003-10-11T22:14:15.003Z mymachine.example.com sshd 8710 - - Accepted"
        " keyboard-interactive/pam for alice from 192.0.2.7 port 51000 ssh2"
    )
    ev = event(line)
    has(ev, ts=1065910455.003, outcome="success", reason="keyboard-interactive/pam")
    has(ev, user_name="alice", source_ip="192.0.2.7", source_port=51000)
    has(ev, host_name="mymachine.example.com", process_name="sshd", process_pid=8710)


def test_rfc5424_structured_data_offset_and_bom() -> None:
    line = (
        '<165>1 2003-10-11T22:14:15.5+02:00 gw sshd - ID47 [ex@32473 iut="3" src="a\\"b\\]"]'
        '[x@1 a="b"] \ufeffFailed password for root from 2001:db8::1 port 22 ssh2'
    )
    ev = event(line)
    has(ev, ts=1065903255.5, reason="password", source_ip="2001:db8::1", source_port=22)
    has(ev, host_name="gw", process_name="sshd", process_pid=None)


def test_rfc5424_nil_timestamp_uses_the_reference_time() -> None:
    line = "<38>1 - - sshd - - - Connection closed by 1.2.3.4 port 22 [preauth]"
    ev = event(line, ref_ts=1.7e9)
    has(ev, ts=1.7e9, reason="preauth_disconnect", host_name=None, process_pid=None)


def test_rfc5424_non_numeric_procid_is_no_pid() -> None:
    has(event("<38>1 2003-10-11T22:14:15Z h su abc - - x"), process_name="su", process_pid=None)


# -- syslog messages ---------------------------------------------------------------------------

AUTH = {"action": "authentication"}
MESSAGES = [
    (
        "Failed password for root from 112.95.230.3 port 45378 ssh2",
        {**AUTH, "outcome": "failure", "reason": "password", "user_name": "root",
         "source_ip": "112.95.230.3", "source_port": 45378},
    ),
    (
        "Failed password for invalid user pi from 181.25.206.27 port 50378 ssh2",
        {"outcome": "failure", "reason": "password", "user_name": "pi", "source_port": 50378},
    ),
    (
        "Failed password for invalid user  from 34.204.227.175 port 19074 ssh2",
        {"reason": "password", "user_name": "", "source_ip": "34.204.227.175"},
    ),
    (  # a user name holding " from " stays whole: the address is the last one
        "Failed password for invalid user a from b from 5.6.7.8 port 22 ssh2",
        {"reason": "password", "user_name": "a from b", "source_ip": "5.6.7.8"},
    ),
    (
        "Failed none for invalid user 0 from 5.188.10.180 port 45431 ssh2",
        {"outcome": "failure", "reason": "none", "user_name": "0"},
    ),
    (
        "Failed publickey for git from 2001:db8::7 port 2222 ssh2: RSA SHA256:abc",
        {"outcome": "unknown", "action": "other"},  # trailing key info only on Accepted
    ),
    (
        "Invalid user webmaster from 173.234.31.186",
        {**AUTH, "outcome": "failure", "reason": "invalid_user", "user_name": "webmaster",
         "source_ip": "173.234.31.186", "source_port": None},
    ),
    (
        "Invalid user admin from 10.1.1.1 port 5022",
        {"reason": "invalid_user", "source_ip": "10.1.1.1", "source_port": 5022},
    ),
    (
        "Accepted publickey for ubuntu from 85.245.107.41 port 54259 ssh2: RSA SHA256:Kl8kPG",
        {**AUTH, "outcome": "success", "reason": "publickey", "user_name": "ubuntu",
         "source_ip": "85.245.107.41", "source_port": 54259},
    ),
    (
        "Accepted password for elastic_user_0 from 24.151.103.17 port 55004 ssh2",
        {"outcome": "success", "reason": "password", "user_name": "elastic_user_0"},
    ),
    (
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser="
        " rhost=183.62.140.253  user=root",
        {**AUTH, "outcome": "failure", "reason": "pam", "source_ip": "183.62.140.253",
         "user_name": "root"},
    ),
    (
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser="
        " rhost=host.example",
        {"reason": "pam", "source_ip": "host.example", "user_name": None},
    ),
    (
        "Connection closed by 1.2.3.4 port 41230 [preauth]",
        {**AUTH, "outcome": "unknown", "reason": "preauth_disconnect", "source_ip": "1.2.3.4",
         "source_port": 41230},
    ),
    (
        "Connection closed by 5.6.7.8 [preauth]",
        {"reason": "preauth_disconnect", "source_ip": "5.6.7.8", "source_port": None},
    ),
    (
        "Connection closed by authenticating user root 2001:db8::5 port 5 [preauth]",
        {"reason": "preauth_disconnect", "source_ip": "2001:db8::5", "user_name": "root"},
    ),
    (
        "Connection reset by 9.9.9.9 port 1 [preauth]",
        {"reason": "preauth_disconnect", "source_ip": "9.9.9.9", "source_port": 1},
    ),
    (
        "Disconnected from invalid user admin 1.2.3.4 port 5 [preauth]",
        {"reason": "preauth_disconnect", "source_ip": "1.2.3.4", "user_name": "admin"},
    ),
    (
        "Received disconnect from 103.99.0.122: 11: Bye Bye [preauth]",
        {"reason": "preauth_disconnect", "source_ip": "103.99.0.122", "source_port": None},
    ),
    (
        "Received disconnect from 1.2.3.4 port 55:11:  [preauth]",
        {"reason": "preauth_disconnect", "source_ip": "1.2.3.4", "source_port": 55},
    ),
    (
        "error: Received disconnect from 5.6.7.8: 3: com.jcraft.jsch.JSchException: Auth fail"
        " [preauth]",
        {"reason": "preauth_disconnect", "source_ip": "5.6.7.8"},
    ),
    (
        "Did not receive identification string from 8.8.4.4",
        {"reason": "preauth_disconnect", "source_ip": "8.8.4.4"},
    ),
    (  # a normal logout, after authentication: no security meaning
        "Received disconnect from 1.2.3.4 port 55:11: disconnected by user",
        {"action": "other", "reason": None, "source_ip": None},
    ),
    (
        "reverse mapping checking getaddrinfo for ns.example.com [173.234.31.186] failed -"
        " POSSIBLE BREAK-IN ATTEMPT!",
        {**AUTH, "outcome": "unknown", "reason": "reverse_mapping",
         "source_ip": "173.234.31.186"},
    ),
    (
        "Address 1.2.3.4 maps to x.example, but this does not map back to the address -"
        " POSSIBLE BREAK-IN ATTEMPT!",
        {"reason": "reverse_mapping", "source_ip": "1.2.3.4"},
    ),
    (
        "message repeated 5 times: [ Failed password for root from 218.60.136.106 port 56338"
        " ssh2]",
        {"reason": "password", "source_ip": "218.60.136.106", "source_port": 56338},
    ),
    (
        "pam_unix(sshd:session): session opened for user ubuntu by (uid=0)",
        {"action": "other", "outcome": "unknown", "reason": None, "user_name": None},
    ),
    (
        "PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh rhost=1.2.3.4",
        {"action": "other"},  # a summary of failures already logged one by one
    ),
]  # fmt: skip


@pytest.mark.parametrize(("msg", "expected"), MESSAGES)
def test_sshd_messages(msg: str, expected: dict[str, object]) -> None:
    ev = event(SSH_HDR + msg)
    has(ev, **expected)
    has(ev, ts=MAR_1_2024, dataset="ssh", host_name="gw", process_name="sshd", process_pid=4242)


def test_old_pam_failure_with_hostname() -> None:
    line = (
        "Jun 15 02:04:59 combo sshd(pam_unix)[20882]: authentication failure; logname= uid=0"
        " euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root"
    )
    ev = event(line)
    has(ev, outcome="failure", reason="pam", user_name="root", process_name="sshd")
    assert ev.source_ip == "220-135-151-1.hinet-ip.hinet.net"


def test_local_pam_failure_has_no_source() -> None:
    line = (
        "Jul 27 14:42:00 combo gdm(pam_unix)[2803]: authentication failure; logname= uid=0"
        " euid=0 tty=:0 ruser= rhost= "
    )
    has(event(line), outcome="failure", reason="pam", source_ip=None, process_name="gdm")


def test_ftpd_connection() -> None:
    line = (
        "Jun 17 07:07:00 combo ftpd[29504]: connection from 24.54.76.216"
        " (24-54-76-216.bflony.adelphia.net) at Fri Jun 17 07:07:00 2005"
    )
    ev = event(line)
    has(ev, action="connection", source_ip="24.54.76.216", destination_port=21, transport="tcp")
    has(ev, process_name="ftpd", process_pid=29504)


def test_other_programs_are_other() -> None:
    line = "Mar 27 13:17:01 ip-10-77-20-248 CRON[1464]: pam_unix(cron:session): session closed"
    has(event(line), action="other", process_name="CRON", reason=None, source_ip=None)
    # "connection from" only means FTP for an ftp daemon
    has(event("Mar 27 13:17:01 h xinetd[1]: connection from 1.2.3.4"), action="other")


# -- syslog years ------------------------------------------------------------------------------


def ts_of(month_day: str, year: int, hms: str = "10:00:00") -> float:
    return iso_epoch(f"{year}-{month_day}T{hms}")


def test_fixed_year_rolls_over_per_origin() -> None:
    p = LineParser(year=2016)

    def at(origin: str, stamp: str) -> float:
        ev = p.parse(RawLine("ssh", origin, f"{stamp} h sshd[1]: x"))
        assert isinstance(ev, SecurityEvent)
        return ev.ts

    assert at("a", "Dec 31 23:59:59") == ts_of("12-31", 2016, "23:59:59")
    assert at("a", "Jan  1 00:00:01") == ts_of("01-01", 2017, "00:00:01")
    assert at("a", "Dec 31 23:59:58") == ts_of("12-31", 2016, "23:59:58")  # a straggler
    assert at("a", "Feb  1 00:00:00") == ts_of("02-01", 2017, "00:00:00")
    assert at("b", "Jan  1 00:00:00") == ts_of("01-01", 2016, "00:00:00")  # b has its own year
    assert at("a", "Mar  1 10:00:00") == ts_of("03-01", 2017)
    assert at("a", "Feb 28 10:00:00") == ts_of("02-28", 2017)  # small step back: same year
    assert at("a", "Aug  1 10:00:00") == ts_of("08-01", 2017)
    assert at("a", "Jan  2 10:00:00") == ts_of("01-02", 2018)  # back by more than six months


def test_year_from_the_reference_time() -> None:
    ref = iso_epoch("2017-01-05T00:00:00")
    has(event("Jan  4 10:00:00 h x: y", year=None, ref_ts=ref), ts=ts_of("01-04", 2017))
    # More than a day after the reference time: it is from last December.
    has(event("Dec 31 10:00:00 h x: y", year=None, ref_ts=ref), ts=ts_of("12-31", 2016))
    # Up to a day ahead is clock skew, not last year.
    has(event("Jan  5 23:00:00 h x: y", year=None, ref_ts=ref), ts=ts_of("01-05", 2017, "23:00:00"))


def test_year_from_now_when_no_reference_time() -> None:
    p = LineParser(now=lambda: iso_epoch("2017-01-05T00:00:00"))
    for stamp, expected in [("Jan  4", ts_of("01-04", 2017)), ("Dec 31", ts_of("12-31", 2016))]:
        for ref in (0.0, math.nan, math.inf, -5.0):
            ev = p.parse(RawLine("ssh", "o", f"{stamp} 10:00:00 h x: y", ref_ts=ref))
            assert isinstance(ev, SecurityEvent) and ev.ts == expected


def test_leap_day() -> None:
    has(event("Feb 29 12:00:00 h x: y", year=2024), ts=ts_of("02-29", 2024, "12:00:00"))
    assert dead("Feb 29 12:00:00 h x: y", year=2023).reason == BAD_SYSLOG_HEADER


def test_event_time_keeps_its_own_rollover_state() -> None:
    p = LineParser(year=2016)
    dec = RawLine("ssh", "o", "Dec 31 10:00:00 h x: y")
    jan = RawLine("ssh", "o", "Jan  1 10:00:00 h x: y")
    assert p.event_time(dec) == ts_of("12-31", 2016)
    assert p.event_time(jan) == ts_of("01-01", 2017)
    # parse has not seen the rollover yet, and starts again from 2016
    assert as_event(p.parse(dec)).ts == ts_of("12-31", 2016)
    assert as_event(p.parse(jan)).ts == ts_of("01-01", 2017)


# -- iptables / ufw ----------------------------------------------------------------------------

KERNEL = "Mar  1 10:00:00 fw kernel: "
UFW_BLOCK = (
    KERNEL + "[ 2785.541329] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:aa:bb:cc:52:54:00:dd:ee:ff:08:00"
    " SRC=203.0.113.5 DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=49 ID=5143 DF PROTO=TCP"
    " SPT=51234 DPT=22 WINDOW=29200 RES=0x00 SYN URGP=0"
)


@pytest.mark.parametrize("fmt", ["iptables", "ufw"])
def test_ufw_block(fmt: str) -> None:
    ev = event(UFW_BLOCK, fmt)
    has(ev, ts=MAR_1_2024, dataset="iptables", action="connection", conn_state="blocked")
    has(ev, source_ip="203.0.113.5", source_port=51234, destination_ip="10.0.0.2")
    has(ev, destination_port=22, transport="tcp", bytes=60, host_name="fw", process_name="kernel")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "[UFW ALLOW] IN=eth0 OUT= SRC=10.0.0.9 DST=10.0.0.2 LEN=76 PROTO=UDP SPT=123 DPT=123"
            " LEN=56",
            {"conn_state": "allowed", "transport": "udp", "bytes": 76, "destination_port": 123},
        ),
        (
            "[UFW AUDIT] IN= OUT=eth0 SRC=10.0.0.2 DST=1.1.1.1 LEN=84 PROTO=ICMP TYPE=8 CODE=0",
            {"conn_state": "allowed", "transport": "icmp", "source_port": None,
             "destination_port": None},
        ),
        (
            "IPTABLES-DROP: IN=eth0 OUT= SRC=198.51.100.7 DST=10.0.0.2 LEN=40 PROTO=TCP SPT=1"
            " DPT=23",
            {"conn_state": "blocked", "source_ip": "198.51.100.7", "destination_port": 23},
        ),
        (
            "REJECT-in IN=eth0 OUT= SRC=198.51.100.7 DST=10.0.0.2 LEN=40 PROTO=TCP SPT=1 DPT=25",
            {"conn_state": "blocked"},
        ),
        (
            "ACCEPT ssh: IN=eth0 OUT= SRC=198.51.100.7 DST=10.0.0.2 LEN=40 PROTO=TCP SPT=1 DPT=22",
            {"conn_state": "allowed"},
        ),
        (
            "IN=eth0 OUT= SRC=198.51.100.7 DST=10.0.0.2 LEN=40 PROTO=47",
            {"conn_state": None, "transport": "47", "source_ip": "198.51.100.7"},
        ),
    ],
)  # fmt: skip
def test_netfilter_lines(body: str, expected: dict[str, object]) -> None:
    has(event(KERNEL + body, "iptables"), action="connection", **expected)


def test_kernel_line_without_src_is_other() -> None:
    has(event(KERNEL + "e1000: eth0 NIC Link is Up 1000 Mbps", "ufw"), action="other")


def test_firewall_lines_in_a_general_syslog() -> None:
    has(event(UFW_BLOCK, "syslog"), dataset="ssh", action="connection", conn_state="blocked")


# -- suricata ----------------------------------------------------------------------------------

EVE_ALERT = (
    '{"timestamp":"2024-01-02T03:04:05.123456+0000","flow_id":1,"in_iface":"eth0",'
    '"event_type":"alert","src_ip":"203.0.113.5","src_port":51234,"dest_ip":"10.0.0.2",'
    '"dest_port":22,"proto":"TCP","host":"sensor1","alert":{"action":"allowed","gid":1,'
    '"signature_id":2001219,"rev":20,"signature":"ET SCAN Potential SSH Scan",'
    '"category":"Attempted Information Leak","severity":2}}'
)
EVE_FLOW = (
    '{"timestamp":"2024-01-02T03:04:05.5-0100","event_type":"flow","src_ip":"10.0.0.2",'
    '"src_port":40000,"dest_ip":"198.51.100.1","dest_port":443,"proto":"TCP","app_proto":"tls",'
    '"flow":{"pkts_toserver":10,"pkts_toclient":9,"bytes_toserver":1200,"bytes_toclient":5400,'
    '"start":"2024-01-02T03:03:00.000000-0100","end":"2024-01-02T03:04:05.000000-0100",'
    '"age":65,"state":"closed","reason":"timeout","alerted":false}}'
)
EVE_HTTP = (
    '{"timestamp":"2024-01-02T03:04:05+00:00","event_type":"http","src_ip":"198.51.100.9",'
    '"src_port":5555,"dest_ip":"10.0.0.2","dest_port":80,"proto":"TCP","http":{"hostname":'
    '"www.example.com","url":"/wp-login.php?redirect=1","http_user_agent":"curl/8","http_method":'
    '"POST","protocol":"HTTP/1.1","status":403,"length":512}}'
)
EVE_DNS = (
    '{"timestamp":"2024-01-02T03:04:05Z","event_type":"dns","src_ip":"10.0.0.2","src_port":5353,'
    '"dest_ip":"10.0.0.1","dest_port":53,"proto":"UDP","dns":{"type":"query","rrname":"x.com"}}'
)


def test_suricata_alert() -> None:
    ev = event(EVE_ALERT, "suricata")
    has(ev, ts=1704164645.123456, dataset="suricata", action="ids_alert", severity=2)
    has(ev, rule_name="ET SCAN Potential SSH Scan", source_ip="203.0.113.5", source_port=51234)
    has(ev, destination_ip="10.0.0.2", destination_port=22, transport="tcp", host_name="sensor1")


def test_suricata_flow() -> None:
    ev = event(EVE_FLOW, "suricata")
    has(ev, ts=1704168245.5, action="connection", bytes=6600, conn_state="closed")
    has(ev, destination_port=443, transport="tcp")


def test_suricata_http() -> None:
    ev = event(EVE_HTTP, "suricata")
    has(ev, ts=1704164645.0, action="http_request", http_status=403, http_method="POST")
    has(ev, url_path="/wp-login.php", source_ip="198.51.100.9", bytes=512)


def test_suricata_other_event_types() -> None:
    has(event(EVE_DNS, "suricata"), action="other", transport="udp", destination_port=53)


def test_suricata_alert_without_ports() -> None:
    line = (
        '{"timestamp":"2024-01-02T03:04:05Z","event_type":"alert","src_ip":"1.2.3.4",'
        '"dest_ip":"5.6.7.8","proto":"ICMP","alert":{"signature":"ping","severity":3}}'
    )
    has(event(line, "suricata"), transport="icmp", source_port=None, severity=3)


# -- access logs -------------------------------------------------------------------------------

COMBINED = (
    '203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?x=1 HTTP/1.0" 404 2326'
    ' "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
)


@pytest.mark.parametrize("fmt", ["access", "nginx", "apache"])
def test_combined_log_format(fmt: str) -> None:
    ev = event(COMBINED, fmt)
    has(ev, ts=971211336.0, dataset="access", action="http_request", source_ip="203.0.113.9")
    has(ev, user_name="frank", http_method="GET", url_path="/apache_pb.gif", http_status=404)
    has(ev, bytes=2326)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (  # common log format, no size
            '192.0.2.1 - - [01/Jan/2024:00:00:00 +0000] "POST /login HTTP/1.1" 401 -',
            {"ts": 1704067200.0, "user_name": None, "bytes": None, "http_status": 401,
             "http_method": "POST", "url_path": "/login"},
        ),
        (  # nginx logs a TLS handshake sent to port 80 as an escaped request line
            '192.0.2.1 - - [01/Jan/2024:00:00:00 +0100] "\\x16\\x03\\x01\\x00" 400 157 "-" "-"',
            {"ts": 1704063600.0, "http_status": 400, "http_method": None, "url_path": None},
        ),
        (  # an escaped quote inside the request, extra nginx fields after the user agent
            '2001:db8::1 - - [01/Jan/2024:00:00:00 +0000] "GET /a\\"b HTTP/1.1" 200 5 "-" "ua"'
            ' 0.004 "-"',
            {"source_ip": "2001:db8::1", "url_path": '/a\\"b', "http_status": 200},
        ),
        (  # nginx $time_iso8601
            '192.0.2.1 - - [2024-01-01T00:00:00+00:00] "GET / HTTP/1.1" 200 1',
            {"ts": 1704067200.0},
        ),
    ],
)  # fmt: skip
def test_access_variants(line: str, expected: dict[str, object]) -> None:
    has(event(line, "access"), **expected)


# -- dead letters ------------------------------------------------------------------------------

DEAD = [
    ("ssh", "not a syslog line", BAD_SYSLOG_HEADER),
    ("ssh", "Foo  1 10:00:00 h x: y", BAD_SYSLOG_HEADER),
    ("ssh", "Mar 32 10:00:00 h x: y", BAD_SYSLOG_HEADER),
    ("ssh", "Mar  1 24:00:00 h x: y", BAD_SYSLOG_HEADER),
    ("ssh", "Mar  1 10:00:61 h x: y", BAD_SYSLOG_HEADER),
    ("ssh", "<38>1 2003-10-11T22:14:15 h a - - - no zone", BAD_SYSLOG_HEADER),
    ("iptables", KERNEL + "IN=eth0 SRC=1.2.3.4 DST=5.6.7.8 LEN=x PROTO=TCP", BAD_NUMBER),
    ("iptables", KERNEL + "IN=eth0 SRC=1.2.3.4 DST=5.6.7.8 PROTO=TCP DPT=70000", BAD_NUMBER),
    ("zeek", '{"ts": 1.0, "id.orig_h": "1.2.3.4"', BAD_JSON),
    ("zeek", "[1, 2]", BAD_ZEEK_ROW),  # not JSON-looking: read as a TSV row
    ("zeek", '{"uid": "C1"}', missing_field("ts")),
    ("zeek", '{"ts": 1.0, "id.orig_h": "1.2.3.4", "id.orig_p": 1, "id.resp_h": "5.6.7.8"}',
     missing_field("id.resp_p")),
    ("zeek", '{"ts": 1.0, "id.orig_h": 5, "id.orig_p": 1, "id.resp_h": "x", "id.resp_p": 2}',
     bad_field("id.orig_h")),
    ("zeek", '{"ts": "1.0", "id.orig_h": "a", "id.orig_p": 1, "id.resp_h": "b", "id.resp_p": 2}',
     BAD_TIMESTAMP),
    ("zeek", '{"ts": true, "id.orig_h": "a", "id.orig_p": 1, "id.resp_h": "b", "id.resp_p": 2}',
     BAD_NUMBER),
    ("zeek", '{"ts": 1, "id.orig_h": "a", "id.orig_p": 1, "id.resp_h": "b", "id.resp_p": 1e3}',
     BAD_NUMBER),
    ("zeek", '{"ts": 1, "id.orig_h": "a", "id.orig_p": -1, "id.resp_h": "b", "id.resp_p": 1}',
     BAD_NUMBER),
    ("zeek", "1.0\tC1\t1.2.3.4\t1\t5.6.7.8\t22\ttcp", BAD_ZEEK_ROW),
    ("zeek", "\t".join(["x", "C1", "a", "1", "b", "2"] + ["-"] * 15), BAD_NUMBER),
    ("zeek", "\t".join(["nan", "C1", "a", "1", "b", "2"] + ["-"] * 15), BAD_NUMBER),
    ("zeek", "\t".join(["1.0", "C1", "a", "1", "b", "99999"] + ["-"] * 15), BAD_NUMBER),
    ("zeek", "\t".join(["-", "C1", "a", "1", "b", "2"] + ["-"] * 15), missing_field("ts")),
    ("zeek", "\t".join(["1", "C1", "(empty)", "1", "b", "2"] + ["-"] * 15),
     missing_field("id.orig_h")),
    ("suricata", "{nope", BAD_JSON),
    ("suricata", '"just a string"', BAD_JSON),
    ("suricata", '{"event_type": "alert"}', missing_field("timestamp")),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z"}', missing_field("event_type")),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z", "event_type": 7}', bad_field("event_type")),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05.1", "event_type": "flow"}', NO_TIME_ZONE),
    ("suricata", '{"timestamp": "yesterday", "event_type": "flow"}', BAD_TIMESTAMP),
    ("suricata", '{"timestamp": 1704164645, "event_type": "flow"}', BAD_TIMESTAMP),
    ("suricata", '{"timestamp": "2024-02-30T03:04:05Z", "event_type": "flow"}', BAD_TIMESTAMP),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05+2500", "event_type": "flow"}', BAD_TIMESTAMP),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z", "event_type": "alert"}',
     missing_field("alert")),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z", "event_type": "flow", "flow": []}',
     bad_field("flow")),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z", "event_type": "flow",'
     ' "flow": {"state": 4}}', bad_field("flow.state")),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z", "event_type": "alert",'
     ' "alert": {"severity": "high"}}', BAD_NUMBER),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z", "event_type": "dns", "src_port": "53"}',
     BAD_NUMBER),
    ("suricata", '{"timestamp": "2024-01-02T03:04:05Z", "event_type": "dns", "src_ip": 1}',
     bad_field("src_ip")),
    ("access", "GET /index.html", BAD_ACCESS_LINE),
    ("access", '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2000 1', BAD_ACCESS_LINE),
    ("access", '1.2.3.4 - - [10/Foo/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1', BAD_TIMESTAMP),
    ("access", '1.2.3.4 - - [31/Feb/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1', BAD_TIMESTAMP),
    ("access", '1.2.3.4 - - [10/Oct/2000:25:55:36 -0700] "GET / HTTP/1.1" 200 1', BAD_TIMESTAMP),
    ("access", '1.2.3.4 - - [2000-10-10T13:55:36] "GET / HTTP/1.1" 200 1', BAD_TIMESTAMP),
    ("cef", "CEF:0|x", UNKNOWN_FORMAT),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "line", "reason"), DEAD)
def test_dead_letter_reasons(fmt: str, line: str, reason: str) -> None:
    assert dead(line, fmt) == DeadLetter("parse", reason, line, fmt, "test")


def test_every_reason_is_covered() -> None:
    covered = {reason for _, _, reason in DEAD} | {LINE_TOO_LONG}
    assert {
        BAD_ACCESS_LINE, BAD_JSON, BAD_NUMBER, BAD_SYSLOG_HEADER, BAD_TIMESTAMP,
        BAD_ZEEK_ROW, NO_TIME_ZONE, UNKNOWN_FORMAT, LINE_TOO_LONG,
    } <= covered  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_oversize_lines_are_not_parsed(fmt: str) -> None:
    line = SSH_HDR + "Failed password for root from 1.2.3.4 port 1 ssh2" + "x" * 1000
    dl = dead(line, fmt, oversize=True)
    assert dl.reason == LINE_TOO_LONG
    assert dl.payload == line[:PAYLOAD_MAX] and len(dl.payload) == 512


def test_payload_is_a_prefix_of_at_most_512_characters() -> None:
    assert dead("z" * 5000).payload == "z" * PAYLOAD_MAX


def test_an_unexpected_exception_becomes_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    p = LineParser()

    def boom(raw: RawLine) -> None:
        raise KeyError(raw.text)

    monkeypatch.setitem(p._parse, "zeek", boom)
    assert p.parse(RawLine("zeek", "o", "x")) == DeadLetter("parse", "KeyError", "x", "zeek", "o")
    monkeypatch.setitem(p._time, "zeek", boom)
    assert p.event_time(RawLine("zeek", "o", "x")) is None


def test_wrongly_typed_input_never_raises() -> None:
    p = LineParser()
    for fmt in FORMATS:
        dl = p.parse(RawLine(fmt, "o", None))  # type: ignore[arg-type]
        assert isinstance(dl, DeadLetter) and dl.reason == "TypeError" and dl.payload == "None"
        assert p.event_time(RawLine(fmt, "o", None)) is None  # type: ignore[arg-type]
    assert isinstance(p.parse(RawLine(["ssh"], "o", "x")), DeadLetter)  # type: ignore[arg-type]
    assert isinstance(p.parse(object()), DeadLetter)  # type: ignore[arg-type]


# -- meta lines --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("line", ["", "   ", "\r", "\t"])
def test_blank_lines_are_consumed(fmt: str, line: str) -> None:
    assert one(line, fmt) is None


def test_zeek_headers_set_the_layout_per_origin() -> None:
    p = LineParser()
    for line in [
        "#separator \\x2c",
        "#unset_field,NA",
        "#empty_field,EMPTY",
        "#fields,id.resp_p,id.resp_h,id.orig_p,id.orig_h,ts,proto,orig_bytes",
        "#types,port,addr,port,addr,time,enum,count",
        "#path,conn",
        "# a comment",
    ]:
        assert p.parse(RawLine("zeek", "a", line)) is None
    ev = as_event(p.parse(RawLine("zeek", "a", "80,10.0.0.2,5555,10.0.0.1,1700000000.5,tcp,NA,x")))
    has(ev, ts=1700000000.5, source_ip="10.0.0.1", source_port=5555, destination_ip="10.0.0.2")
    has(ev, destination_port=80, transport="tcp", bytes=None, conn_state=None)
    dl = p.parse(RawLine("zeek", "a", "80,EMPTY,1,b,2.0,tcp,1"))
    assert isinstance(dl, DeadLetter) and dl.reason == missing_field("id.resp_h")
    # another origin still has the standard layout
    row = "\t".join(["1.0", "C1", "a", "1", "b", "2", "udp"] + ["-"] * 14)
    has(as_event(p.parse(RawLine("zeek", "b", row))), transport="udp", destination_port=2)


def test_zeek_json_variants() -> None:
    nested = (
        '{"ts":"2022-09-29T14:40:56.755299Z",'
        '"id":{"orig_h":"a","orig_p":1,"resp_h":"b","resp_p":2}}'
    )
    has(event(nested, "zeek"), ts=1664462456.755299, source_ip="a", destination_port=2)
    has(event('  {"ts":1,"id.orig_h":"a","id.orig_p":1,"id.resp_h":"b","id.resp_p":2,'
              '"orig_bytes":5}', "zeek"), bytes=5, transport=None)  # fmt: skip


def test_formats_and_datasets() -> None:
    assert set(FORMATS) == {
        "ssh", "syslog", "zeek", "suricata", "iptables", "ufw", "access", "nginx", "apache",
    }  # fmt: skip
    assert set(ALIASES.values()) == {"ssh", "zeek", "suricata", "iptables", "access"}


# -- robustness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "line"),
    [
        ("ssh", SSH_HDR + "Connection closed by user x " + "a:" * 32000 + " [preauth]x"),
        ("ssh", SSH_HDR + "Failed password for " + "x from y " * 7000 + "z"),
        ("ssh", SSH_HDR + "Invalid user " + "a from b " * 7000 + "c"),
        ("ssh", SSH_HDR + "message repeated 1 times: [ " * 2000 + "]" * 2000),
        ("ssh", '<1>1 2020-01-01T00:00:00Z h a p m [x a="' + '\\"' * 32000),
        ("ssh", KERNEL + "SRC= " * 13000),
        ("access", '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "' + '\\"' * 32000),
        ("zeek", "#fields\t" + "a\t" * 32000),
    ],
)
def test_crafted_long_lines_take_linear_time(fmt: str, line: str) -> None:
    p = LineParser(year=2020)
    t = time.perf_counter()
    p.parse(RawLine(fmt, "o", line))
    assert time.perf_counter() - t < 0.5  # quadratic backtracking would take seconds


def _event_kwargs() -> st.SearchStrategy[dict[str, object]]:
    text = st.text(max_size=8)
    opt_int = st.none() | st.integers()
    return st.fixed_dictionaries(
        {"ts": st.floats(allow_nan=False), "dataset": text, "action": text},
        optional={
            "outcome": text, "reason": st.none() | text, "severity": opt_int,
            "source_ip": st.none() | text, "source_port": opt_int, "bytes": opt_int,
            "user_name": st.none() | text, "http_status": opt_int, "process_pid": opt_int,
        },
    )  # fmt: skip


@given(_event_kwargs())
def test_fast_event_constructor_builds_the_same_record(kw: dict[str, object]) -> None:
    fast, slow = make_event(**kw), SecurityEvent(**kw)  # type: ignore[arg-type]
    assert type(fast) is SecurityEvent
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    with pytest.raises(AttributeError):  # still frozen
        fast.ts = 0.0  # type: ignore[misc]


def check_result(raw: RawLine, result: object) -> None:
    assert result is None or isinstance(result, SecurityEvent | DeadLetter), result
    if isinstance(result, SecurityEvent):
        assert type(result.ts) is float and math.isfinite(result.ts), result
        assert result.dataset == ALIASES[raw.fmt]
    if isinstance(result, DeadLetter):
        assert result.step == "parse" and result.fmt == raw.fmt and result.origin == raw.origin
        assert len(result.payload) <= PAYLOAD_MAX
        assert result.reason.isascii() and len(result.reason) < 40  # low cardinality


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip
REF_TS = st.sampled_from([0.0, 1.7e9, -1.0, math.nan, math.inf, 1e300]) | st.floats()


@FUZZ
@given(fmt=st.sampled_from(FORMATS), text=st.text(), ref_ts=REF_TS, year=st.none() | st.integers())
def test_arbitrary_text_never_raises(fmt: str, text: str, ref_ts: float, year: int | None) -> None:
    p = LineParser(year=year)
    raw = RawLine(fmt, "o", text, ref_ts)
    check_result(raw, p.parse(raw))
    t = p.event_time(raw)
    assert t is None or (type(t) is float and math.isfinite(t))


SEEDS = [
    SSH_HDR + msg for msg, _ in MESSAGES
] + [UFW_BLOCK, EVE_ALERT, EVE_FLOW, EVE_HTTP, EVE_DNS, COMBINED] + [
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto",
    "1655071231.749548\tCEL3aLvvNGvO6Ecoa\t193.201.9.232\t46563\t147.32.81.167\t3933\ttcp\t-"
    "\t0.000010\t0\t0\tS0\tF\tT\t0\tS\t2\t80\t0\t0\t(empty)\tMalicious\tExternal-Attack",
    '{"ts":1664462456.755299,"uid":"C5","id.orig_h":"172.16.1.11","id.orig_p":40042,'
    '"id.resp_h":"8.8.8.8","id.resp_p":53,"proto":"udp","orig_bytes":0,"resp_bytes":111}',
    "<38>1 2003-10-11T22:14:15.003Z h sshd 1 - [a@1 b=\"c\"] Invalid user x from 1.2.3.4",
]  # fmt: skip
SPECIAL = [
    *' \t\r\n"\\[]{}():=,.-+#<>0123456789Zz\x00\ufeff\u00e9\u2028',
    "[preauth]", " from ", " port ", "SRC=", "\\x09", "(empty)", "-", "null", "1e999", "NaN",
    "Dec 31", "Feb 29", '":', "\t-\t",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> str:
    line = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        n = len(line)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 12)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup", "cut", "splice"]))
        if op == "insert":
            line = line[:i] + draw(st.sampled_from(SPECIAL) | st.text(max_size=3)) + line[i:]
        elif op == "delete":
            line = line[:i] + line[j:]
        elif op == "replace":
            line = line[:i] + draw(st.sampled_from(SPECIAL)) + line[j:]
        elif op == "dup":
            line = line[:j] + line[i:j] * draw(st.integers(1, 50)) + line[j:]
        elif op == "cut":
            line = line[:i]
        else:
            other = draw(st.sampled_from(SEEDS))
            line = line[:i] + other[draw(st.integers(0, len(other))) :]
    return line


@FUZZ
@given(fmt=st.sampled_from(FORMATS), texts=st.lists(mutated(), min_size=1, max_size=4),
       ref_ts=REF_TS)  # fmt: skip
def test_mutated_lines_never_raise(fmt: str, texts: list[str], ref_ts: float) -> None:
    p = LineParser(year=2016)
    for text in texts:  # several lines per parser, so header and year state get exercised
        raw = RawLine(fmt, "o", text, ref_ts)
        check_result(raw, p.parse(raw))
        t = p.event_time(raw)
        assert t is None or math.isfinite(t)


@needs_data
@FUZZ
@given(data=st.data())
def test_mutated_real_lines_never_raise(data: st.DataObject) -> None:
    fmt, rel = data.draw(st.sampled_from(
        [("ssh", ELASTIC), ("ssh", OPENSSH), ("ssh", LINUX), ("zeek", ZEEK_JSON)]
        + [("zeek", rel) for rel in ZEEK_TSV]
    ))  # fmt: skip
    lines = _cached_lines(rel)
    line = data.draw(st.sampled_from(lines[:50] + lines[-50:]))
    i = data.draw(st.integers(0, len(line)))
    line = line[:i] + data.draw(st.sampled_from(SPECIAL) | st.text(max_size=4)) + line[i:]
    raw = RawLine(fmt, rel, line)
    check_result(raw, LineParser(year=2016).parse(raw))


_LINES: dict[str, list[str]] = {}


def _cached_lines(rel: str) -> list[str]:
    if rel not in _LINES:
        _LINES[rel] = lines_of(rel)
    return _LINES[rel]
