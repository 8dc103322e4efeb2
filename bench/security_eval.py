"""Detection quality of the security flow against the labels in ../shared/datasets/security.

Runs the real security flow (the same code path as ``vigil replay``, default rules) over
each labelled dataset and prints a table, then one JSON line of the figures.

    python bench/security_eval.py [--datasets DIR]

What counts as found:

- SSH brute force (ssh_auth_elastic, ssh_auth_loghub): an episode of the labels is found
  when an SSH detection (brute force, user enumeration, success after failures) names its
  source with a time inside [episode start, episode end + 5 min]. A *false alert* is an SSH
  detection that lies inside no episode of its source (same slack).
- Nmap (zeek_nmap_portscan): an episode is *detected* when a scan detection from the scanner
  falls inside [start, end + 60 s], and *covered* when one falls inside
  [start - 10 min, end + 60 s], i.e. the scanner was flagged by a detection still inside the
  10-minute rule window when the episode ran. ``nmap_recall`` is the covered share.
- CTU inbound attacks: every source with >= 20 distinct destination ports
  (malicious_sources_summary.csv) must get a port-scan detection whose episode met the
  vertical condition; and no source
  without a Malicious flow (only Benign or Background ones) may get any detection. In this
  data no source has Benign flows only: the victim's own traffic mixes Benign and Background.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vigil.flows.inputs import ReplayInput  # noqa: E402
from vigil.flows.main import replay_collect  # noqa: E402
from vigil.flows.security.config import SecurityConfig  # noqa: E402

from vigil.records import Detection  # noqa: E402

SSH_KINDS = {"ssh_brute_force", "ssh_user_enumeration", "ssh_success_after_failures"}
SCAN_KINDS = {"port_scan"}  # one episode per source: ping sweep, horizontal, vertical


def scans_of(d: Detection) -> dict[str, int]:
    """The scan conditions a port_scan detection's episode has met (``vertical`` ...)."""
    return dict(dict(d.evidence).get("scans", ()))


def run(paths: list[Path], fmt: str, year: int | None = None) -> list[Detection]:
    cfg = SecurityConfig(
        inputs=(ReplayInput(paths=tuple(str(p) for p in paths), format=fmt),), year=year
    )
    dets, _dead, _tele = replay_collect(cfg)
    return dets


def source_of(d: Detection) -> str:
    extra = dict(d.extra)
    return extra.get("source_ip", d.entity.split(">")[0])


def iso_ts(s: str) -> float:
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def ssh_eval(log: Path, episodes_csv: Path, year: int) -> dict[str, float]:
    dets = [d for d in run([log], "ssh", year) if d.kind in SSH_KINDS]
    with episodes_csv.open() as fh:
        eps = [
            (r["src"], iso_ts(r["start"]), iso_ts(r["end"]))
            for r in csv.DictReader(fh)
            if r["kind"].startswith("ssh")
        ]
    by_src: dict[str, list[Detection]] = defaultdict(list)
    for d in dets:
        by_src[source_of(d)].append(d)
    found = sum(any(s - 0 <= d.ts <= e + 300 for d in by_src.get(src, [])) for src, s, e in eps)
    false = sum(
        not any(src == source_of(d) and s <= d.ts <= e + 300 for src, s, e in eps) for d in dets
    )
    return {"episodes": len(eps), "found": found, "false_alerts": false, "alerts": len(dets)}


def nmap_eval(data: Path) -> dict[str, float]:
    dets = [d for d in run([data / "conn.log"], "zeek") if d.kind in SCAN_KINDS]
    with (data / "labels" / "scan_episodes.csv").open() as fh:
        eps = list(csv.DictReader(fh))
    detected = covered = 0
    for ep in eps:
        s, e, sc = float(ep["start_ts"]), float(ep["end_ts"]), ep["scanner"]
        mine = [d.ts for d in dets if source_of(d) == sc]
        detected += any(s <= t <= e + 60 for t in mine)
        covered += any(s - 600 <= t <= e + 60 for t in mine)
    first = min((d.ts for d in dets), default=float("nan"))
    return {
        "episodes": len(eps),
        "detected": detected,
        "covered": covered,
        "alerts": len(dets),
        "first_alert_ts": first,
    }


