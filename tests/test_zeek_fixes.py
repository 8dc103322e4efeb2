"""Zeek and scan rules on real captures: the log type from ``#path``, flows recorded
backwards, and connections without a state (issue 14, "wrong on real logs")."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from vigil.flows.errors import ParseError
from vigil.flows.inputs import ReplayInput
from vigil.flows.main import replay_collect
from vigil.flows.security.config import SecurityConfig
from vigil.flows.security.parsers.zeek import ZeekParser

from tests.test_security_flow import run
from vigil.records import Detection, RawLine

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "security"
CTU = DATA / "zeek_ctu_inbound_attacks"
DAY1, DAY2 = CTU / "ctu-normal-40_day1", CTU / "ctu-normal-42_day2"


def replay(*paths: Path) -> tuple[list[Detection], list[str]]:
    """``vigil replay FILE... --format zeek``: the port_scan detections, dead-letter reasons."""
    cfg = SecurityConfig(inputs=(ReplayInput(paths=tuple(map(str, paths)), format="zeek"),))
    dets, dead, _ = replay_collect(cfg)
    return [d for d in dets if d.kind == "port_scan"], [x.reason for x in dead]


def header(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")][:8]


def rows(path: Path, pred: str) -> list[str]:
    return [x for x in path.read_text().splitlines() if pred in x and not x.startswith("#")]


def parse_all(lines: list[str], origin: str = "f") -> list[object]:
    """Each line's event, ``None`` (header) or the dead-letter reason."""
    p = ZeekParser()
    out: list[object] = []
    for text in lines:
        try:
            out.append(p.parse(RawLine("zeek", origin, text)))
        except ParseError as ex:
            out.append(ex.reason)
    return out


# --- the log type comes from #path ---------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "kind", "n"),
    [(DAY1 / "ssl.log.labeled", "ssl", 545), (DAY2 / "weird.log.labeled", "weird", 298)],
)
def test_other_zeek_logs_are_dead_lettered_by_type_not_read_as_connections(
    log: Path, kind: str, n: int
) -> None:
    # Read as conn.log, the victim's own HTTPS browsing in ssl.log was a horizontal scan
    # (150 detections on day 1), and weird.log another one on day 2.
    scans, reasons = replay(log)
    assert scans == []
    assert reasons == [f"unsupported zeek log: {kind}"] * n


def test_a_whole_day_folder_alerts_only_on_its_conn_log() -> None:
    logs = sorted(DAY1.glob("*.log.labeled"))
    alone, _ = replay(DAY1 / "conn.log.labeled")
    scans, reasons = replay(*logs)
    assert {d.entity for d in scans} == {d.entity for d in alone}
    assert len(scans) == len(alone)
    assert set(reasons) == {
        f"unsupported zeek log: {k}" for k in ("http", "notice", "sip", "ssl", "tunnel", "weird")
    }


def test_header_state_is_per_origin_and_follows_each_new_header() -> None:
    ssl_head, conn_head = header(DAY1 / "ssl.log.labeled"), header(DAY1 / "conn.log.labeled")
    ssl_row = rows(DAY1 / "ssl.log.labeled", "\t")[0]
    conn_row = rows(DAY1 / "conn.log.labeled", "193.201.9.232\t46563")[0]
    got = parse_all([*ssl_head, ssl_row, *conn_head, conn_row, *ssl_head, ssl_row])
    dead = [g for g in got if isinstance(g, str)]
    events = [g for g in got if g is not None and not isinstance(g, str)]
    assert dead == ["unsupported zeek log: ssl"] * 2
    assert [e.destination_port for e in events] == [3933]  # type: ignore[attr-defined]
    # Another origin keeps its own layout: an ssl header elsewhere does not touch it.
    p = ZeekParser()
    for text in ssl_head:
        p.parse(RawLine("zeek", "ssl.log", text))
    assert p.parse(RawLine("zeek", "conn.log", conn_row)) is not None


def test_a_conn_log_under_another_path_is_still_read_and_other_names_are_bounded() -> None:
    conn_head = header(DAY1 / "conn.log.labeled")
    conn_row = rows(DAY1 / "conn.log.labeled", "193.201.9.232\t46563")[0]
    renamed = [h.replace("#path\tconn", "#path\tconn_eth0") for h in conn_head]
    (ev,) = [g for g in parse_all([*renamed, conn_row]) if g is not None]
    assert not isinstance(ev, str) and ev.conn_state == "S0"  # type: ignore[attr-defined]
    ssl_head = header(DAY1 / "ssl.log.labeled")
    custom = [h.replace("#path\tssl", "#path\tmy_site_log_7") for h in ssl_head]
    ssl_row = rows(DAY1 / "ssl.log.labeled", "\t")[0]
    assert parse_all([*custom, ssl_row])[-1] == "unsupported zeek log: other"


