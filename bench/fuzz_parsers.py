"""Fuzz the security log parsers with random mutations of real and documented lines.

``LineParser.parse`` and ``LineParser.event_time`` must never raise, whatever the input. This
runs for a time budget, mutating real lines from ``../shared/datasets/security`` (read in
place) and documented Suricata, iptables and access log lines, and checks every result:

- ``parse`` returns ``SecurityEvent | DeadLetter | None``, never raises;
- a ``SecurityEvent`` has a finite float ``ts`` and the canonical ``dataset``;
- a ``DeadLetter`` has ``step="parse"``, a short ASCII reason and a payload of at most 512
  characters;
- ``event_time`` returns ``None`` or a finite float, never raises.

It prints the dead-letter reasons, the slowest input, and ends with one JSON line::

    {"inputs": N, "escaped_exceptions": 0, "invalid_results": 0, "parsed": .., "dead": ..,
     "meta": .., ...}

The exit status is 1 if an exception escaped or a result broke a rule, else 0.

Usage::

    python bench/fuzz_parsers.py [--seconds 60] [--seed 0] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vigil.flows.security.parsers import ALIASES, FORMATS, PAYLOAD_MAX, LineParser

from vigil.records import DeadLetter, RawLine, SecurityEvent

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "security"

REAL_FILES = {
    "ssh_auth_elastic/auth.log": "ssh",
    "ssh_auth_loghub/OpenSSH_2k.log": "ssh",
    "ssh_auth_loghub/Linux_2k.log": "syslog",
    "zeek_nmap_portscan/conn.log": "zeek",
    "zeek_ctu_inbound_attacks/ctu-normal-40_day1/conn.log.labeled": "zeek",
    "zeek_ctu_inbound_attacks/ctu-normal-42_day2/conn.log.labeled": "zeek",
}

# Formats with no real data here: lines written from each format's documentation.
DOCUMENTED = [
    (
        "suricata",
        '{"timestamp":"2024-01-02T03:04:05.123456+0000","flow_id":1,"event_type":"alert",'
        '"src_ip":"203.0.113.5","src_port":51234,"dest_ip":"10.0.0.2","dest_port":22,'
        '"proto":"TCP","alert":{"action":"allowed","signature_id":2001219,'
        '"signature":"ET SCAN Potential SSH Scan","category":"Attempted Information Leak",'
        '"severity":2}}',
    ),
    (
        "suricata",
        '{"timestamp":"2024-01-02T03:04:05.5-0100","event_type":"flow","src_ip":"10.0.0.2",'
        '"src_port":40000,"dest_ip":"198.51.100.1","dest_port":443,"proto":"TCP",'
        '"flow":{"bytes_toserver":1200,"bytes_toclient":5400,"state":"closed"}}',
    ),
    (
        "suricata",
        '{"timestamp":"2024-01-02T03:04:05+00:00","event_type":"http","src_ip":"198.51.100.9",'
        '"src_port":5555,"dest_ip":"10.0.0.2","dest_port":80,"proto":"TCP","http":{'
        '"url":"/wp-login.php?x=1","http_method":"POST","status":403,"length":512}}',
    ),
    (
        "ufw",
        "Mar  1 10:00:00 fw kernel: [ 2785.541329] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:aa:bb"
        ":cc SRC=203.0.113.5 DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=49 ID=5143 DF PROTO=TCP"
        " SPT=51234 DPT=22 WINDOW=29200 RES=0x00 SYN URGP=0",
    ),
    (
        "iptables",
        "<4>Mar  1 10:00:00 fw kernel: IPTABLES-DROP: IN=eth0 OUT= SRC=198.51.100.7"
        " DST=10.0.0.2 LEN=84 PROTO=ICMP TYPE=8 CODE=0 ID=1 SEQ=1",
    ),
    (
        "access",
        '203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?x=1 HTTP/1.0" 404'
        ' 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"',
    ),
    ("nginx", '192.0.2.1 - - [01/Jan/2024:00:00:00 +0100] "\\x16\\x03\\x01" 400 157 "-" "-"'),
    (
        "ssh",
        '<38>1 2003-10-11T22:14:15.003Z gw sshd 8710 - [ex@1 a="b\\"]"] Accepted'
        " keyboard-interactive/pam for alice from 192.0.2.7 port 51000 ssh2",
    ),
]

TOKENS = [
    *' \t\r\n"\\[]{}():=,.-+#<>/0123456789Zz\x00\x7f\ufeff\u00e9\u2028\U0001f600',
    "[preauth]", " from ", " port ", "SRC=", "DPT=", "LEN=", "PROTO=", "\\x09", "(empty)", "-",
    "null", "true", "1e999", "-0", "NaN", "Infinity", "99999999999999999999", "Dec 31", "Jan  1",
    "Feb 29", '":', '":{', "\t-\t", "\t(empty)\t", "#fields\t", "#separator ", "+2500", "Z",
    "invalid user ", "message repeated 3 times: [ ", "error: ", "<999>", "<1>1 ", "\\\"",
]  # fmt: skip


def mutate(rng: random.Random, line: str, corpus: list[tuple[str, str]]) -> str:
    """Apply one to six random edits: insert, delete, replace, duplicate, cut or splice."""
    for _ in range(rng.randint(1, 6)):
        n = len(line)
        i = rng.randint(0, n)
        j = min(n, i + rng.randint(0, 16))
        op = rng.randrange(7)
        if op == 0:
            line = line[:i] + rng.choice(TOKENS) + line[i:]
        elif op == 1:
            line = line[:i] + line[j:]
        elif op == 2:
            line = line[:i] + rng.choice(TOKENS) + line[j:]
        elif op == 3:
            line = line[:j] + line[i:j] * rng.randint(1, 200) + line[j:]
        elif op == 4:
            line = line[:i]
        elif op == 5:
            other = rng.choice(corpus)[1]
            line = line[:i] + other[rng.randint(0, len(other)) :]
        else:
            line = "".join(chr(rng.randrange(0x20, 0x250)) for _ in range(rng.randint(0, 40)))
    return line


def mutate_json(rng: random.Random, line: str) -> str | None:
    """Replace one value of a JSON line by a value of another type (or drop the key)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not obj:
        return None
    target = obj
    key = rng.choice(list(target))
    if isinstance(target[key], dict) and target[key] and rng.random() < 0.5:
        target = target[key]
        key = rng.choice(list(target))
    values: list[object] = [
        None, True, -1, 0, 2**63 - 1, 70000, 1.5, -1e308, "", "x", "-", [], {}, [1, "a"],
        {"a": {"b": None}}, "2024-01-02T03:04:05", "2024-13-45T99:99:99+0000",
    ]  # fmt: skip
    if rng.random() < 0.2:
        del target[key]
    else:
        target[key] = rng.choice(values)
    return orjson.dumps(obj).decode()