def ctu_eval(folder: Path) -> dict[str, float]:
    conn = folder / "conn.log.labeled"
    dets = run([conn], "zeek")
    alerted = {source_of(d) for d in dets}
    scanners = {source_of(d) for d in dets if d.kind == "port_scan" and "vertical" in scans_of(d)}
    with (folder / "malicious_sources_summary.csv").open() as fh:
        wide = [r["src"] for r in csv.DictReader(fh) if int(r["n_distinct_dst_ports"]) >= 20]
    labels: dict[str, set[str]] = defaultdict(set)
    fields: list[str] = []
    with conn.open() as fh:
        for line in fh:
            if line.startswith("#fields"):
                fields = line.rstrip("\n").split("\t")[1:]
                continue
            if line.startswith("#"):
                continue
            row = dict(zip(fields, line.rstrip("\n").split("\t"), strict=False))
            labels[row["id.orig_h"]].add(row["label"])
    # Sources with no Malicious flow: the victim itself (Benign and Background flows) and
    # any other host seen only in benign or background traffic.
    benign = {ip for ip, ls in labels.items() if "Malicious" not in ls}
    return {
        "scanners": len(wide),
        "scanners_found": sum(ip in scanners for ip in wide),
        "benign_sources": len(benign),
        "benign_alerted": len(benign & alerted),
        "alerts": len(dets),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    args = ap.parse_args()
    sec = Path(args.datasets) / "security"
    t0 = time.perf_counter()
    el = ssh_eval(
        sec / "ssh_auth_elastic" / "auth.log",
        sec / "ssh_auth_elastic" / "labels" / "attack_episodes.csv",
        2017,
    )
    lh = sec / "ssh_auth_loghub"
    lo = ssh_eval(lh / "OpenSSH_2k.log", lh / "labels" / "OpenSSH_2k_attack_episodes.csv", 2000)
    li = ssh_eval(lh / "Linux_2k.log", lh / "labels" / "Linux_2k_attack_episodes.csv", 2005)
    nm = nmap_eval(sec / "zeek_nmap_portscan")
    ctu = [ctu_eval(p) for p in sorted((sec / "zeek_ctu_inbound_attacks").glob("ctu-*"))]

    rows = [
        (
            "ssh_auth_elastic",
            "brute-force episodes",
            el["found"],
            el["episodes"],
            el["false_alerts"],
        ),
        (
            "ssh_auth_loghub OpenSSH",
            "brute-force episodes",
            lo["found"],
            lo["episodes"],
            lo["false_alerts"],
        ),
        (
            "ssh_auth_loghub Linux",
            "brute-force episodes",
            li["found"],
            li["episodes"],
            li["false_alerts"],
        ),
        ("zeek_nmap_portscan", "episodes detected in-episode", nm["detected"], nm["episodes"], 0),
        ("zeek_nmap_portscan", "episodes covered (<=10 min)", nm["covered"], nm["episodes"], 0),
    ]
    for i, c in enumerate(ctu, 1):
        rows.append(
            (
                f"ctu day {i}",
                ">=20-port scanners",
                c["scanners_found"],
                c["scanners"],
                c["benign_alerted"],
            )
        )
    print(f"{'dataset':26} {'what':30} {'found':>7} {'of':>5} {'recall':>7} {'false':>6}")
    for name, what, f, n, fa in rows:
        print(f"{name:26} {what:30} {f:>7} {n:>5} {f / max(n, 1):>7.1%} {fa:>6}")
    print("(false = SSH alerts outside every episode; for CTU, Benign-only sources alerted)")
    print(f"elapsed {time.perf_counter() - t0:.1f} s")
    lo_li_eps = lo["episodes"] + li["episodes"]
    out = {
        "ssh_recall_elastic": round(el["found"] / el["episodes"], 4),
        "ssh_recall_loghub": round((lo["found"] + li["found"]) / lo_li_eps, 4),
        "ssh_false_alerts": el["false_alerts"] + lo["false_alerts"] + li["false_alerts"],
        "nmap_recall": round(nm["covered"] / nm["episodes"], 4),
        "nmap_recall_in_episode": round(nm["detected"] / nm["episodes"], 4),
        "ctu_scanner_recall": round(
            sum(c["scanners_found"] for c in ctu) / max(1, sum(c["scanners"] for c in ctu)), 4
        ),
        "ctu_benign_sources_alerted": sum(c["benign_alerted"] for c in ctu),
        "ctu_benign_sources": sum(c["benign_sources"] for c in ctu),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