def test_json_rows_with_another_path_are_dead_lettered() -> None:
    first = (DATA / "zeek_nmap_portscan" / "conn.log").read_text().splitlines()[0]
    d = orjson.loads(first)
    ssl = orjson.dumps({**d, "_path": "ssl"}).decode()
    conn = orjson.dumps({**d, "_path": "conn"}).decode()
    got = parse_all([ssl, conn, first])
    assert got[0] == "unsupported zeek log: ssl"
    assert got[1] == got[2] and not isinstance(got[1], str)


# --- flows recorded backwards ---------------------------------------------------------------


def test_a_real_backscatter_synack_is_marked_backward_and_a_real_low_port_probe_is_not() -> None:
    conn = DAY2 / "conn.log.labeled"
    head = header(conn)
    synack = rows(conn, "95.216.244.50\t444\t")  # history H: a SYN-ACK, no SYN, to port 1889
    probe = rows(conn, "45.61.186.167\t1\t")  # history S from port 1: a real probe
    *_, back, fwd = parse_all([*head, *synack, *probe])
    assert back.reason == "backward"  # type: ignore[union-attr]
    assert fwd.reason is None and fwd.conn_state == "S0"  # type: ignore[union-attr]


def dot_reply(i: int, history: str) -> RawLine:
    """A DNS-over-TLS reply of 1.1.1.2:853 to a client port, as Zeek writes it when it missed
    the client's SYN (the layout and values of the CTU conn.log rows)."""
    cols = [f"{1655071231.0 + i:.6f}", f"C{i}", "1.1.1.2", "853", "147.32.81.167",
            str(49700 + i), "tcp", "-", "0.000010", "0", "0", "RSTRH", "F", "T", "0",
            history, "1", "40", "1", "40", "(empty)"]  # fmt: skip
    return RawLine("zeek", "conn.log", "\t".join(cols))


def test_dns_over_tls_replies_recorded_backwards_are_not_a_port_scan() -> None:
    # 61 reply flows from port 853 to 61 ephemeral ports of the client: a false 61-port
    # scanner until now.
    dets, _, _ = run([dot_reply(i, "Hr") for i in range(61)])
    assert [d for d in dets if d.kind == "port_scan"] == []
    # The same flows opened by a SYN from 853 are probes (a scanner with source port 853).
    dets, _, _ = run([dot_reply(i, "S") for i in range(61)])
    assert {d.entity for d in dets if d.kind == "port_scan"} == {"1.1.1.2"}


# --- a missing state is unknown, not "no answer" -------------------------------------------


def test_connections_without_a_state_are_not_probes() -> None:
    def row(i: int, state: str) -> RawLine:
        real = rows(DAY1 / "conn.log.labeled", "193.201.9.232\t46563")[0].split("\t")
        real[0], real[5], real[11] = f"{1655071231.0 + i:.6f}", str(3000 + i), state
        return RawLine("zeek", "conn.log", "\t".join(real))

    dets, _, _ = run([row(i, "-") for i in range(40)])
    assert [d for d in dets if d.kind == "port_scan"] == []
    dets, _, _ = run([row(i, "S0") for i in range(40)])
    assert {d.entity for d in dets if d.kind == "port_scan"} == {"193.201.9.232"}


def netfilter(i: int, prefix: str) -> RawLine:
    text = (
        f"Jun 12 18:00:{i:02d} fw kernel: [ 1.0] {prefix}IN=eth0 OUT= SRC=198.51.100.9 "
        f"DST=10.0.0.5 LEN=40 TTL=240 PROTO=TCP SPT=50000 DPT={1000 + i} WINDOW=1024 SYN"
    )
    return RawLine("iptables", "kern.log", text)


def test_firewall_lines_count_as_probes_only_when_they_say_blocked() -> None:
    cfg = SecurityConfig(year=2022)
    neutral, _, _ = run([netfilter(i, "") for i in range(40)], cfg)
    assert [d for d in neutral if d.kind == "port_scan"] == []
    blocked, _, _ = run([netfilter(i, "[UFW BLOCK] ") for i in range(40)], cfg)
    assert {d.entity for d in blocked if d.kind == "port_scan"} == {"198.51.100.9"}


# --- what is still found on the real captures -----------------------------------------------


@pytest.mark.parametrize("day", [DAY1, DAY2], ids=["day1", "day2"])
def test_every_20_port_scanner_of_the_ctu_days_is_still_found(day: Path) -> None:
    with (day / "malicious_sources_summary.csv").open() as f:
        want = {r["src"] for r in csv.DictReader(f) if int(r["n_distinct_dst_ports"]) >= 20}
    scans, reasons = replay(day / "conn.log.labeled")
    assert {d.entity for d in scans} == want  # and nobody else
    assert reasons == []
