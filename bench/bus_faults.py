"""Long fault runs: the kill tests of tests/test_faults.py with more kills and more events.

    python bench/bus_faults.py [--kills 30] [--groups 3000] [--processes 1|2] [--seed 0]

Starts its own AOF-backed ``redis-server`` and webhook receiver (the test fixtures), then
kills ``vigil run`` with SIGKILL ``--kills`` times at random points while a producer writes
(with ``--processes 2``, one member of a local cluster each time), restarts it, and checks
that every event is accounted for (dead-lettered ids, alerts of sources that must fire,
none of sources that must not), that every alert reached the receiver, and how many alerts
it accepted twice. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import HttpReceiver  # noqa: E402
from test_faults import AofRedis, run_kill_loop  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--groups", type=int, default=3000, help="source addresses (~5.5 lines each)")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("needs redis-server on PATH")
    with tempfile.TemporaryDirectory(prefix="vigil-faults-") as d:
        tmp = Path(d)
        (tmp / "redis").mkdir()
        server = AofRedis(binary, tmp / "redis")
        server.start()
        rx = HttpReceiver()
        t0 = time.monotonic()
        try:
            s = run_kill_loop(
                tmp,
                server.url,
                rx,
                kills=args.kills,
                groups=args.groups,
                processes=args.processes,
                shards=2,
                seed=args.seed,
            )
        finally:
            rx.close()
            server.stop()
    s["seconds"] = round(time.monotonic() - t0, 1)
    s["processes"] = args.processes
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