def check(raw: RawLine, result: object) -> str | None:
    """Why ``result`` breaks the parser's contract, or ``None`` if it does not."""
    if result is None:
        return None
    if isinstance(result, SecurityEvent):
        if type(result.ts) is not float or not math.isfinite(result.ts):
            return f"non-finite or non-float ts {result.ts!r}"
        if result.dataset != ALIASES[raw.fmt]:
            return f"dataset {result.dataset!r} for fmt {raw.fmt!r}"
        return None
    if isinstance(result, DeadLetter):
        if result.step != "parse" or len(result.payload) > PAYLOAD_MAX:
            return f"bad dead letter {result!r:.200}"
        if not result.reason.isascii() or len(result.reason) >= 40:
            return f"high-cardinality reason {result.reason!r:.100}"
        return None
    return f"unexpected result type {type(result).__name__}"


def load_corpus(data: Path) -> list[tuple[str, str]]:
    corpus = list(DOCUMENTED)
    for rel, fmt in REAL_FILES.items():
        path = data / rel
        if path.is_file():
            corpus += [(fmt, line) for line in path.read_text(encoding="utf-8").splitlines()]
        else:
            print(f"fuzz: {path} not found, skipping it", file=sys.stderr)
    return corpus


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="datasets/security folder")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    corpus = load_corpus(args.data)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    per_format: Counter[str] = Counter()  # inputs per format name, aliases included
    failures: list[str] = []
    slowest = (0.0, "", "")
    parser = LineParser(year=2016)
    deadline = time.monotonic() + args.seconds
    start = time.monotonic()
    while time.monotonic() < deadline:
        for _ in range(500):
            if counts["inputs"] % 5000 == 0:  # fresh state now and then: year mode, layouts
                parser = LineParser(year=rng.choice([None, 2016, 1, 9999]))
            # Documented lines are few next to the real ones: give them a fifth of the draws.
            fmt, line = rng.choice(DOCUMENTED if rng.random() < 0.2 else corpus)
            r = rng.random()
            if r < 0.15:
                line = mutate_json(rng, line) or mutate(rng, line, corpus)
            elif r < 0.95:
                line = mutate(rng, line, corpus)
            if rng.random() < 0.1:
                fmt = rng.choice(FORMATS)  # a line in the wrong format
            ref = rng.choice([0.0, 1.7e9, -1.0, math.nan, math.inf, rng.uniform(-1e12, 1e12)])
            origin = rng.choice(["a", "b", "c"])
            raw = RawLine(fmt, origin, line, ref, oversize=rng.random() < 0.01)
            counts["inputs"] += 1
            per_format[fmt] += 1
            t0 = time.perf_counter()
            try:
                result = parser.parse(raw)
                t = parser.event_time(raw)
            except Exception:  # the point of the exercise: this must never happen
                counts["escaped_exceptions"] += 1
                if len(failures) < 5:
                    failures.append(f"{raw!r:.300}\n{traceback.format_exc()}")
                continue
            dt = time.perf_counter() - t0
            if dt > slowest[0]:  # time it again: the first run may have met a GC pause
                for _ in range(3):
                    t0 = time.perf_counter()
                    parser.parse(raw)
                    dt = min(dt, time.perf_counter() - t0)
                if dt > slowest[0]:
                    slowest = (dt, fmt, line)
            problem = check(raw, result)
            if problem is None and not (t is None or (type(t) is float and math.isfinite(t))):
                problem = f"event_time returned {t!r}"
            if problem is not None:
                counts["invalid_results"] += 1
                if len(failures) < 5:
                    failures.append(f"{problem}\n  input: {raw!r:.300}")
            if isinstance(result, SecurityEvent):
                counts["parsed"] += 1
            elif isinstance(result, DeadLetter):
                counts["dead"] += 1
                reasons[result.reason] += 1
            else:
                counts["meta"] += 1
    elapsed = time.monotonic() - start

    print(f"corpus: {len(corpus)} lines; {counts['inputs']} inputs in {elapsed:.1f} s")
    print("dead-letter reasons:")
    for reason, n in reasons.most_common():
        print(f"  {n:9d}  {reason}")
    dt, fmt, line = slowest
    print(f"slowest input: {dt * 1e3:.2f} ms, fmt={fmt!r}, {len(line)} chars: {line[:120]!r}")
    uncovered = [f for f in FORMATS if not per_format[f]]
    if uncovered:  # every format name (aliases too) must have been fed some input
        failures.append(f"formats never fuzzed: {uncovered}")
    for f in failures:
        print("FAILURE:", f, file=sys.stderr)
    summary = {
        "inputs": counts["inputs"],
        "escaped_exceptions": counts["escaped_exceptions"],
        "invalid_results": counts["invalid_results"],
        "parsed": counts["parsed"],
        "dead": counts["dead"],
        "meta": counts["meta"],
        "seconds": round(elapsed, 1),
        "seed": args.seed,
        "inputs_per_format": dict(sorted(per_format.items())),
        "formats_uncovered": uncovered,
    }
    print(json.dumps(summary))
    return 1 if counts["escaped_exceptions"] or counts["invalid_results"] or uncovered else 0


if __name__ == "__main__":
    sys.exit(main())
