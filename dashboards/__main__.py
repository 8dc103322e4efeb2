"""``python -m vigil.dashboards [--out DIR]``: write every dashboard's JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vigil.dashboards import DEFAULT_OUT, write_all


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards and print one path per line."""
    p = argparse.ArgumentParser(prog="python -m vigil.dashboards", description=__doc__)
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"folder (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
